"""What the remote layer wraps around every command, and the scrubbing of its output.

:func:`report_pgid_then` makes a command report its process group first (so a timeout or a
cancel can kill everything it started) and tags its stderr lines; :func:`redact` replaces
secret values, bare or shell-quoted, in text that did not come from
:meth:`app.shell.Command.masked`. Pure, like the rest of app.shell.
"""
from __future__ import annotations

import re
import shlex
from typing import Iterable

from app.shell import (MASK, Command, Raw, Secret, _coerce_scalar, _Quoted, _Token,
                       _Trusted)

# The command's stderr through a line-buffered sed that puts a marker before each line, back
# onto the session's stderr (the pty: merged in order with stdout, so lines still arrive as
# they are printed); the remote layer strips the marker and files the line as stderr. A
# pipeline, so sed has printed its last line before the session ends (a process
# substitution would not be waited for); sed is in the command's process group, so a kill
# of the group ends it too; the exit status is the command's (PIPESTATUS).
_TAG_STDERR = ('exec 3>&1; sh -c "$1" 2>&1 1>&3 3>&- | sed -u "s/^/{marker}/" >&2; '
               'exit "${{PIPESTATUS[0]}}"')


def report_pgid_then(command: "Command | str", marker: str, *, stdin_devnull: bool = False,
                     stderr_marker: str | None = None) -> Command:
    """``printf '<marker>%s\\n' "$$" ; exec sh -c '<command>'``.

    Used by the remote layer so it can kill the whole remote process group on
    timeout or cancel: sshd starts every session command in a new session, so
    the login shell's ``$$`` is the process group id of everything the
    command starts (a non-interactive sh does no job control). ``exec`` keeps
    that pid for the command itself. ``"$$"`` is the one expansion Keystone
    ever emits, so it lives here rather than behind :class:`Raw`.

    ``command`` may be a :class:`Command` (masking preserved) or an already
    rendered string, which is then passed as one quoted argument (inert: it
    is only ever interpreted by the inner ``sh -c``, exactly as it would have
    been by sshd). ``stdin_devnull`` gives the command an empty stdin so a
    stray prompt fails instead of hanging until the timeout.

    ``stderr_marker`` (a plain token) tags every line the command writes to stderr:
    ``exec bash -c '<tagger>' keystone '<command>'``, the command itself still run by
    ``sh -c`` (bash and sed are part of every Debian system).
    """
    for token in (marker, stderr_marker):
        if token is not None and not re.fullmatch(r"[A-Za-z0-9_.:=-]+", token):
            raise ValueError("marker must be a plain token")
    if isinstance(command, Command):
        script: _Token = _Quoted(command)
    elif isinstance(command, str):
        script = _coerce_scalar(command)
    else:
        raise TypeError(f"expected a Command or str, got {type(command).__name__}")
    tokens: list[_Token] = [
        "printf",
        marker + "%s\\n",
        _Trusted('"$$"'),
        Raw(";"),
        _Trusted("exec"),
    ]
    if stderr_marker is None:
        tokens += [_Trusted("sh"), "-c", script]
    else:
        tokens += [_Trusted("bash"), "-c", _TAG_STDERR.format(marker=stderr_marker), "keystone",
                   script]
    if stdin_devnull:
        tokens.append(Raw("</dev/null"))
    return Command(tokens)


def _needles(secrets: Iterable["str | Secret"]) -> list[str]:
    needles: set[str] = set()
    for secret in secrets:
        value = secret.value if isinstance(secret, Secret) else secret
        if not value:
            continue  # an empty secret would "match" everywhere
        needles.add(value)
        # The quoted form, and the same form nested in up to three levels of
        # sh -c (each level turns ' into '"'"').
        form = shlex.quote(value)
        for _level in range(4):
            needles.add(form)
            form = form.replace("'", "'\"'\"'")
        # Output arrives line by line: a multi-line secret (a private key)
        # must be scrubbed from each line on its own.
        if "\n" in value or "\r" in value:
            for line in re.split(r"[\r\n]+", value):
                line = line.strip()
                if line:
                    needles.add(line)
    # Longest first, so a quoted form is replaced before the bare value inside it.
    return sorted(needles, key=len, reverse=True)


def redact(text: str, secrets: Iterable["str | Secret"]) -> str:
    """Replace every secret value (bare or shell-quoted) in ``text`` with ``***``.

    For the places where text not produced by :meth:`Command.masked` is
    recorded: output lines, exception messages. Each line of a multi-line
    secret is also a needle, because output is recorded line by line.
    """
    needles = _needles(secrets)
    if not needles or not text:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in needles))
    return pattern.sub(MASK, text)
