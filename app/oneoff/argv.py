"""What a one-off command runs, as argv (PURE: no I/O).

Typed text is split with :func:`shlex.split` exactly once, here; the list is stored on
the operation and becomes quoted words of ``docker compose run ... SERVICE ARGV...``
(:func:`app.deploys.commands.one_off_run`), so ``;``, ``$(...)``, ``|`` and quotes are
data for the program, never syntax for a shell.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

MAX_TEXT = 2000
MAX_ARGS = 100
PROGRAM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+-]*")
"""argv[0]: a program name or path (never an option, never shell syntax)."""


class CommandError(ValueError):
    """Typed text that is not a command Keystone will run; the message says why."""


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    argv: tuple[str, ...]
    migrates: bool = False   # changes the schema: holds the environment's deploy lock


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset("migrate", "Run migrations", ("php", "artisan", "migrate", "--force"), True),
    Preset("migrate-status", "Migration status", ("php", "artisan", "migrate:status")),
    Preset("optimize-clear", "Clear caches", ("php", "artisan", "optimize:clear")),
    Preset("queue-restart", "Restart queue workers", ("php", "artisan", "queue:restart")),
    Preset("storage-link", "Link storage", ("php", "artisan", "storage:link")),
)}


def parse_argv(text: object) -> list[str]:
    """``"php artisan tinker --execute='echo 1;'"`` -> argv, or :class:`CommandError`."""
    if not isinstance(text, str) or not text.strip():
        raise CommandError("Type a command, e.g. php artisan about.")
    if len(text) > MAX_TEXT:
        raise CommandError(f"The command is too long ({len(text)} characters; at most {MAX_TEXT}).")
    if "\x00" in text:
        raise CommandError("The command contains a NUL byte, which no argument can carry.")
    if "\n" in text or "\r" in text:
        raise CommandError("One line only: the command is split into arguments, never run "
                           "by a shell, so a second line would not be a second command.")
    try:
        argv = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise CommandError(f"The command cannot be split into arguments: {exc}.") from None
    return validate_argv(argv)


def validate_argv(argv: object) -> list[str]:
    """argv as stored on an operation: a non-empty list of strings, a plain program first."""
    if not isinstance(argv, (list, tuple)) or not argv:
        raise CommandError("Type a command, e.g. php artisan about.")
    if len(argv) > MAX_ARGS:
        raise CommandError(f"Too many arguments ({len(argv)}; at most {MAX_ARGS}).")
    out = []
    for arg in argv:
        if not isinstance(arg, str) or "\x00" in arg:
            raise CommandError("Every argument must be text without NUL bytes.")
        out.append(arg)
    if not PROGRAM_RE.fullmatch(out[0]):
        raise CommandError(f"{out[0]!r} is not a program name: start with the program to run "
                           "(php, or a path such as vendor/bin/...), not an option or shell "
                           "syntax.")
    return out


def display(argv: list[str] | tuple[str, ...]) -> str:
    """argv as one line a user can read and paste back (each word quoted as needed)."""
    return shlex.join(argv)


def is_migrate_status(argv) -> bool:
    return list(argv[:3]) == ["php", "artisan", "migrate:status"]


def is_migrate(argv) -> bool:
    return len(argv) >= 3 and list(argv[:3]) == ["php", "artisan", "migrate"]


_L8_ROW = re.compile(r"^\|\s*(Yes|No)\s*\|\s*(\S+)\s*\|")           # Laravel 5.x-8.x table
_L10_ROW = re.compile(r"\s*(\S+)\s+\.{2,}\s+(?:\[\d+\]\s+Ran|(Pending))\s*")   # Laravel 9+


def pending_migrations(output: str) -> list[str] | None:
    """Names of the migrations ``migrate:status`` lists as not run; ``None`` when the
    output is not a migration list (an error, an unknown format): unknown is not "none"."""
    pending: list[str] = []
    seen = False
    for raw in (output or "").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).rstrip()
        m = _L8_ROW.match(line)
        if m:
            seen = True
            if m.group(1) == "No":
                pending.append(m.group(2))
            continue
        m = _L10_ROW.fullmatch(line)
        if m and m.group(1) != "Migration":
            seen = True
            if m.group(2):
                pending.append(m.group(1))
    if not seen and "No migrations found" in (output or ""):
        return []
    return pending if seen else None
