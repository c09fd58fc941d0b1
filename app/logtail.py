"""Live logs of running containers (issue 17 section 1): ``docker logs -f`` -> Redis -> SSE.

Views never touch the network, so the tail runs in a worker and the page reads Redis:

* The SSE view (:func:`open_session`) records a *session* in Redis: the service, "since"
  and how many lines to start with, plus a *lease* key with a short TTL (LEASE_TTL). While
  the browser is connected the view refreshes the lease every few seconds (it writes a
  keepalive comment each HEARTBEAT seconds, which is also how it notices a closed tab); when
  the response ends (tab closed, page left, gunicorn stops) it deletes the lease. A view
  that dies without its ``finally`` leaves a lease that expires on its own.
* One RQ job, :func:`app.jobs.tail_logs` on the ``<queue>-logs`` queue (a worker of its own,
  ``keystone worker --logs``, so a tail never holds up a deploy), serves every session of
  the installation (:func:`serve`): per session and replica one channel on the pooled SSH
  connection of that server runs ``docker logs --follow`` (app.shell.docker_logs); each line
  goes to the session's Redis stream tagged with its replica. When a lease is gone the
  session's channels are cancelled, which kills the remote process group (app.remote), so
  no ``docker logs`` is left on the server. With no session for IDLE_EXIT seconds the job
  closes its connections and returns; the next session enqueues it again.
* The tailer announces itself with a key (TAILER_TTL, refreshed each pass): a view enqueues
  the job only when that key is absent (SET NX), so there is one tailer per installation.

Stream entry fields: ``r`` replica tag, ``t`` text, ``e`` "1" for stderr, ``k`` "line" or
"note" (a message from Keystone itself: a replica's tail ended, a server is unreachable).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from markupsafe import escape

from app import redis_keys
from app.operations.sse import format_event

log = logging.getLogger(__name__)

LEASE_TTL = 15          # seconds a session lives without its viewer refreshing it
HEARTBEAT = 3.0         # seconds between the SSE view's keepalives (and lease refreshes)
TAILER_TTL = 10         # seconds the tailer's presence key outlives its last pass
IDLE_EXIT = 20.0        # seconds the tailer waits for a new session before it returns
POLL = 0.25             # seconds between the tailer's passes
STREAM_MAXLEN = 5000    # entries kept per session stream
STREAM_TTL = 120        # seconds a session's stream is kept after its last write
DEFAULT_TAIL = 200
RECONNECT_TAIL = 0      # a reconnecting browser (Last-Event-ID) already has the earlier lines


def queue_name(config) -> str:
    return f"{config['RQ_QUEUE']}-logs"


def sessions_key(config=None) -> str:
    return redis_keys.key("logs", "sessions", config=config)


def session_key(sid: str, config=None) -> str:
    return redis_keys.key("logs", "session", sid, config=config)


def lease_key(sid: str, config=None) -> str:
    return redis_keys.key("logs", "lease", sid, config=config)


def stream_key(sid: str, config=None) -> str:
    return redis_keys.key("logs", "stream", sid, config=config)


def tailer_key(config=None) -> str:
    return redis_keys.key("logs", "tailer", config=config)


# --------------------------------------------------------------------------- the view side

def open_session(client, service_id: int, *, since: str | None, tail: int) -> str:
    """Record a session and its lease; make sure a tailer runs. Returns the session id."""
    sid = secrets.token_hex(8)
    pipe = client.pipeline(transaction=True)
    pipe.hset(session_key(sid), mapping={"service_id": str(int(service_id)),
                                         "since": since or "", "tail": str(int(tail))})
    pipe.expire(session_key(sid), 24 * 3600)
    pipe.set(lease_key(sid), "1", ex=LEASE_TTL)
    pipe.sadd(sessions_key(), sid)
    pipe.execute()
    return sid


def ensure_tailer(client, config) -> bool:
    """Enqueue the tailer job unless one runs (or was just enqueued). True if enqueued."""
    if not client.set(tailer_key(), "starting", nx=True, ex=max(TAILER_TTL, 60)):
        return False
    from rq import Queue
    Queue(queue_name(config), connection=client).enqueue(
        "app.jobs.tail_logs", job_timeout=24 * 3600, result_ttl=600, failure_ttl=3600,
        description="keystone live container logs")
    return True


def close_session(client, sid: str) -> None:
    """The viewer left: the tailer sees the lease gone and stops the remote tails."""
    try:
        client.delete(lease_key(sid))
    except Exception:  # noqa: BLE001 - Redis down: the lease expires on its own
        pass


def follow(client, sid: str, *, gateway: bool = False, heartbeat: float = HEARTBEAT,
           max_seconds: float | None = None, as_json: bool = False) -> Iterator[str]:
    """SSE of a session's stream; refreshes the lease while the browser reads it.

    The keys are named here, in the view's app context (they carry the installation's Redis
    prefix): the generator runs after the view returned, with no app context. A closed tab
    makes the next write fail, which closes the generator: its ``finally`` drops the lease.
    """
    return _follow(client, sid, stream_key(sid), lease_key(sid), gateway, heartbeat,
                   max_seconds, as_json)


def entry_json(fields: dict[str, str]) -> str:
    """One line for the API (``as_json``): ``{replica, text, kind, stderr}``."""
    return json.dumps({"replica": fields.get("r", ""), "text": fields.get("t", ""),
                       "kind": fields.get("k", "line"), "stderr": fields.get("e") == "1"})


def _follow(client, sid: str, key: str, lease: str, gateway: bool, heartbeat: float,
            max_seconds: float | None, as_json: bool = False) -> Iterator[str]:
    cursor = "0-0"  # the stream is this session's own: everything in it is for this browser
    started = time.monotonic()
    try:
        yield f"retry: 2000\n: live logs {sid}\n\n"
        while max_seconds is None or time.monotonic() - started < max_seconds:
            client.set(lease, "1", ex=LEASE_TTL)
            result = client.xread({key: cursor}, count=500, block=int(heartbeat * 1000))
            if not result:
                yield ": keepalive\n\n"
                continue
            chunk = []
            for entry_id, fields in result[0][1]:
                cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if as_json:  # the API: one event per line, its data JSON
                    yield format_event("line", entry_json(_decode(fields)), cursor)
                    continue
                chunk.append(render_entry(_decode(fields), gateway))
            if as_json:
                continue
            # One event per batch: a burst of lines costs one DOM swap, not hundreds.
            yield format_event("line", "".join(chunk), cursor)
    finally:
        try:
            client.delete(lease)  # the viewer left: the tailer stops the remote tails
        except Exception:  # noqa: BLE001 - Redis down: the lease expires on its own
            pass


def _decode(fields: dict) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k):
            (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in fields.items()}


# --------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class AccessEntry:
    ts: str
    status: str
    method: str
    host: str
    path: str
    duration_ms: str


def parse_access(text: str) -> AccessEntry | None:
    """Caddy's access log line (JSON, logger ``http.log.access...``) or None for any other."""
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not str(data.get("logger", "")).startswith("http.log.access"):
        return None
    req = data.get("request") if isinstance(data.get("request"), dict) else {}
    ts = data.get("ts")
    when = time.strftime("%H:%M:%S", time.gmtime(float(ts))) if isinstance(ts, (int, float)) \
        else str(ts or "")
    duration = data.get("duration")
    ms = f"{float(duration) * 1000:.1f} ms" if isinstance(duration, (int, float)) else ""
    return AccessEntry(ts=when, status=str(data.get("status", "")),
                       method=str(req.get("method", "")), host=str(req.get("host", "")),
                       path=str(req.get("uri", "")), duration_ms=ms)


def render_entry(fields: dict[str, str], gateway: bool = False) -> str:
    """One line of the pane: the replica's tag and the text (escaped), or for the gateway's
    access log one table row (time, status, method, path, duration)."""
    replica = fields.get("r", "")
    text = fields.get("t", "")
    kind = fields.get("k", "line")
    tag = f'<span class="replica-tag">[{escape(replica)}]</span> ' if replica else ""
    if kind == "note":
        return f'<div class="ln step-head" data-replica="{escape(replica)}">{tag}{escape(text)}</div>'
    if gateway:
        entry = parse_access(text)
        if entry is not None:
            status = entry.status
            cls = " err" if status.startswith("5") else ""
            return (f'<div class="ln access{cls}" role="row" data-replica="{escape(replica)}" '
                    f'data-status="{escape(status)}">'
                    f'<span role="cell">{escape(entry.ts)}</span>'
                    f'<span role="cell" data-col="status">{escape(status)}</span>'
                    f'<span role="cell">{escape(entry.method)}</span>'
                    f'<span role="cell" data-col="path">{escape(entry.path)}</span>'
                    f'<span role="cell" data-col="duration">{escape(entry.duration_ms)}</span>'
                    f'</div>')
    cls = "ln err" if fields.get("e") == "1" else "ln"
    return f'<div class="{cls}" data-replica="{escape(replica)}">{tag}{escape(text)}</div>'


# --------------------------------------------------------------------------- the tailer

@dataclass
class _Tail:
    """One session being served: its cancel event and its threads (one per replica)."""

    sid: str
    cancel: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


@dataclass(frozen=True)
class ReplicaTarget:
    tag: str
    container: str
    host: str
    port: int
    user: str
    key: str = field(repr=False)
    fingerprint: str


def replica_targets(service_id: int) -> list[ReplicaTarget]:
    """The running replicas of a service with what SSH needs (plain values for threads)."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import ServiceReplica
    from app.models.enums import ReplicaStatus
    rows = db.session.execute(sa.select(ServiceReplica).where(
        ServiceReplica.service_id == service_id,
        ServiceReplica.status == ReplicaStatus.RUNNING)
        .order_by(ServiceReplica.id)).scalars().all()
    out = []
    for r in rows:
        s = r.server
        host = s.public_ip or s.private_ip
        key = s.organisation.management_key_private if s.organisation else None
        if host and key and s.host_key_fingerprint:
            out.append(ReplicaTarget(r.container_name, r.container_name, host,
                                     int(s.ssh_port or 22), s.management_user, key,
                                     s.host_key_fingerprint))
    return out


class Tailer:
    """Serves every live-log session of the installation (see the module docstring)."""

    def __init__(self, client, *, idle_exit: float | None = None, poll: float = POLL):
        from flask import current_app

        from app.remote import Connection, ConnectionPool
        # The installation's Redis prefix, captured now: the replica threads have no app context.
        self.config = dict(current_app.config)
        self.client = client
        self.idle_exit = IDLE_EXIT if idle_exit is None else idle_exit
        self.poll = poll
        self.pool = ConnectionPool(factory=Connection, connect_timeout=10, keepalive=10,
                                   dead_peer_timeout=30)
        self.tails: dict[str, _Tail] = {}
        self.ending: list[threading.Thread] = []
        self.stop = threading.Event()

    # ---------------------------------------------------------------- one session
    def _note(self, sid: str, tag: str, text: str) -> None:
        self._add(sid, {"k": "note", "r": tag, "t": text})

    def _add(self, sid: str, fields: dict[str, str]) -> None:
        key = stream_key(sid, self.config)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL)
        pipe.execute()

    def _run_replica(self, sid: str, target: ReplicaTarget, since: str | None, tail: int,
                     cancel: threading.Event) -> None:
        from app.remote import CommandCancelled, RemoteError
        from app.shell import docker_logs

        def on_line(stream: str, line: str) -> None:
            fields = {"k": "line", "r": target.tag, "t": line}
            if stream == "stderr":
                fields["e"] = "1"
            self._add(sid, fields)

        try:
            conn = self.pool.get(target.host, target.port, target.user, target.key,
                                 target.fingerprint)
            res = conn.run(docker_logs(target.container, tail=tail, since=since or None),
                           on_line=on_line, cancel=cancel, pty=False)
            if not cancel.is_set():
                self._note(sid, target.tag, f"-- the log ended (docker logs exited "
                                            f"{res.exit_code}: the container stopped?)")
        except CommandCancelled:
            pass
        except RemoteError as exc:
            if not cancel.is_set():
                self._note(sid, target.tag, f"-- cannot follow this replica: "
                                            f"{type(exc).__name__}")
            log.warning("logs: %s: %s", target.tag, type(exc).__name__)
        except Exception:  # noqa: BLE001 - a broken thread must not end the others
            log.warning("logs: tail of %s failed", target.tag, exc_info=True)

    def _start(self, sid: str) -> None:
        raw = self.client.hgetall(session_key(sid, self.config))
        info = _decode(raw) if raw else {}
        t = _Tail(sid)
        self.tails[sid] = t
        if not info.get("service_id", "").isdigit():
            return
        from app.extensions import db
        try:
            targets = replica_targets(int(info["service_id"]))
        finally:
            db.session.remove()
        if not targets:
            self._note(sid, "", "-- no running replica to follow")
        since = info.get("since") or None
        tail = int(info.get("tail") or DEFAULT_TAIL)
        for target in targets:
            th = threading.Thread(target=self._run_replica,
                                  args=(sid, target, since, tail, t.cancel),
                                  name=f"keystone-logs-{sid}", daemon=True)
            th.start()
            t.threads.append(th)

    def _end(self, sid: str) -> None:
        t = self.tails.pop(sid, None)
        if t is not None:
            t.cancel.set()  # each thread kills its remote process group, then closes its channel
            self.ending.extend(t.threads)
        self.ending = [th for th in self.ending if th.is_alive()]
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(sessions_key(self.config), sid)
        pipe.delete(session_key(sid, self.config))
        pipe.execute()

    # ---------------------------------------------------------------- the loop
    def pass_once(self) -> int:
        """Start sessions with a lease, end those without one. Returns how many run."""
        self.client.set(tailer_key(self.config), "running", ex=TAILER_TTL)
        members = {m.decode() if isinstance(m, bytes) else m
                   for m in self.client.smembers(sessions_key(self.config))}
        for sid in list(self.tails):
            if sid not in members:
                self._end(sid)
        if members:
            pipe = self.client.pipeline(transaction=False)
            ordered = sorted(members)
            for sid in ordered:
                pipe.exists(lease_key(sid, self.config))
            alive = dict(zip(ordered, pipe.execute()))
            for sid, has_lease in alive.items():
                if not has_lease:
                    self._end(sid)
                elif sid not in self.tails:
                    self._start(sid)
        return len(self.tails)

    def serve(self) -> dict:
        idle_since = time.monotonic()
        served = 0
        gave_up_key = False
        try:
            while not self.stop.is_set():
                before = set(self.tails)
                running = self.pass_once()
                served += len(set(self.tails) - before)
                if running:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= self.idle_exit:
                    # Give the key up, then look once more: a session opened in between
                    # saw our key and enqueued nothing, so it is ours to serve.
                    self.client.delete(tailer_key(self.config))
                    if self.client.scard(sessions_key(self.config)):
                        self.client.set(tailer_key(self.config), "running", ex=TAILER_TTL)
                        idle_since = time.monotonic()
                        continue
                    gave_up_key = True
                    break
                self.stop.wait(self.poll)
        finally:
            for sid in list(self.tails):
                self._end(sid)
            for th in self.ending:
                th.join(timeout=15)
            self.pool.close()
            if not gave_up_key:
                self.client.delete(tailer_key(self.config))
        return {"sessions": served}

    # ---------------------------------------------------------------- for tests
    def open_channels(self) -> int:
        """SSH channels open on the tailer's pooled connections (0 when nothing is followed)."""
        return sum(conn.open_channels for conn in self.pool.connections())
