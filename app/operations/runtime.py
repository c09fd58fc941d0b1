"""Per-job state an operation tree shares: :class:`Runtime` and its :class:`LogRecorder`.

One Runtime per RQ job holds the SSH connection pool (one connection per server, reused
by every step and child), the set of secret values to redact, the log recorder and the
heartbeat thread that writes ``heartbeat_at``, reads cancel requests and enforces
deadlines.

Redaction happens in exactly one place, :meth:`LogRecorder.line`: every output line,
every line of our own, every error message goes through it before it reaches Redis or
the database.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import sqlalchemy as sa

from app import shell
from app.extensions import db
from app.models import Operation, OperationStep, Server
from app.models.base import utcnow
from app.models.enums import OperationStatus
from app.operations import logstream, terminal
from app.operations.errors import StepFailed
from app.remote import Connection, ConnectionPool

if TYPE_CHECKING:
    from app.operations.context import OperationContext

log = logging.getLogger(__name__)
S = OperationStatus

HEARTBEAT_INTERVAL = 3.0      # seconds between heartbeat_at writes
CANCEL_POLL_INTERVAL = 1.0    # seconds between cancel_requested_at reads

# Tests and the benchmark may swap the SSH connection class (e.g. app.remote's
# RecordingConnection); None means app.remote.Connection.
connection_factory: Callable[..., Any] | None = None


# --------------------------------------------------------------------------- recorder

class LogRecorder:
    """Redacts each line, appends it to the Redis stream at once and to the step row in batches."""

    FLUSH_INTERVAL = 1.0
    MAX_BUFFERED = 20000

    background = False  # True while a heartbeat thread flushes for us

    def __init__(self, runtime: "Runtime"):
        self.runtime = runtime
        self._buffers: dict[int, list[str]] = {}
        self._pending = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._redis_warned = False

    def line(self, ctx: "OperationContext", step_id: int, text: str, stderr: bool = False) -> str:
        cleaned = terminal.clean(text.rstrip("\r\n"))
        if cleaned is None:
            return ""  # cursor movement or a known harmless warning: not a log line
        text = self.runtime.redact(cleaned)
        try:
            ctx.stream.line(step_id, text, stderr)
        except Exception:  # Redis down: the database copy still gets the line
            if not self._redis_warned:
                self._redis_warned = True
                log.warning("log stream unavailable; lines go to the database only", exc_info=True)
        with self._lock:
            self._buffers.setdefault(step_id, []).append(text)
            self._pending += 1
            # The heartbeat thread writes batches every second, off this thread, so a
            # database commit never delays reading the next line; only a flood that
            # outgrows the buffer is written from here.
            due = self._pending >= self.MAX_BUFFERED or (
                not self.background and time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL)
        if due:
            self.flush()
        return text

    def flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                buffers, self._buffers, self._pending = self._buffers, {}, 0
                self._last_flush = time.monotonic()
            if not buffers:
                return
            with self.runtime.engine.begin() as conn:
                for step_id, lines in buffers.items():
                    chunk = "\n".join(lines) + "\n"
                    conn.execute(sa.update(OperationStep.__table__)
                                 .where(OperationStep.__table__.c.id == step_id)
                                 .values(logs=OperationStep.__table__.c.logs + chunk))


# --------------------------------------------------------------------------- runtime

class Runtime:
    """Per-job state shared by an operation and its children."""

    def __init__(self, app, worker_name: str | None = None):
        self.app = app
        self.engine = db.engine
        self.redis = logstream.redis_client(app.config["REDIS_URL"])
        self.worker_name = worker_name
        self.recorder = LogRecorder(self)
        self.contexts: dict[int, OperationContext] = {}
        self._secrets: set[str] = set()
        self._secrets_lock = threading.Lock()
        self._pool = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- secrets -----------------------------------------------------------
    def add_secret(self, value: "str | shell.Secret | None") -> None:
        if isinstance(value, shell.Secret):
            value = value.value
        if value:
            with self._secrets_lock:
                self._secrets.add(str(value))

    def redact(self, text: str | None) -> str:
        if not text:
            return text or ""
        with self._secrets_lock:
            secrets = list(self._secrets)
        return shell.redact(text, secrets) if secrets else text

    # -- connections -------------------------------------------------------
    @property
    def pool(self):
        if self._pool is None:
            cfg = self.app.config
            self._pool = ConnectionPool(
                factory=connection_factory or Connection,
                connect_timeout=float(cfg.get("KEYSTONE_SSH_CONNECT_TIMEOUT", 10)),
                keepalive=int(cfg.get("KEYSTONE_SSH_KEEPALIVE", 5)),
                dead_peer_timeout=float(cfg.get("KEYSTONE_SSH_DEAD_PEER_TIMEOUT", 20)))
        return self._pool

    @property
    def handshakes(self) -> int:
        return self._pool.handshakes if self._pool is not None else 0

    def connection(self, server: Server, login: str | None = None):
        """The pooled connection to ``server``; pins its host key on first contact."""
        host = server.public_ip or server.private_ip
        if not host:
            raise StepFailed(f"Server {server.name} has no address to connect to.")
        if login == "bootstrap":
            user = server.bootstrap_user or "root"
            key = server.bootstrap_private_key or server.organisation.management_key_private
        else:
            user = server.management_user
            key = server.organisation.management_key_private
        if not key:
            raise StepFailed(f"No SSH key is available to reach server {server.name}.")
        self.add_secret(key)
        pinned = server.host_key_fingerprint
        db.session.commit()  # never hold a write transaction across network I/O
        conn = self.pool.get(host, int(server.ssh_port or 22), user, key, pinned)
        if pinned is None and conn.fingerprint:
            db.session.execute(sa.update(Server).where(Server.id == server.id,
                                                       Server.host_key_fingerprint.is_(None))
                               .values(host_key_fingerprint=conn.fingerprint))
            db.session.commit()
            db.session.refresh(server)
        return conn

    def in_thread(self, work: Callable[..., Any]) -> Callable[..., Any]:
        """``work`` wrapped for a thread of its own: an app context and a database session
        of its own, removed when it returns (rows are loaded by id in the thread)."""
        app = self.app

        def wrapped(*args):
            with app.app_context():
                try:
                    return work(*args)
                finally:
                    db.session.remove()
        return wrapped

    def warm_up(self, server_ids) -> None:
        """Open the connections to these servers in the background, one thread each, so the
        first command to each does not wait for a handshake (a deploy asks while it resolves
        its branch). A failure is left for the first real use to meet and report; that use
        waits for a handshake still in flight rather than starting a second one."""
        def connect(server_id: int) -> None:
            try:
                server = db.session.get(Server, server_id)
                if server is not None:
                    self.connection(server)
            except Exception as exc:
                log.info("warming up the connection to server %s: %s", server_id,
                         type(exc).__name__)

        for server_id in server_ids:
            threading.Thread(target=self.in_thread(connect), args=(int(server_id),), daemon=True,
                             name=f"keystone-ssh-warm-{int(server_id)}").start()

    # -- heartbeat ---------------------------------------------------------
    def start_heartbeat(self) -> None:
        self.recorder.background = True
        self._thread = threading.Thread(target=self._beat, name="keystone-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.recorder.background = False

    def _beat(self) -> None:
        table = Operation.__table__
        last_beat = 0.0
        while not self._stop.wait(CANCEL_POLL_INTERVAL):
            try:
                contexts = dict(self.contexts)
                if not contexts:
                    continue
                now_mono = time.monotonic()
                with self.engine.begin() as conn:
                    if now_mono - last_beat >= HEARTBEAT_INTERVAL:
                        conn.execute(sa.update(table).where(table.c.id.in_(list(contexts)),
                                                            table.c.status == S.RUNNING.value)
                                     .values(heartbeat_at=utcnow()))
                        last_beat = now_mono
                    rows = conn.execute(sa.select(table.c.id, table.c.cancel_requested_at,
                                                  table.c.status)
                                        .where(table.c.id.in_(list(contexts)))).all()
                for op_id, cancel_at, status in rows:
                    ctx = contexts.get(op_id)
                    if ctx is None:
                        continue
                    if cancel_at is not None:
                        ctx.request_cancel("cancel")
                    elif S(status) is not S.RUNNING:
                        # Ended under us (the reaper judged this worker dead): stop working.
                        ctx.request_cancel("interrupted")
                for ctx in contexts.values():
                    if ctx.deadline is not None and now_mono >= ctx.deadline:
                        ctx.request_cancel("timeout")
                self.recorder.flush_if_due()
            except Exception:
                log.warning("heartbeat iteration failed", exc_info=True)

    def close(self) -> None:
        self.stop_heartbeat()
        try:
            self.recorder.flush()
        finally:
            if self._pool is not None:
                self._pool.close()
