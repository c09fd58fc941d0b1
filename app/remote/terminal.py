"""How a terminal shows a line that contains carriage returns.

A lone CR moves the cursor back to column 0 and what follows overwrites what was
there, so progress bars (``10%\\r20%\\r30%``) show their last state. Pure text
functions, shared by the SSH line splitter and the live-log (SSE) renderer.
"""
from __future__ import annotations

import re

LINE_BREAK = re.compile(r"\r\n|\r|\n")


def overstrike(text: str) -> str:
    """The text a terminal shows for one line that may contain lone CRs."""
    if "\r" not in text:
        return text
    shown = ""
    for segment in text.split("\r"):
        shown = segment + shown[len(segment):]
    return shown


def split_lines(text: str) -> list[str]:
    """Split on CRLF, CR or LF: the three line ends of the SSE and HTTP framings."""
    return LINE_BREAK.split(text)
