"""Server-sent events for an operation's live log.

Each event carries ``id:`` = the Redis stream id of its entry, so a browser
that reconnects with ``Last-Event-ID`` continues right after the last entry
it saw (XREAD is exclusive of the id given) and loses no line. A finished
operation whose stream has expired is replayed from the database with ids
``db-<n>``. Comment lines every KEEPALIVE seconds keep proxies from closing
an idle stream; the response ends at the operation's ``end`` entry, or after
MAX_SECONDS (the browser reconnects and resumes).

The generators never touch the Flask session or request: everything they
need is captured before the response starts (Flask's streaming pattern).
"""
from __future__ import annotations

import re
import time
from typing import Iterator

import sqlalchemy as sa
from markupsafe import escape

from app.models import Operation
from app.operations import logstream
from app.remote.terminal import overstrike, split_lines

KEEPALIVE = 10.0
MAX_SECONDS = 300.0
RETRY_MS = 2000
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


def format_event(event: str, data: str, event_id: str | None = None) -> str:
    out = []
    if event_id:
        out.append(f"id: {event_id}")
    out.append(f"event: {event}")
    # CR, LF and CRLF all end an SSE line: split on all three, so no text inside
    # ``data`` can start a field (``event: end``) of its own.
    for line in (split_lines(data) if data else [""]):
        out.append(f"data: {line}")
    return "\n".join(out) + "\n\n"


def line_html(text: str, op_id: str | int | None = None, stderr: bool = False,
              step_id: str | int | None = None) -> str:
    # One log line on screen: CRs as a terminal shows them; any stray line break
    # (a line recorded by other means) becomes a visible space.
    text = " ".join(overstrike(part) for part in text.split("\n"))
    cls = "ln err" if stderr else "ln"
    if text.startswith("==> "):
        cls += " step-head"
    elif text.startswith("!! "):
        cls += " err"
    attrs = f' data-op="{escape(str(op_id))}"' if op_id is not None else ""
    if step_id is not None:
        attrs += f' data-step="{escape(str(step_id))}"'
    return f'<div class="{cls}"{attrs}>{escape(text)}</div>'


def entry_event(entry_id: str, fields: dict[str, str]) -> tuple[str, bool]:
    """(SSE text, is_end) for one stream entry."""
    kind = fields.get("k")
    if kind == "line":
        return format_event("line", line_html(fields.get("t", ""), fields.get("o"),
                                              fields.get("e") == "1", fields.get("s")),
                            entry_id), False
    if kind == "step":
        return format_event("step", f'{fields.get("s", "")} {fields.get("st", "")}', entry_id), False
    if kind == "end":
        return format_event("end", fields.get("st", ""), entry_id), True
    return format_event("status", fields.get("st", ""), entry_id), False


def stream_events(client, operation_id: int, last_event_id: str | None, engine=None,
                  keepalive: float = KEEPALIVE, max_seconds: float = MAX_SECONDS,
                  render=entry_event, lost_end=None) -> Iterator[str]:
    """Follow the operation's Redis stream from ``last_event_id`` until its end entry.

    The stream's key is named now, in the caller's app context (it carries the
    installation's Redis prefix): the generator runs after the view has returned.
    ``render(entry_id, fields) -> (text, is_end)`` formats an entry: HTML lines for the
    page (:func:`entry_event`), JSON for the API (app.api.deploys); ``lost_end(status)``
    the end event sent when the stream's own end entry never came.
    """
    return _follow(client, logstream.stream_key(operation_id), operation_id, last_event_id,
                   engine, keepalive, max_seconds, render, lost_end)


def _follow(client, key: str, operation_id: int, last_event_id: str | None, engine,
            keepalive: float, max_seconds: float, render, lost_end) -> Iterator[str]:
    cursor = last_event_id if last_event_id and _STREAM_ID.fullmatch(last_event_id) else "0-0"
    started = time.monotonic()
    yield f"retry: {RETRY_MS}\n: stream of operation {int(operation_id)}\n\n"
    while True:
        remaining = max_seconds - (time.monotonic() - started)
        if remaining <= 0:
            return  # the browser reconnects with Last-Event-ID
        block_ms = int(min(keepalive, remaining) * 1000) or 1
        result = client.xread({key: cursor}, count=1000, block=block_ms)
        if not result:
            if engine is not None and _terminal_status(engine, operation_id):
                # Ended but no end entry reached us (Redis lost it): say so and stop.
                tail = client.xread({key: cursor}, count=1000)
                for entry_id, fields in (tail[0][1] if tail else []):
                    cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    text, is_end = render(cursor, logstream.decode(fields))
                    yield text
                    if is_end:
                        return
                status = _terminal_status(engine, operation_id) or ""
                yield lost_end(status) if lost_end else format_event("end", status)
                return
            yield ": keepalive\n\n"
            continue
        for entry_id, fields in result[0][1]:
            cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            text, is_end = render(cursor, logstream.decode(fields))
            yield text
            if is_end:
                return


def _terminal_status(engine, operation_id: int) -> str | None:
    table = Operation.__table__
    with engine.connect() as conn:
        status = conn.execute(sa.select(table.c.status).where(table.c.id == operation_id)).scalar()
    return status if status in TERMINAL else None


def replay_lines(operation) -> list[tuple[int, str]]:
    """(operation id, line) of a finished operation and its children, from the database."""
    lines: list[tuple[int, str]] = []

    def walk(op):
        items = [("step", s.started_at or s.created_at, s) for s in op.steps]
        items += [("child", c.created_at, c) for c in op.children]
        items.sort(key=lambda item: (item[1] is None, item[1]))
        for kind, _when, obj in items:
            if kind == "step":
                for line in obj.log_text.splitlines():
                    lines.append((op.id, line))
            else:
                walk(obj)

    walk(operation)
    return lines


def replay_events(lines: list[tuple[int, str]], status: str,
                  last_event_id: str | None) -> Iterator[str]:
    skip = 0
    if last_event_id and last_event_id.startswith("db-") and last_event_id[3:].isdigit():
        skip = int(last_event_id[3:])
    yield f"retry: {RETRY_MS}\n: replay of a finished operation\n\n"
    for n, (op_id, text) in enumerate(lines, start=1):
        if n <= skip:
            continue
        yield format_event("line", line_html(text, op_id), f"db-{n}")
    yield format_event("status", status, f"db-{len(lines)}")
    yield format_event("end", status, f"db-{len(lines)}")
