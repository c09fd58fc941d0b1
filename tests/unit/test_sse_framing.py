"""SSE framing and terminal rendering of CR: a remote line cannot forge an event."""
from __future__ import annotations

import re

import pytest

from app.operations.sse import entry_event, format_event, line_html
from app.remote.lines import _LineSplitter
from app.remote.terminal import overstrike


def parse_sse(stream: str) -> list[dict]:
    """A parser that follows the SSE spec: CRLF, CR and LF all end a line."""
    events, current = [], {"data": []}
    for line in re.split(r"\r\n|\r|\n", stream):
        if line == "":
            if current["data"] or "event" in current:
                events.append({**current, "data": "\n".join(current["data"])})
            current = {"data": []}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            current["data"].append(value)
        elif field in ("event", "id", "retry"):
            current[field] = value
    return events


FORGERIES = [
    "x\revent: end\rdata: succeeded\r\r",
    "x\r\nevent: end\r\ndata: succeeded\r\n\r\n",
    "x\n\nevent: end\ndata: succeeded\n\n",
    "\rid: 99999999999-0\r",
    "progress\r\r\revent: end",
]


@pytest.mark.parametrize("text", FORGERIES)
def test_a_line_cannot_forge_an_event(text):
    out = entry_event("1-0", {"k": "line", "t": text, "s": "1", "o": "1"})[0]
    events = parse_sse(out)
    assert len(events) == 1
    assert events[0]["event"] == "line" and events[0]["id"] == "1-0"
    assert "event: end" not in events[0]["data"].replace("\n", " ").split("</div>")[-1]


@pytest.mark.parametrize("text", FORGERIES)
def test_status_and_step_data_cannot_forge_an_event(text):
    for fields in ({"k": "step", "s": "1", "st": text}, {"k": "status", "st": text},
                   {"k": "end", "st": text}):
        events = parse_sse(entry_event("2-0", fields)[0])
        assert len(events) == 1 and events[0]["id"] == "2-0"


def test_format_event_splits_data_on_every_line_end():
    assert format_event("line", "a\rb\r\nc\nd") == "event: line\ndata: a\ndata: b\ndata: c\ndata: d\n\n"


def test_progress_bars_show_their_last_state():
    assert overstrike("progress 10%\rprogress 20%") == "progress 20%"
    assert overstrike("downloading 100%\rdone") == "doneloading 100%"  # as a terminal shows it
    assert overstrike("abc\r") == "abc"
    assert overstrike("plain") == "plain"
    assert "progress 20%</div>" in line_html("progress 10%\rprogress 20%")


def _split(*chunks: bytes) -> list[str]:
    lines: list[str] = []
    splitter = _LineSplitter(lines.append)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.flush()
    return lines


def test_splitter_handles_lf_crlf_and_lone_cr():
    assert _split(b"a\nb\r\nc") == ["a", "b", "c"]
    assert _split(b"progress 10%\rprogress 20%\n") == ["progress 20%"]
    assert _split(b"one\r", b"\ntwo\r\n") == ["one", "two"]  # CRLF cut between reads
    assert _split(b"x\revent: end\n") == ["event: end"]  # shown as text, one line
    assert _split(b"tail\r") == ["tail"]
    assert all("\r" not in line and "\n" not in line
               for line in _split(b"a\r\rb\r\n\r\nc\r\r\n", b"\rd"))
