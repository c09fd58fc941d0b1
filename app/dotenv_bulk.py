"""Paste a ``.env`` into an environment, see the diff, save it; export one (issue 17, sec. 5).

Parsing is python-dotenv's (``dotenv.parser.parse_stream``: quotes, escapes, ``export``,
comments, multi-line quoted values), not ours. Interpolation follows Laravel's dotenv:
``${NAME}`` / ``${NAME:-default}`` expand in unquoted and double-quoted values, single
quotes are literal. Unlike ``dotenv_values`` the names resolve ONLY against the lines
above and the environment's stored values, never Keystone's own process environment
(``${SECRET_KEY}`` must not pull the control plane's secret into an app).

Values are then stored as they are; app.drivers.envfile carries them into the container
byte for byte (tests/integration/test_day_two_commands.py proves the whole way).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import re
from dataclasses import dataclass, field
from typing import Mapping

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables

from app.drivers.envfile import EnvKeyError, validate_env_key, validate_env_value
from app.shell import MASK

MAX_PASTE = 256 * 1024
SECRET_NAME_RE = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL|_KEY|^KEY|DSN)",
                            re.IGNORECASE)
_QUOTE_RE = re.compile(r"\s*(?:export\s+)?(?:'[^']*'|[^=\s]+)\s*=\s*(['\"])?")
_BARE_RE = re.compile(r"[A-Za-z0-9_./:@+,-]*")


class DotenvError(ValueError):
    pass


@dataclass(frozen=True)
class Parsed:
    values: dict[str, str]                 # in file order; a repeated key: the last wins
    errors: list[str] = field(default_factory=list)   # "line 3: ..." (never a value)


def looks_secret(key: str) -> bool:
    return bool(SECRET_NAME_RE.search(key))


def parse(text: str, known: Mapping[str, str] | None = None) -> Parsed:
    """Parse pasted ``.env`` text; ``known`` are the values ``${NAME}`` may refer to
    besides the lines above (the environment's current ones)."""
    if not isinstance(text, str):
        raise DotenvError("Paste the contents of a .env file.")
    if len(text) > MAX_PASTE:
        raise DotenvError(f"The file is too large ({len(text)} characters; at most {MAX_PASTE}).")
    values: dict[str, str] = {}
    errors: list[str] = []
    scope: dict[str, str | None] = dict(known or {})
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            errors.append(f"line {line}: cannot be read as KEY=value")
            continue
        if binding.key is None:
            continue      # blank line or comment
        key = binding.key
        try:
            validate_env_key(key)
        except EnvKeyError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if binding.value is None:
            errors.append(f"line {line}: {key} has no '=' (a bare name sets nothing)")
            continue
        m = _QUOTE_RE.match(binding.original.string)
        quote = m.group(1) if m else None
        value = binding.value
        if quote != "'":
            value = "".join(atom.resolve(scope) for atom in parse_variables(value))
        try:
            validate_env_value(key, value)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        values.pop(key, None)
        values[key] = value
        scope[key] = value
    return Parsed(values, errors)


@dataclass(frozen=True)
class Change:
    key: str
    kind: str             # added | changed | removed | unchanged
    secret: bool
    old: str | None = None
    new: str | None = None

    def shown(self, value: str | None) -> str:
        if value is None:
            return ""
        return MASK if self.secret else value


@dataclass(frozen=True)
class Diff:
    changes: list[Change]
    errors: list[str]
    blocked: dict[str, str]       # key -> why it cannot be set (managed, not overridable)

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def has_changes(self) -> bool:
        return any(c.kind != "unchanged" for c in self.changes)


def diff(current: Mapping[str, str], secret_keys: set[str], pasted: Parsed, *,
         replace: bool = False, locked: set[str] = frozenset()) -> Diff:
    """What saving ``pasted`` would do to the user variables ``current``.

    A pasted value that is exactly the mask (``***``, as a masked export writes it) for
    a key that has a value keeps that value: re-importing a masked export changes nothing.
    ``replace`` also removes user variables the paste does not name. ``locked`` keys
    are managed by an attachment and not overridable: refused, named in ``blocked``.
    """
    changes: list[Change] = []
    blocked = {}
    for key, value in pasted.values.items():
        secret = key in secret_keys or looks_secret(key)
        if key in locked:
            blocked[key] = "managed by an attachment and cannot be overridden"
            continue
        if key not in current:
            changes.append(Change(key, "added", secret, None, value))
        elif value == MASK and key in secret_keys or current[key] == value:
            changes.append(Change(key, "unchanged", secret, current[key], current[key]))
        else:
            changes.append(Change(key, "changed", secret, current[key], value))
    if replace:
        for key, value in current.items():
            if key not in pasted.values:
                changes.append(Change(key, "removed", key in secret_keys or looks_secret(key),
                                      value, None))
    return Diff(changes, list(pasted.errors), blocked)


def fingerprint(secret: str, text: str, replace: bool) -> str:
    """Binds "Save" to the paste that was previewed (the text stays in the browser)."""
    msg = (("replace" if replace else "merge") + "\x00" + text).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def quote_value(value: str) -> str:
    """A value as python-dotenv reads it back unchanged: bare when plain, else single
    quoted (literal: no interpolation) with ``\\`` and ``'`` escaped."""
    if _BARE_RE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(values: Mapping[str, str], secret_keys: set[str], *, reveal: bool) -> str:
    """``KEY=value`` lines; secret values are ``***`` unless ``reveal``."""
    lines = []
    for key, value in values.items():
        if key in secret_keys and not reveal:
            lines.append(f"{key}={MASK}")
        else:
            lines.append(f"{key}={quote_value(value)}")
    return "\n".join(lines) + ("\n" if lines else "")
