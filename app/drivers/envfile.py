r"""Environment keys and values on their way into a container, byte for byte.

Why this is not just ``KEY="value"``
-----------------------------------
Two Compose implementations read our files and they disagree:

* docker-compose v1.29 (Debian's, in the sandbox) parses ``env_file`` with
  python-dotenv 0.21 and *always* expands ``${NAME}`` / ``${NAME:-x}`` in
  single- AND double-quoted values, with no escape for it. It does not treat
  ``$$`` specially in env files. In double quotes it decodes ``\\ \" \n
  \r \t`` ... and its value regex ``"((?:\\"|[^"])*)"`` misreads a value
  whose last character is a backslash (the escaped ``\\`` before the closing
  quote looks like an escaped quote).
* Compose v2 (compose-go, production) expands ``$NAME`` / ``${NAME}`` in
  unquoted and double-quoted values (``$$`` and ``\$`` escape it), keeps
  single-quoted values literal but cannot express ``\\`` there, and decodes
  the same backslash escapes in double quotes.

So no env-file quoting carries ``${HOME}`` literally under v1. The one
``$`` escape both versions agree on is the compose *file*'s ``$$``. Hence:

1. A value with no ``$`` and no trailing backslash goes to ``.env`` double
   quoted, escaping only backslash, ``"``, newline and carriage return (as
   ``\\`` ``\"`` ``\n`` ``\r``) -- the
   subset both parsers decode identically.
2. Any other value goes to the compose file's ``environment:`` mapping with
   every ``$`` doubled (YAML carries newlines, quotes and backslashes as
   they are). The compose file is therefore written 0600 like ``.env``.

Compose also reads a project-level ``.env`` beside the compose file for
*interpolation* (and COMPOSE_* settings): Keystone passes ``--env-file`` with
an empty ``compose.env`` so a user variable named COMPOSE_FILE or
COMPOSE_PROJECT_NAME can never steer Compose.

How it is proved: tests/integration/test_drivers.py starts a container from
a rendered project on a sandbox server (docker-compose v1.29) and compares
``docker exec ... env -0`` with the input byte for byte; a unit test feeds
the env file to v1's own reader. Compose v2 cannot run here (Debian 12 ships
no v2 plugin and no Go module proxy is reachable to build compose-go), so its
side rests on reading compose-go's dotenv parser, old and current: in double
quotes it turns ``\\`` into ``\``, ``\"`` into ``"``, ``\n``/``\r`` into line
breaks, and only ``$`` (excluded here) and a backslash right before the
closing quote (excluded: no trailing backslash) would be read differently.
The compose-file ``$$`` escape is the documented behaviour of both versions.
"""
from __future__ import annotations

import re
from typing import Mapping

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_KEY_LENGTH = 128


class EnvKeyError(ValueError):
    """An environment variable name that would not survive (or would become syntax)."""


class EnvValueError(ValueError):
    pass


def validate_env_key(key: object) -> str:
    """Return ``key`` if it is a valid variable name, else raise with a clear message.

    ``A;id`` -> "contains ';'", ``A B`` -> "contains a space", ``1A`` -> "starts
    with a digit". Only ``[A-Za-z_][A-Za-z0-9_]*`` is accepted: it is what a
    POSIX shell, Docker and both Compose versions all read the same way.
    """
    if not isinstance(key, str) or key == "":
        raise EnvKeyError("Variable name is empty: use letters, digits and underscores, "
                          "starting with a letter or underscore (e.g. APP_NAME).")
    if len(key) > MAX_KEY_LENGTH:
        raise EnvKeyError(f"Variable name is too long ({len(key)} characters; at most "
                          f"{MAX_KEY_LENGTH}).")
    if ENV_KEY_RE.fullmatch(key):
        return key
    shown = key if len(key) <= 40 else key[:37] + "..."
    if key[0].isdigit():
        raise EnvKeyError(f"Variable name {shown!r} starts with a digit: names must start "
                          "with a letter or underscore (e.g. APP_NAME).")
    bad = next(ch for ch in key if not (ch.isascii() and (ch.isalnum() or ch == "_")))
    if bad == " ":
        what = "a space"
    elif bad in "\t\r\n":
        what = "a tab or line break"
    elif not bad.isprintable():
        what = f"the control character U+{ord(bad):04X}"
    else:
        what = repr(bad)
    raise EnvKeyError(f"Variable name {shown!r} contains {what}: only letters A-Z, digits "
                      "and underscores are allowed, starting with a letter or underscore.")


def validate_env_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise EnvValueError(f"{key}: value must be text")
    if "\x00" in value:
        raise EnvValueError(f"{key}: value contains a NUL byte, which no process "
                            "environment can carry")
    return value


def env_file_safe(value: str) -> bool:
    """True when ``value`` round-trips through a double-quoted env-file entry in v1 and v2."""
    return "$" not in value and not value.endswith("\\")


def quote_env_value(value: str) -> str:
    """Double-quote ``value`` for an env file; only for :func:`env_file_safe` values."""
    if not env_file_safe(value):
        raise EnvValueError("value must go to the compose file's environment, not the env file")
    out = (value.replace("\\", "\\\\").replace('"', '\\"')
           .replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{out}"'


def split_environment(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split into (env-file entries, compose ``environment:`` entries); keys validated."""
    file_part: dict[str, str] = {}
    compose_part: dict[str, str] = {}
    for key in sorted(env):
        validate_env_key(key)
        value = validate_env_value(key, env[key])
        if env_file_safe(value):
            file_part[key] = value
        else:
            compose_part[key] = value
    return file_part, compose_part


def render_env_file(entries: Mapping[str, str], header: str | None = None) -> str:
    """``KEY="value"`` lines, sorted, for :func:`env_file_safe` values only."""
    lines = []
    if header:
        lines.extend(f"# {line}" for line in header.splitlines())
    for key in sorted(entries):
        validate_env_key(key)
        lines.append(f"{key}={quote_env_value(validate_env_value(key, entries[key]))}")
    return "\n".join(lines) + "\n" if lines else ""
