"""Valkey 8: one container; slices are ACL users confined to a key prefix.

Why an ACL user with a key prefix, not a logical database
---------------------------------------------------------
* A logical database (``SELECT n``) is a namespace, not a boundary: anyone
  with the password can select any of them, so two environments sharing a
  Valkey could read each other's sessions. An ACL user with ``~<prefix>*``
  is refused every key outside its prefix by the server.
* There are only 16 databases by default, and Valkey/Redis Cluster supports
  only database 0; prefixes have neither limit.
* Laravel already prefixes every key of a connection (``REDIS_PREFIX``,
  applied by phpredis/predis to all keys, so cache, session and queue keys
  stay inside it), and supports ``REDIS_USERNAME`` for ACL users.

Laravel's prefixes, checked against the ACL pattern
---------------------------------------------------
* ``REDIS_PREFIX`` (config/database.php ``redis.options.prefix``; default
  ``<app_name>_database_``) is set by phpredis as ``OPT_PREFIX`` (predis: its
  key-prefix processor) on every connection, including the ``cache``
  connection. Keystone exports it as the slice's prefix, so every key
  command, and the KEYS of the Lua scripts the queue and cache locks run
  (EVAL/EVALSHA keys are prefixed too), lands under ``~<prefix>*``.
* The cache prefix (config/cache.php ``CACHE_PREFIX``, default
  ``<app_name>_cache_``) is added *after* the connection prefix: keys read
  ``<prefix><app>_cache_<key>``, still inside. SELECT of ``REDIS_CACHE_DB``
  is allowed (the pattern applies in every database).
* Horizon replaces the connection prefix with ``HORIZON_PREFIX`` (default
  ``<app_name>_horizon:``): outside the pattern, NOPERM. Keystone exports
  ``HORIZON_PREFIX=<prefix>horizon:``.
* Reverb's scaling uses its own Redis client, unprefixed, and pub/sub channel
  ``REVERB_SCALING_CHANNEL`` (default ``reverb``): outside ``&<prefix>*``.
  Keystone exports ``REVERB_SCALING_CHANNEL=<prefix>reverb``.
* A client that ignores ``REDIS_PREFIX`` (raw ``new Redis()``) is refused:
  that is the confinement working, not a setting to loosen.

Costs, stated so nobody is surprised: ``-@dangerous`` refuses FLUSHDB,
FLUSHALL and KEYS (they would reach other tenants' keys), so
``php artisan cache:clear`` on the redis store fails with NOPERM; SCAN is
refused too (it lists every tenant's key names). Pub/sub channels are
confined to the same prefix.

The ACL file is a Keystone-rendered artifact (the database is canonical):
it holds ``#<sha256>`` hashes only, lives in a bind-mounted *directory* (so
an atomic rename on the host is seen inside the container) and is applied
with ``ACL LOAD`` -- a slice action never restarts the container, and a
container restart keeps every user.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.drivers.base import (Driver, DriverError, EnvField, ExportField, HealthCheck, PortSpec,
                              RenderContext, UpdateBehaviour, VolumeSpec, service_dir)
from app.drivers.compose import base_service
from app.drivers.plan import Mkdir, PutFile, Run, StepPlan
from app.drivers.registry import register
from app.drivers.secrets import generate_password, valkey_password_hash
from app.models.enums import AttachmentRole, DeployPolicy, ServiceCategory, SliceStatus, SliceType
from app.shell import Command, cmd, pipe

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service, ServiceSlice

PORT = 6379
ACL_DIR_IN_CONTAINER = "/etc/keystone-valkey"
ACL_FILE = "users.acl"
# Everything except administration and commands that reach other tenants' keys.
SLICE_COMMANDS = "+@all -@admin -@dangerous -scan"


def acl_dir(service_id: int) -> str:
    return f"{service_dir(service_id)}/acl"


@register
class ValkeyDriver(Driver):
    type = "valkey"
    category = ServiceCategory.CACHE
    version_track = "8"
    default_image = "valkey/valkey:8"
    deploy_policy = DeployPolicy.DEPENDENCY_ONLY
    ports = (PortSpec("valkey", PORT, cross_server=True),)
    volumes = (VolumeSpec("valkey_data", "/data"),)
    env_schema = (
        EnvField("REDISCLI_AUTH", "default user's password, for valkey-cli in the container",
                 secret=True, required=True),
        EnvField("VALKEYCLI_AUTH", "same, under valkey-cli's own name", secret=True),
    )
    slice_types = (SliceType.VALKEY_NAMESPACE,)
    label = "Valkey 8 (cache, sessions, queues)"
    short_label = "Valkey 8"
    user_slice_type = SliceType.VALKEY_NAMESPACE
    attach_roles = (AttachmentRole.CACHE, AttachmentRole.QUEUE)
    exports = (ExportField("REDIS_CLIENT"), ExportField("REDIS_HOST"), ExportField("REDIS_PORT"),
               ExportField("REDIS_USERNAME", overridable=False),
               ExportField("REDIS_PASSWORD", secret=True, overridable=False),
               ExportField("REDIS_PREFIX", overridable=False),
               ExportField("HORIZON_PREFIX", overridable=False),
               ExportField("REVERB_SCALING_CHANNEL", overridable=False))
    # Laravel settings that change behaviour: only recommended, applied when confirmed.
    # CACHE_STORE is Laravel 11's name, CACHE_DRIVER Laravel 8-10's (config/cache.php):
    # a real Laravel 8 app ignores CACHE_STORE and keeps the file cache.
    recommended = {AttachmentRole.CACHE: (("CACHE_STORE", "redis"), ("CACHE_DRIVER", "redis"),
                                          ("SESSION_DRIVER", "redis")),
                   AttachmentRole.QUEUE: (("QUEUE_CONNECTION", "redis"),)}
    health_check = HealthCheck(("valkey-cli -h 127.0.0.1 ping | grep -q PONG",), shell_form=True,
                               interval="5s", timeout="3s", retries=12, start_period="10s")
    stop_grace_period = "30s"
    update_behaviour = UpdateBehaviour(
        stateful=True, downtime=True,
        warning=("Updating Valkey stops the container and starts the new image on the same "
                 "named volume: cache, session and queue connections fail until it is healthy. "
                 "With persistence off, every key is lost."))

    def persistent(self, service: "Service") -> bool:
        return bool((service.config or {}).get("persistence", True))

    def volumes_for(self, service: "Service"):
        return self.volumes if self.persistent(service) else ()

    password_secret = "default_password"   # generated once by Driver.ensure_secrets

    def service_environment(self, service: "Service") -> dict[str, str]:
        password = self.service_password(service)
        return {"REDISCLI_AUTH": password, "VALKEYCLI_AUTH": password}

    # -- ACL file ---------------------------------------------------------

    @staticmethod
    def slice_user(slice_: "ServiceSlice") -> tuple[str, str]:
        cfg = slice_.config or {}
        username = cfg.get("username")
        prefix = cfg.get("prefix")
        if not username or not prefix:
            raise DriverError(f"slice {slice_.id}: username and prefix are required")
        _check_acl_token("username", username)
        _check_acl_token("prefix", prefix)
        return username, prefix

    def render_acl(self, service: "Service", slices: list["ServiceSlice"]) -> str:
        """The whole ACL file: the default (admin) user plus one line per live slice."""
        password = (service.secrets or {}).get("default_password")
        if not password:
            raise DriverError(f"service {service.id}: no default password (ensure_secrets)")
        lines = [f"user default on {valkey_password_hash(password)} ~* &* +@all"]
        for s in sorted(slices, key=lambda s: s.id or 0):
            if s.type != SliceType.VALKEY_NAMESPACE or s.status in (SliceStatus.DELETED,):
                continue
            username, prefix = self.slice_user(s)
            secret = (s.credentials or {}).get("password")
            if not secret:
                raise DriverError(f"slice {s.id}: no password generated")
            state = "off" if (s.config or {}).get("disabled") else "on"
            lines.append(f"user {username} {state} {valkey_password_hash(secret)} "
                         f"~{prefix}* &{prefix}* {SLICE_COMMANDS}")
        return "\n".join(lines) + "\n"

    # -- compose ----------------------------------------------------------

    def compose_service(self, service: "Service", ctx: RenderContext) -> dict[str, Any]:
        entry = base_service(self, service, ctx)
        command = ["valkey-server", "--aclfile", f"{ACL_DIR_IN_CONTAINER}/{ACL_FILE}"]
        if self.persistent(service):
            command += ["--appendonly", "yes", "--dir", "/data"]
        else:
            command += ["--appendonly", "no", "--save", ""]
        maxmemory = (service.config or {}).get("maxmemory_mb")
        if maxmemory:
            command += ["--maxmemory", f"{int(maxmemory)}mb",
                        "--maxmemory-policy", str((service.config or {}).get(
                            "maxmemory_policy", "allkeys-lru"))]
        entry["command"] = command
        volumes = [f"{v.volume_name(service.id)}:{v.mount_path}" for v in self.volumes_for(service)]
        volumes.append(f"{acl_dir(service.id)}:{ACL_DIR_IN_CONTAINER}:ro")
        entry["volumes"] = volumes
        if ctx.private_ip and (service.config or {}).get("expose_private"):
            entry["ports"] = [f"{ctx.private_ip}:{ctx.published_port or PORT}:{PORT}"]
        entry["healthcheck"] = self.health_check.compose()
        return entry

    # -- slices -----------------------------------------------------------

    def env_exports(self, service: "Service", slice_: "ServiceSlice", host: str,
                    port: int | None = None) -> dict[str, str]:
        username, prefix = self.slice_user(slice_)
        return {"REDIS_CLIENT": "phpredis", "REDIS_HOST": host, "REDIS_PORT": str(port or PORT),
                "REDIS_USERNAME": username,
                "REDIS_PASSWORD": (slice_.credentials or {}).get("password", ""),
                "REDIS_PREFIX": prefix,
                # Laravel packages that replace the connection prefix with their own must
                # stay inside the ACL pattern too (see "Laravel's prefixes" above).
                "HORIZON_PREFIX": f"{prefix}horizon:",
                "REVERB_SCALING_CHANNEL": f"{prefix}reverb"}

    def slice_commands(self, service: "Service", slice_: "ServiceSlice", action: str,
                       container: str, **params: Any) -> list[Command]:
        """After the ACL file is written: load it, then check the user as the server sees it."""
        username, _ = self.slice_user(slice_)
        if action in ("provision", "rotate", "disable", "load"):
            return [cmd("docker", "exec", container, "valkey-cli", "ACL", "LOAD")]
        if action == "check":
            return [cmd("docker", "exec", container, "valkey-cli", "ACL", "GETUSER", username)]
        if action == "drop":
            # Keys under the prefix are deleted in batches with a server-side scan.
            _, prefix = self.slice_user(slice_)
            scan = cmd("docker", "exec", container, "valkey-cli", "--scan", "--pattern",
                       f"{prefix}*")
            unlink = cmd("docker", "exec", "-i", container, "xargs", "-r", "-d", "\n",
                         "-n", "100", "valkey-cli", "unlink")
            return [pipe(scan, unlink),
                    cmd("docker", "exec", container, "valkey-cli", "ACL", "LOAD")]
        raise DriverError(f"valkey slice action {action!r} is not supported")

    # -- plans (app.services_ops runs them) ------------------------------------

    def acl_step(self, service: "Service", slice_: "ServiceSlice", container: str,
                 *, check: bool, without: "ServiceSlice | None" = None) -> StepPlan:
        """Write the whole ACL file, ``ACL LOAD`` it, and (``check``) see the user enabled."""
        slices = [s for s in service.slices if without is None or s is not without]
        actions: list = [Mkdir(acl_dir(service.id)),
                         PutFile(f"{acl_dir(service.id)}/{ACL_FILE}",
                                 self.render_acl(service, slices), mode=0o644)]
        actions += [Run(c, pty=False) for c in self.slice_commands(service, slice_, "load",
                                                                   container)]
        if check:
            [getuser] = self.slice_commands(service, slice_, "check", container)
            disabled = f"Valkey does not report user {slice_.name} as enabled"
            actions.append(Run(getuser, pty=False,
                               expect=lambda out: None if "on" in out.split() else disabled))
        return StepPlan(f"Apply Valkey ACL ({slice_.name})", tuple(actions))

    def deploy_steps(self, service, *, running):
        return [StepPlan("Write Valkey ACL file", (
            Mkdir(acl_dir(service.id)),
            PutFile(f"{acl_dir(service.id)}/{ACL_FILE}",
                    self.render_acl(service, list(service.slices)), mode=0o644)))]

    def slice_provision_steps(self, service, slice_, container, action="provision"):
        return [self.acl_step(service, slice_, container,
                              check=slice_.status != SliceStatus.DELETED)]

    def slice_delete_steps(self, service, slice_, container, *, drop):
        if not drop:
            return []
        [unlink, _] = self.slice_commands(service, slice_, "drop", container)
        return [StepPlan(f"Delete keys under {(slice_.config or {}).get('prefix')}",
                         (Run(unlink, pty=False),))]

    def slice_deleted_steps(self, service, slice_, container):
        # The deleted user leaves the file; the others stay as they are.
        return [self.acl_step(service, slice_, container, check=False, without=slice_)]

    def new_slice_config(self, name: str) -> tuple[dict, dict]:
        _check_acl_token("name", name)
        return ({"username": name, "prefix": f"{name}:"},
                {"password": generate_password()})


def _check_acl_token(what: str, value: str) -> None:
    import re
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}", value):
        raise DriverError(f"valkey {what} {value!r}: use letters, digits and _ . : - "
                          "(no spaces or ACL syntax)")
