"""Typed settings of a Laravel service, one owner each (issue 16, section 2).

``Service.config`` is stored JSON. The health check and the stop grace period
are read only through :meth:`LaravelSettings.from_config`, which applies the
one default of each setting and names the path of a bad value
(``web.health.path: must start with /``). Readers: the driver's container
health check and ``stop_grace_period`` (compose), the deploy planner's
health check of new replicas and its stop timeout, and ``KEYSTONE_HEALTH_PATH``.

Where a setting lives in ``Service.config``:

* ``health.path`` (default ``/up``, SPEC 7); the older key ``health_path`` is
  read when ``health.path`` is absent; ``health.interval`` (s), ``health.timeout``
  (s), ``health.retries``: the deploy's checks of a new replica;
* ``stop_grace_seconds``: SIGTERM to SIGKILL; default ``job_timeout + 10`` for a
  worker (its current job finishes), 30 for web and websocket;
* ``job_timeout`` (default 60): ``queue:work --timeout``;
* ``migration_mode`` / ``migration_timing`` / ``migration_command`` (SPEC 18;
  defaults auto, pre_switch, ``php artisan migrate --force``): the deploy planner's
  migration and the manual "Run migrations";
* ``pre_switch_commands``: argv lists run before the switch (SPEC 17 step 6).

The service's "Deploy settings" page (its advanced section) writes them all through
:func:`apply_deploy_settings`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.drivers.base import DriverError

HEALTH_PATH_RE = re.compile(r"/[A-Za-z0-9._~%+,;=:@/-]{0,199}")
DEFAULT_HEALTH_PATH = "/up"
DEFAULT_JOB_TIMEOUT = 60
DEFAULT_WEB_GRACE_SECONDS = 30
WORKER_GRACE_MARGIN = 10  # a worker's grace: its job timeout plus this
DEFAULT_MIGRATION_COMMAND = "php artisan migrate --force"
MIGRATION_MODES = ("auto", "manual", "disabled")
MIGRATION_TIMINGS = ("pre_switch", "post_switch")
MAX_PRE_SWITCH = 20


class SettingsError(DriverError):
    """A bad setting; the message starts with its path (``web.health.path: ...``)."""


def _number(where: str, value: Any, lo: float, hi: float, *, whole: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: must be a number") from None
    if whole and number != int(number):
        raise SettingsError(f"{where}: must be a whole number")
    if not lo <= number <= hi:
        raise SettingsError(f"{where}: must be between {lo:g} and {hi:g}")
    return int(number) if whole else number


@dataclass(frozen=True)
class HealthSettings:
    path: str = DEFAULT_HEALTH_PATH
    interval: float = 1.0
    timeout: float = 3.0
    retries: int = 30

    @classmethod
    def from_config(cls, config: Mapping, where: str) -> "HealthSettings":
        raw = config.get("health") or {}
        if not isinstance(raw, Mapping):
            raise SettingsError(f"{where}.health: must be a mapping")
        path = raw.get("path") or config.get("health_path") or DEFAULT_HEALTH_PATH
        if not isinstance(path, str) or not path.startswith("/"):
            raise SettingsError(f"{where}.health.path: must start with /")
        if not HEALTH_PATH_RE.fullmatch(path):
            raise SettingsError(f"{where}.health.path: letters, digits and . _ ~ % + , ; = : @ "
                                "/ - only, at most 200 characters")
        values: dict[str, Any] = {"path": path}
        for key, lo, hi in (("interval", 0.2, 60), ("timeout", 0.5, 60), ("retries", 1, 600)):
            if raw.get(key) is not None:
                values[key] = _number(f"{where}.health.{key}", raw[key], lo, hi,
                                      whole=key == "retries")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "interval": self.interval, "timeout": self.timeout,
                "retries": self.retries}


@dataclass(frozen=True)
class StopSettings:
    grace_seconds: int | None = None  # None: the role's default
    job_timeout: int = DEFAULT_JOB_TIMEOUT

    @classmethod
    def from_config(cls, config: Mapping, where: str) -> "StopSettings":
        grace = config.get("stop_grace_seconds")
        job_timeout = config.get("job_timeout", DEFAULT_JOB_TIMEOUT)
        return cls(
            grace_seconds=None if grace is None else
            _number(f"{where}.stop_grace_seconds", grace, 0, 86400, whole=True),
            job_timeout=_number(f"{where}.job_timeout", job_timeout, 1, 86400, whole=True))

    def grace(self, role: str) -> int:
        """Seconds between SIGTERM and SIGKILL for a container of ``role``."""
        if self.grace_seconds is not None:
            return self.grace_seconds
        if role == "worker":
            return self.job_timeout + WORKER_GRACE_MARGIN
        return DEFAULT_WEB_GRACE_SECONDS


def _argv(where: str, value: Any) -> tuple[str, ...]:
    """A command as argv: a list is validated as it is, a string (the older form) is split
    once with shlex; never a shell line either way."""
    from app.oneoff.argv import CommandError, parse_argv, validate_argv
    try:
        return tuple(parse_argv(value) if isinstance(value, str) else validate_argv(value))
    except CommandError as exc:
        raise SettingsError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class MigrationSettings:
    """SPEC 18: ``migration_mode`` auto|manual|disabled, ``migration_timing``
    pre_switch|post_switch, ``migration_command`` (one line, split into argv)."""
    mode: str = "auto"
    timing: str = "pre_switch"
    command: str = DEFAULT_MIGRATION_COMMAND

    @classmethod
    def from_config(cls, config: Mapping, where: str) -> "MigrationSettings":
        mode = config.get("migration_mode") or "auto"
        timing = config.get("migration_timing") or "pre_switch"
        command = config.get("migration_command") or DEFAULT_MIGRATION_COMMAND
        if mode not in MIGRATION_MODES:
            raise SettingsError(f"{where}.migration_mode: must be one of "
                                f"{', '.join(MIGRATION_MODES)}")
        if timing not in MIGRATION_TIMINGS:
            raise SettingsError(f"{where}.migration_timing: must be one of "
                                f"{', '.join(MIGRATION_TIMINGS)}")
        if not isinstance(command, str) or "\n" in command or len(command.strip()) > 500:
            raise SettingsError(f"{where}.migration_command: one line, at most 500 characters")
        command = command.strip()
        _argv(f"{where}.migration_command", command)
        return cls(mode=mode, timing=timing, command=command)

    @property
    def argv(self) -> tuple[str, ...]:
        return _argv("migration_command", self.command)


def pre_switch_commands(config: Mapping, where: str) -> tuple[tuple[str, ...], ...]:
    """``pre_switch_commands``: argv lists run in a one-off container of the new build
    before the switch (SPEC 17 step 6), in order."""
    raw = config.get("pre_switch_commands") or []
    if not isinstance(raw, (list, tuple)):
        raise SettingsError(f"{where}.pre_switch_commands: must be a list of commands")
    if len(raw) > MAX_PRE_SWITCH:
        raise SettingsError(f"{where}.pre_switch_commands: at most {MAX_PRE_SWITCH} commands")
    return tuple(_argv(f"{where}.pre_switch_commands[{i}]", item) for i, item in enumerate(raw))


@dataclass(frozen=True)
class LaravelSettings:
    health: HealthSettings = field(default_factory=HealthSettings)
    stop: StopSettings = field(default_factory=StopSettings)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    pre_switch: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def from_config(cls, config: Mapping | None, where: str = "service") -> "LaravelSettings":
        config = config or {}
        return cls(health=HealthSettings.from_config(config, where),
                   stop=StopSettings.from_config(config, where),
                   migration=MigrationSettings.from_config(config, where),
                   pre_switch=pre_switch_commands(config, where))


__all__ = ["HealthSettings", "LaravelSettings", "MigrationSettings", "SettingsError",
           "StopSettings", "apply_deploy_settings", "pre_switch_commands"]


def apply_deploy_settings(config: Mapping | None, where: str = "web", *,
                          migration_mode: str, migration_timing: str, migration_command: str,
                          pre_switch: list[list[str]], health_path: str,
                          health_interval: float | None, health_timeout: float | None,
                          health_retries: int | None, stop_grace_seconds: int | None) -> dict:
    """``config`` with the deploy settings of the service's advanced section written to their
    one place each, validated as a whole (raises :class:`SettingsError` naming the path).

    An empty optional value removes the key, so the setting's default applies again."""
    current = dict(config or {})
    current.pop("health_path", None)  # the older key: health.path owns it now
    health = {k: v for k, v in dict(current.get("health") or {}).items()
              if k not in ("path", "interval", "timeout", "retries")}
    health["path"] = health_path
    for key, value in (("interval", health_interval), ("timeout", health_timeout),
                       ("retries", health_retries)):
        if value is not None:
            health[key] = value
    current["health"] = health
    current["migration_mode"] = migration_mode
    current["migration_timing"] = migration_timing
    current["migration_command"] = (migration_command or "").strip() or DEFAULT_MIGRATION_COMMAND
    if pre_switch:
        current["pre_switch_commands"] = [list(argv) for argv in pre_switch]
    else:
        current.pop("pre_switch_commands", None)
    if stop_grace_seconds is None:
        current.pop("stop_grace_seconds", None)
    else:
        current["stop_grace_seconds"] = stop_grace_seconds
    LaravelSettings.from_config(current, where)  # raises with the setting's path
    return current


def set_health_path(config: Mapping | None, path: str, where: str = "web") -> dict:
    """``config`` with ``health.path`` set to ``path`` (validated; the legacy key dropped).

    The one writer of the health path: the build settings page calls it for the
    environment's web service. Raises :class:`SettingsError` naming the path.
    """
    current = dict(config or {})
    health = dict(current.get("health") or {})
    health["path"] = path
    HealthSettings.from_config({"health": health}, where)  # raises with the setting's path
    current["health"] = health
    current.pop("health_path", None)
    return current
