"""Terminal output made readable for the log: ANSI codes out, known noise out.

Commands run on a pty, so ``docker push`` and friends redraw their progress
with cursor codes (``ESC[1A ESC[2K``) and colour them. The log is a list of
lines, not a terminal: the codes are removed, a carriage-return redraw keeps
its last state, and a line that was nothing but codes is dropped.

Two kinds of lines read like failures on a healthy run:

* Docker's "WARNING! Your password will be stored unencrypted" (and its two
  follow-up lines): Keystone logs in with an operation-private DOCKER_CONFIG
  inside the operation's working directory, removed when the step ends, so
  the warning does not apply. These lines are dropped.
* "Error: No such container" (and object/image) from a probe that is run
  with ``check=False`` because absence is an expected answer: the line is
  kept but marked as expected (see :func:`mark_expected`).
"""
from __future__ import annotations

import re

# CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST), and the
# two-character escapes (ESC 7, ESC M, ...).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_78=>]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_NOISE = (
    re.compile(r"WARNING! Your password will be stored unencrypted in \S*/operations/\S+"),
    re.compile(r"Configure a credential helper to remove this warning\. See"),
    re.compile(r"https://docs\.docker\.com/(?:engine/reference/commandline/login/#credential-stores"
               r"|go/credential-store/?)"),
)
_ABSENT = re.compile(r"(?:Error: |Error response from daemon: )?No such (?:container|object|image|volume|network)"
                     r"(?:: ?\S*)?")
EXPECTED_SUFFIX = "  (expected: not there yet)"


def strip_ansi(text: str) -> str:
    """The text a terminal would leave on the line, without escape codes."""
    text = _ANSI.sub("", text)
    if "\r" in text:
        # A carriage return redraws the line: keep what was drawn last.
        parts = [p for p in text.split("\r") if p.strip()]
        text = parts[-1] if parts else ""
    return _CONTROL.sub("", text)


def is_noise(text: str) -> bool:
    return any(p.search(text) for p in _NOISE)


def clean(text: str) -> str | None:
    """The line as the log shows it, or None when it should not be shown at all."""
    had_text = bool(text.strip())
    out = strip_ansi(text).rstrip()
    if had_text and not out.strip():
        return None  # nothing but cursor movement
    if is_noise(out):
        return None
    return out


def mark_expected(text: str) -> str | None:
    """For probes run with check=False: a not-found answer is expected, say so."""
    if _ABSENT.fullmatch(text.strip()):
        return text + EXPECTED_SUFFIX
    return None
