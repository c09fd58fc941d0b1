"""Live log of an operation: one Redis stream per operation.

Why a stream and not pub/sub: pub/sub drops what nobody was subscribed to when
it was published; a stream keeps entries with monotonically increasing ids, so
a browser that reconnects with ``Last-Event-ID`` resumes exactly where it was
(XREAD after that id) and loses nothing.

Entry fields (all strings):

    k   kind: "line" | "step" | "status" | "end"
    o   the operation id that produced it (a parent's stream also carries its
        children's entries, so the parent page follows the whole tree)
    s   step id (line, step)
    t   text of a line (already redacted by the recorder: the only writer)
    st  status (step, status, end)
    e   "1" for stderr lines

The stream of a finished operation expires after STREAM_TTL; after that the
events endpoint replays from the database (OperationStep.logs).
"""
from __future__ import annotations

import os
import threading

import redis

from app import redis_keys

STREAM_MAXLEN = int(os.environ.get("KEYSTONE_LOG_STREAM_MAXLEN", "100000"))
STREAM_TTL = int(os.environ.get("KEYSTONE_LOG_STREAM_TTL", str(6 * 3600)))

_clients: dict[tuple[int, str, bool], redis.Redis] = {}
_clients_lock = threading.Lock()


def stream_key(operation_id: int) -> str:
    """The operation's stream, under the installation's Redis prefix (app/redis_keys.py)."""
    return redis_keys.key("op", int(operation_id), "log")


def clear(operation_id: int) -> None:
    """Forget any stream left under a new operation's id (e.g. by a database that was reset):
    a browser that opens the new operation must not replay an old one's lines and end."""
    try:
        redis_client().delete(stream_key(operation_id))
    except redis.RedisError:
        pass  # Redis down: enqueueing says so; a missing stream needs no clearing


def redis_client(url: str | None = None, *, blocking: bool = False) -> redis.Redis:
    """A Redis client per process and URL (a forked work horse gets its own).

    ``blocking=True`` gives a client whose socket timeout outlasts a blocking
    XREAD of up to a minute (redis-py's default read timeout is shorter).
    """
    if url is None:
        from flask import current_app
        url = current_app.config["REDIS_URL"]
    key = (os.getpid(), url, blocking)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                options = {"health_check_interval": 30}
                if blocking:
                    options["socket_timeout"] = 75
                client = redis.Redis.from_url(url, **options)
                _clients[key] = client
    return client


def reset_clients() -> None:
    """Forget inherited clients (called in a freshly forked work horse)."""
    with _clients_lock:
        _clients.clear()


class LogStream:
    """Writes entries to the streams of an operation and its ancestors."""

    def __init__(self, client: redis.Redis, operation_ids: list[int]):
        self.client = client
        self.keys = [stream_key(i) for i in operation_ids]
        self.origin = str(operation_ids[0])

    def _add(self, fields: dict[str, str]) -> None:
        fields = {"o": self.origin, **fields}
        if len(self.keys) == 1:
            self.client.xadd(self.keys[0], fields, maxlen=STREAM_MAXLEN, approximate=True)
            return
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys:
            pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()

    def line(self, step_id: int, text: str, stderr: bool = False) -> None:
        fields = {"k": "line", "s": str(step_id), "t": text}
        if stderr:
            fields["e"] = "1"
        self._add(fields)

    def step(self, step_id: int, status: str) -> None:
        self._add({"k": "step", "s": str(step_id), "st": status})

    def status(self, status: str) -> None:
        self._add({"k": "status", "st": status})

    def end(self, status: str) -> None:
        """The operation is terminal: readers stop here. Only its own stream ends."""
        key = self.keys[0]
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, {"o": self.origin, "k": "end", "st": status}, maxlen=STREAM_MAXLEN,
                  approximate=True)
        pipe.expire(key, STREAM_TTL)
        for other in self.keys[1:]:
            pipe.xadd(other, {"o": self.origin, "k": "status", "st": status},
                      maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()


def publish_end(client: redis.Redis, operation_id: int, status: str,
                ancestor_ids: list[int] | None = None) -> None:
    LogStream(client, [operation_id, *(ancestor_ids or [])]).end(status)


def decode(fields: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace")
            if isinstance(v, bytes) else v) for k, v in fields.items()}
