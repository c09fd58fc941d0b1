"""Bytes from a channel into lines, and the bounded copy a Result keeps (no paramiko here)."""
from __future__ import annotations

from typing import Callable

from app.remote.terminal import overstrike

# Output lines longer than this without a newline are emitted in pieces, so a
# progress bar that never prints "\n" cannot grow a buffer without bound.
MAX_LINE_BYTES = 64 * 1024


class _LineSplitter:
    """Bytes in, decoded lines out; a partial line waits for its newline.

    LF and CRLF end a line. A lone CR inside a line is rendered as a terminal does
    (what follows overwrites the line from column 0), so a progress bar yields its
    last state and no emitted line ever carries a CR or LF.
    """

    def __init__(self, emit: Callable[[str], None]):
        self._emit = emit
        self._buf = b""

    def _send(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]  # CRLF: the CR is part of the line end
        self._emit(overstrike(raw.decode("utf-8", "replace")))

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
            self._send(line)
        while len(self._buf) > MAX_LINE_BYTES:
            chunk, self._buf = self._buf[:MAX_LINE_BYTES], self._buf[MAX_LINE_BYTES:]
            self._emit(overstrike(chunk.decode("utf-8", "replace")))

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, b""
            self._send(line)


class _Capture:
    def __init__(self, limit: int):
        self.lines: list[str] = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def add(self, line: str) -> None:
        if self.size + len(line) + 1 > self.limit:
            self.truncated = True
            return
        self.lines.append(line)
        self.size += len(line) + 1

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
