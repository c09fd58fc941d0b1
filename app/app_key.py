"""Laravel's ``APP_KEY``: generated once per environment, rotated only on purpose.

Laravel encrypts session and cookie payloads and everything that goes through
``Crypt::`` / ``encrypted`` casts with ``APP_KEY``; without it a real app
answers 500 ("No application encryption key has been specified"). Keystone
owns it as a ``system``-source :class:`EnvironmentVariable`:

* :func:`ensure_app_key` creates ``APP_KEY=base64:<32 random bytes>`` (what
  ``php artisan key:generate`` writes for the default AES-256-CBC cipher) when
  an environment is created, and for an older environment that has none when
  its next deploy is started. It never replaces an existing key.
* The value is stored encrypted (``EncryptedText``) and marked secret, so the
  page shows it masked and a reveal is audited.
* :func:`rotate_app_key` is the only way to change it: an explicit action the
  user confirms by typing the environment's name, because every session and
  encrypted cookie, and all data encrypted with the old key, become
  unreadable. It is recorded as an audit event (the key itself never is).

A user-source ``APP_KEY`` (an app moved from elsewhere with its own key)
overrides the system one, like any user variable.
"""
from __future__ import annotations

import base64
import secrets

from app.extensions import db
from app import audit
from app.models import Environment, EnvironmentVariable
from app.models.enums import VariableSource

APP_KEY = "APP_KEY"
KEY_BYTES = 32     # AES-256-CBC, Laravel's default cipher
ROTATE_WARNING = ("Rotating APP_KEY logs every user out: sessions and encrypted cookies made "
                  "with the old key become unreadable, and data your app encrypted with it "
                  "(Crypt::, encrypted casts) can no longer be decrypted. The new key is used "
                  "from the next deploy.")


class AppKeyError(ValueError):
    """A refused rotation; the message is for the user."""


def generate_app_key() -> str:
    """``base64:`` and 32 bytes from the OS's CSPRNG, as ``artisan key:generate`` writes it."""
    return "base64:" + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def app_key_variable(environment: Environment) -> EnvironmentVariable | None:
    """The environment's system APP_KEY row, if it has one."""
    for v in environment.variables:
        if v.key == APP_KEY and v.source == VariableSource.SYSTEM:
            return v
    return None


def ensure_app_key(environment: Environment) -> tuple[EnvironmentVariable, bool]:
    """The system APP_KEY, created if missing (``created`` True). Never changes an existing one."""
    existing = app_key_variable(environment)
    if existing is not None:
        return existing, False
    row = EnvironmentVariable(key=APP_KEY, value=generate_app_key(), source=VariableSource.SYSTEM,
                              is_secret=True, overridable=True)
    environment.variables.append(row)
    db.session.flush()
    return row, True


def rotate_app_key(environment: Environment, *, confirm: str, user=None) -> EnvironmentVariable:
    """Replace the system APP_KEY after the user typed the environment's name."""
    if (confirm or "").strip() != environment.name:
        raise AppKeyError(f"Type the environment's name ({environment.name}) to confirm: "
                          "nothing was changed.")
    row, created = ensure_app_key(environment)
    if not created:
        old = row.value
        new = generate_app_key()
        while new == old:  # pragma: no cover - 2**-256
            new = generate_app_key()
        row.value = new
    audit.record("app_key.rotate", environment, {"environment_id": environment.id, "key": APP_KEY},
                 target_type="environment",
                 organisation_id=environment.application.organisation_id, user=user)
    db.session.flush()
    return row
