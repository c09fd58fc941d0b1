"""What a handler sees while its operation runs: OperationContext and StepHandle.

One :class:`Runtime` per RQ job holds what the operation tree shares: the SSH
connection pool (one connection per server, reused by every step and child),
the set of secret values to redact, the log recorder and the heartbeat thread.

Redaction happens in exactly one place, :meth:`LogRecorder.line`: every output
line, every line of our own, every error message goes through it before it
reaches Redis or the database.
"""
from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import sqlalchemy as sa
from rq.timeouts import JobTimeoutException

from app import models as m, shell
from app.extensions import db
from app.models import Operation, OperationStep, Server
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus, StepStatus
from app.operations import lifecycle, logstream, terminal
from app.operations.errors import (ChildFailed, OperationCancelled, OperationError,
                                   OperationTimedOut, StepFailed)
from app.operations.registry import handler_for, timeout_for
from app.remote import (NO_EXIT_STATUS, CommandCancelled, CommandTimeout, Connection,
                        ConnectionLost, ConnectionPool, HostKeyMismatch, RemoteError)

if TYPE_CHECKING:
    from app.operations.fanout import Child

log = logging.getLogger(__name__)
S = OperationStatus

HEARTBEAT_INTERVAL = 3.0      # seconds between heartbeat_at writes
CANCEL_POLL_INTERVAL = 1.0    # seconds between cancel_requested_at reads
CLEANUP_MIN_SECONDS = 120     # clean-up steps get at least this long, even after a timeout
SIBLING_FAILED = "sibling_failed"  # cancel reason of children stopped by a failed sibling
CHILD_LOCK_WAIT = 600         # how long a child waits for a lock held by another tree
STDERR_KEEP_LINES = 200       # a step keeps the last lines its commands wrote to stderr...
STDERR_KEEP_CHARS = 16000     # ...at most this much of them (error_logs)

# Tests and the benchmark may swap the SSH connection class (e.g. app.remote's
# RecordingConnection); None means app.remote.Connection.
connection_factory: Callable[..., Any] | None = None


def _target_models() -> dict[str, type]:
    return {"server": m.Server, "environment": m.Environment, "service": m.Service,
            "service_slice": m.ServiceSlice, "slice": m.ServiceSlice,
            "replica": m.ServiceReplica, "service_replica": m.ServiceReplica,
            "application": m.Application, "organisation": m.Organisation,
            "registry": m.Registry, "provider": m.Provider}


def redact_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v, redact) for v in value]
    return value


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


# --------------------------------------------------------------------------- context

class OperationContext:
    """Handed to a handler: its operation, target, params, steps, children, cancel."""

    def __init__(self, runtime: Runtime, operation: Operation,
                 parent: "OperationContext | None" = None):
        self.runtime = runtime
        self.operation = operation
        self.id = operation.id
        self.hash = operation.hash
        self.kind = OperationKind(operation.kind)
        self.parent = parent
        # Plain values a child created in another thread needs (never this ORM row: it
        # belongs to the session of the thread that made this context).
        self.organisation_id: int = operation.organisation_id
        self.created_by_id: int | None = operation.created_by_id
        self._order_lock = threading.Lock()
        self.params: dict = dict(operation.params or {})
        self.result: dict = dict(operation.result or {})
        self.cancel_event = threading.Event()
        self.cancel_reason: str | None = None
        self._cleanup_event = threading.Event()
        self._in_cleanup = False
        self._cleanups: list[Callable] = []
        self.failed_children: list[int] = []
        self.ancestor_ids: list[int] = parent.tree_ids if parent else []
        self.stream = logstream.LogStream(runtime.redis, [self.id, *self.ancestor_ids])
        self._next_order = (db.session.execute(
            sa.select(sa.func.max(OperationStep.order)).where(OperationStep.operation_id == self.id)
        ).scalar() or 0) + 1
        timeout = int(operation.timeout_seconds or timeout_for(self.kind))
        self.deadline: float | None = time.monotonic() + timeout
        self.timeout_seconds = timeout
        self._target = None

    # -- identity ---------------------------------------------------------
    @property
    def tree_ids(self) -> list[int]:
        return [self.id, *self.ancestor_ids]

    @property
    def target(self):
        if self._target is None:
            model = _target_models().get(self.operation.target_type)
            if model is not None:
                self._target = db.session.get(model, self.operation.target_id)
                if self._target is not None and self.operation.target_type == "environment":
                    # Whatever this operation prints, the environment's secrets stay masked.
                    # (Imported here: app.deploys.values -> app.attachments -> the engine.)
                    from app.deploys.values import environment_secrets
                    for value in environment_secrets(self._target):
                        self.runtime.add_secret(value)
        return self._target

    def workdir(self) -> str:
        """This operation's working directory on servers."""
        return f"/home/keystone/operations/{self.hash}"

    def redact(self, text: str) -> str:
        return self.runtime.redact(text)

    def secret(self, value: str, name: str | None = None) -> shell.Secret:
        """Wrap ``value`` as a Secret and mask it in everything recorded from now on."""
        self.runtime.add_secret(value)
        return value if isinstance(value, shell.Secret) else shell.Secret(value, name)

    # -- cancel -----------------------------------------------------------
    def request_cancel(self, reason: str) -> None:
        if self.cancel_event.is_set():
            return
        self.cancel_reason = reason
        self.cancel_event.set()
        if reason == "interrupted":
            self._cleanup_event.set()
        for ctx in list(self.runtime.contexts.values()):
            if self.id in ctx.ancestor_ids:
                ctx.request_cancel(reason)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise if the operation was cancelled or ran out of time (no-op during clean-up)."""
        if self._in_cleanup or not self.cancel_event.is_set():
            return
        raise self._cancel_exception()

    def _cancel_exception(self) -> Exception:
        if self.cancel_reason == "timeout":
            return OperationTimedOut(f"The operation exceeded its time limit of {self.timeout_seconds}s "
                                     f"and was stopped.")
        if self.cancel_reason == "interrupted":
            return OperationCancelled("The operation was ended elsewhere (interrupted) and stopped.")
        if self.cancel_reason == SIBLING_FAILED:
            return OperationCancelled("Stopped: the same work failed on another server, so "
                                      "every server's new work is rolled back.")
        return OperationCancelled("Cancelled by request.")

    @property
    def active_cancel_event(self) -> threading.Event:
        return self._cleanup_event if self._in_cleanup else self.cancel_event

    def remaining_seconds(self) -> float | None:
        if self._in_cleanup:
            return max(CLEANUP_MIN_SECONDS, (self.deadline or 0) - time.monotonic())
        return None if self.deadline is None else max(1.0, self.deadline - time.monotonic())

    def on_cleanup(self, fn: Callable) -> Callable:
        """Run ``fn()`` (or ``fn(ctx)``) after the handler: on success, failure and cancel."""
        self._cleanups.append(fn)
        return fn

    # -- steps ------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name: str, server: Server | int | None = None, *,
             secrets: dict[str, str] | None = None, login: str | None = None,
             cleanup: bool | None = None) -> Iterator["StepHandle"]:
        """A step: a row with status, masked script, logs and duration.

        Exceptions inside the block fail the step (and propagate as
        :class:`StepFailed`, :class:`OperationCancelled` or
        :class:`OperationTimedOut`); an ordinary exit succeeds it, or marks it
        skipped if :meth:`StepHandle.unchanged` was called.
        """
        self.check_cancelled()
        if isinstance(server, int):
            server = db.session.get(Server, server)
        for value in (secrets or {}).values():
            self.runtime.add_secret(value)
        now = utcnow()
        with self._order_lock:  # steps of one operation may start in several threads
            order = self._next_order
            self._next_order += 1
        row = OperationStep(operation_id=self.id, name=name[:255], order=order,
                            status=StepStatus.RUNNING, started_at=now,
                            server_id=server.id if server is not None else None,
                            is_cleanup=self._in_cleanup if cleanup is None else cleanup,
                            secrets=dict(secrets) if secrets else None, logs="", error_logs="")
        db.session.add(row)
        db.session.commit()
        handle = StepHandle(self, row, server, login)
        self._publish_step(row.id, StepStatus.RUNNING)
        handle.log(f"==> {name}")
        try:
            yield handle
        except BaseException as exc:  # noqa: B902 - classify, record, re-raise
            status, message, to_raise = self._classify(exc, name)
            handle._finish(status, message)
            if to_raise is exc:
                raise
            raise to_raise from None
        else:
            handle._finish(StepStatus.SKIPPED if handle.skipped else StepStatus.SUCCEEDED, None)

    def _classify(self, exc: BaseException, step_name: str):
        red = self.runtime.redact
        if isinstance(exc, (OperationCancelled, CommandCancelled)) or (
                isinstance(exc, OperationTimedOut)):
            err = self._cancel_exception() if self.cancel_event.is_set() else (
                exc if isinstance(exc, OperationError) else OperationCancelled(red(str(exc))))
            status = StepStatus.FAILED if isinstance(err, OperationTimedOut) else StepStatus.CANCELLED
            return status, str(err), err
        if isinstance(exc, CommandTimeout) and self.deadline is not None and (
                time.monotonic() >= self.deadline - 1.0) and not self._in_cleanup:
            # The command's timeout was the operation's remaining time: the op ran out.
            self.cancel_reason = self.cancel_reason or "timeout"
            err = OperationTimedOut(f"The operation exceeded its time limit of "
                                    f"{self.timeout_seconds}s and was stopped.")
            return StepStatus.FAILED, str(err), err
        if isinstance(exc, JobTimeoutException):
            err = OperationTimedOut(f"The job exceeded its time limit during step '{step_name}'.")
            return StepStatus.FAILED, str(err), err
        if isinstance(exc, StepFailed):
            return StepStatus.FAILED, red(str(exc)), exc
        if isinstance(exc, ChildFailed):
            return StepStatus.FAILED, red(str(exc)), exc
        if isinstance(exc, ConnectionLost):
            msg = red(f"Step '{step_name}' failed: the SSH connection was lost. {exc}")
            return StepStatus.FAILED, msg, StepFailed(msg)
        if isinstance(exc, HostKeyMismatch):
            msg = red(str(exc))
            return StepStatus.FAILED, msg, StepFailed(msg)
        if isinstance(exc, (CommandTimeout, RemoteError)):
            msg = red(f"Step '{step_name}' failed: {exc}")
            return StepStatus.FAILED, msg, StepFailed(msg)
        if isinstance(exc, Exception):
            msg = red(f"Step '{step_name}' failed: {type(exc).__name__}: {exc}")
            return StepStatus.FAILED, msg, StepFailed(msg)
        return StepStatus.INTERRUPTED, f"Step '{step_name}' was interrupted.", exc

    def _publish_step(self, step_id: int, status: StepStatus) -> None:
        try:
            self.stream.step(step_id, StepStatus(status).value)
        except Exception:
            log.warning("could not publish step %s", step_id, exc_info=True)

    # -- children -----------------------------------------------------------
    def run_child(self, kind: OperationKind, target_type: str, target_id: int,
                  handler: Callable | None = None, *, params: dict | None = None,
                  lock_keys=(), summary: str | None = None, server_id: int | None = None,
                  on_start: Callable[["OperationContext"], None] | None = None) -> Operation:
        """Run a child operation inline (same worker, same SSH connections).

        The child gets its own row, steps and stream (its lines also appear in
        this operation's stream). It takes the lock keys its ancestors do not
        already hold, waiting for them while another operation holds them. A
        child that does not succeed raises :class:`ChildFailed` (the parent
        fails even if the handler catches it); returns the finished child row.
        ``server_id`` names the one server the child works on (``params["server_id"]``:
        the operation page groups per-server children into columns); ``on_start`` gets
        the child's context before its handler runs. Safe to call from several threads
        at once, each in its own app context (:meth:`run_children` does).
        """
        self.check_cancelled()
        kind = OperationKind(kind)
        remaining = self.remaining_seconds() or timeout_for(kind)
        params = dict(params or {})
        if server_id is not None:
            params["server_id"] = int(server_id)
        child = Operation(organisation_id=self.organisation_id, parent_id=self.id,
                          kind=kind, target_type=target_type, target_id=int(target_id),
                          params=params, lock_keys=sorted(set(lock_keys)),
                          summary=summary[:255] if summary else None,
                          created_by_id=self.created_by_id,
                          timeout_seconds=int(min(timeout_for(kind), remaining)))
        db.session.add(child)
        db.session.commit()
        logstream.clear(child.id)
        inherited = set()
        for op_id in self.tree_ids:
            inherited.update(db.session.get(Operation, op_id).lock_keys or ())
        waited_since = time.monotonic()
        announced = None
        while True:
            outcome, key, holder = lifecycle.claim(child, self.runtime.worker_name, inherited)
            if outcome != "conflict":
                break
            if self.cancel_event.is_set():
                lifecycle.finish(child.id, S.CANCELLED, "Cancelled while waiting for a lock.",
                                 dispatch=False)
                break
            if time.monotonic() - waited_since > CHILD_LOCK_WAIT:
                lifecycle.finish(child.id, S.FAILED, lifecycle.conflict_message(key, holder)
                                 + f" Waited {CHILD_LOCK_WAIT}s.", dispatch=False)
                break
            if holder is not None and announced != holder.id:
                announced = holder.id
                self.runtime.recorder.line(self, 0, f"waiting: {lifecycle.conflict_message(key, holder)}")
            time.sleep(1.0)
        db.session.refresh(child)
        if S(child.status) is S.RUNNING:
            child_ctx = OperationContext(self.runtime, child, parent=self)
            if on_start is not None:
                on_start(child_ctx)
            child_ctx.execute(handler or handler_for(kind))
            db.session.refresh(child)
        status = S(child.status)
        if status is not S.SUCCEEDED:
            if status is S.CANCELLED and self.cancel_event.is_set():
                raise self._cancel_exception()
            self.failed_children.append(child.id)
            raise ChildFailed(f"Child operation #{child.id} ({kind.value.replace('_', ' ')}) "
                              f"{status.value}: {child.error or 'no error recorded'}",
                              child.id, status.value)
        return child

    def run_children(self, children: "Sequence[Child]", *,
                     limit: int | None = None) -> list[int]:
        """Run child operations side by side (per-server work), at most ``limit`` at once.

        Each child runs :meth:`run_child` in its own thread, inside its own app context
        (Flask-SQLAlchemy scopes the session to it: one database session per thread),
        on the runtime's shared SSH pool (one connection per server) and log recorder.
        Cancel reaches every child through the runtime's contexts; the first child
        that fails stops the others (cancel reason :data:`SIBLING_FAILED`) and starts
        no new one, and its :class:`ChildFailed` is raised here once all have ended, so
        the caller's clean-up sees every child finished. ``limit`` defaults to the
        ``DEPLOY_CONCURRENCY`` setting. Returns the ids of the children, in order.
        """
        from app.config import DEPLOY_CONCURRENCY_DEFAULT
        from app.operations.fanout import run_limited
        self.check_cancelled()
        app = self.runtime.app
        limit = int(limit or app.config.get("DEPLOY_CONCURRENCY") or DEPLOY_CONCURRENCY_DEFAULT)
        started: list[OperationContext] = []
        started_lock = threading.Lock()
        failed = threading.Event()
        db.session.commit()  # nothing of this thread's session stays open across the wait

        def register(child_ctx: OperationContext) -> None:
            with started_lock:
                started.append(child_ctx)
            if failed.is_set():
                child_ctx.request_cancel(SIBLING_FAILED)

        def stop_siblings(_outcome=None, reason: str = SIBLING_FAILED) -> None:
            failed.set()
            with started_lock:
                running = list(started)
            for child_ctx in running:
                child_ctx.request_cancel(reason)

        def work(spec) -> int:
            with app.app_context():
                try:
                    row = self.run_child(spec.kind, spec.target_type, spec.target_id,
                                         spec.handler, params=spec.params,
                                         lock_keys=spec.lock_keys, summary=spec.summary,
                                         server_id=spec.server_id, on_start=register)
                    return row.id
                finally:
                    db.session.remove()

        outcomes = run_limited(list(children), work, max(1, limit), on_failure=stop_siblings,
                               on_abort=lambda: stop_siblings(reason="interrupted"),
                               name=f"op{self.id}")
        failures = sorted((o for o in outcomes if o.error is not None),
                          key=lambda o: o.failed_order or 0)
        if self.cancel_event.is_set():
            raise self._cancel_exception()
        if failures:
            raise failures[0].error
        return [o.result for o in outcomes]

    def in_parallel(self, items: Sequence, work: Callable, *, limit: int | None = None) -> list:
        """``work(item)`` for every item in threads of their own (steps of THIS operation,
        e.g. one "Pull image on X" step per server), at most ``limit`` at once.

        Each thread has its own app context and database session: ``work`` loads its
        rows by id. After a failure no new item starts and the running ones finish
        (their commands are bounded); the first failure is raised once all ended.
        Returns the results in the items' order.
        """
        from app.config import DEPLOY_CONCURRENCY_DEFAULT
        from app.operations.fanout import run_limited
        self.check_cancelled()
        app = self.runtime.app
        limit = int(limit or app.config.get("DEPLOY_CONCURRENCY") or DEPLOY_CONCURRENCY_DEFAULT)
        db.session.commit()

        def one(item):
            with app.app_context():
                try:
                    return work(item)
                finally:
                    db.session.remove()

        outcomes = run_limited(list(items), one, max(1, limit), name=f"op{self.id}")
        failures = sorted((o for o in outcomes if o.error is not None),
                          key=lambda o: o.failed_order or 0)
        if failures:
            raise failures[0].error
        self.check_cancelled()
        return [o.result for o in outcomes]

    # -- running ------------------------------------------------------------
    def execute(self, handler: Callable | None) -> S:
        """Run the handler, then clean-ups; end the operation. Never raises."""
        runtime = self.runtime
        runtime.contexts[self.id] = self
        if self.parent is not None and self.parent.cancelled and not self.cancelled:
            # Cancelled while this child was being created (in another thread): the
            # parent's request_cancel did not see it registered yet.
            self.request_cancel(self.parent.cancel_reason or "cancel")
        try:
            self.stream.status(S.RUNNING.value)
        except Exception:
            log.warning("log stream unavailable", exc_info=True)
        status, error = S.SUCCEEDED, None
        try:
            if handler is None:
                raise OperationError(f"No handler is registered for {self.kind.value} operations.")
            handler(self)
        except OperationTimedOut as exc:
            status, error = S.FAILED, str(exc)
        except OperationCancelled as exc:
            status = S.INTERRUPTED if self.cancel_reason == "interrupted" else S.CANCELLED
            error = str(exc)
        except (StepFailed, ChildFailed, OperationError) as exc:
            status, error = S.FAILED, str(exc)
        except Exception as exc:
            log.warning("operation %s: handler raised %s", self.id, type(exc).__name__)
            status, error = S.FAILED, f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # SystemExit / KeyboardInterrupt in the horse
            status, error = S.INTERRUPTED, f"The worker stopped ({type(exc).__name__})."
            self._end(status, error)
            raise
        if self.failed_children and status is S.SUCCEEDED:
            status, error = S.FAILED, f"Child operation(s) {', '.join(f'#{i}' for i in self.failed_children)} did not succeed."
        cleanup_error = self._run_cleanups()
        if cleanup_error and status is S.SUCCEEDED:
            status, error = S.FAILED, cleanup_error
        elif cleanup_error:
            error = f"{error} Clean-up also failed: {cleanup_error}"
        self._end(status, error)
        return status

    def _run_cleanups(self) -> str | None:
        if not self._cleanups:
            return None
        self._in_cleanup = True
        errors = []
        for fn in reversed(self._cleanups):
            try:
                params = inspect.signature(fn).parameters
                fn(self) if len(params) >= 1 else fn()
            except BaseException as exc:  # noqa: B902 - clean-ups never stop the others
                if not isinstance(exc, Exception):
                    raise
                errors.append(str(exc) if isinstance(exc, OperationError)
                              else f"{type(exc).__name__}: {exc}")
        self._in_cleanup = False
        return self.runtime.redact("; ".join(errors)) if errors else None

    def _end(self, status: S, error: str | None) -> None:
        self.runtime.contexts.pop(self.id, None)
        try:
            self.runtime.recorder.flush()
        except Exception:
            log.warning("could not flush logs of operation %s", self.id, exc_info=True)
        # A parent never ends before its children: end any still active (defensive).
        active = db.session.execute(sa.select(Operation.id).where(
            Operation.parent_id == self.id,
            Operation.status.in_([S.PENDING.value, S.QUEUED.value, S.RUNNING.value]))).scalars().all()
        for child_id in active:
            lifecycle.finish(child_id, S.INTERRUPTED if status is S.INTERRUPTED else S.FAILED,
                             "Its parent operation ended first.", dispatch=False)
        result = redact_value(self.result, self.runtime.redact)
        lifecycle.finish(self.id, status, self.runtime.redact(error) if error else None,
                         result=result, dispatch=self.parent is None)


# --------------------------------------------------------------------------- step

class StepHandle:
    """Runs commands and uploads for one step on its server."""

    def __init__(self, ctx: OperationContext, row: OperationStep, server: Server | None,
                 login: str | None):
        self.ctx = ctx
        self.id = row.id
        self.name = row.name
        self.row = row
        self.server = server
        self.login = login
        self.skipped = False
        self.exit_code: int | None = None
        self._scripts: list[str] = []
        self._secrets: dict[str, str] = dict(row.secrets or {})
        # What the step's commands wrote to stderr (redacted), kept apart from the merged log:
        # error_logs holds it, and a failed step shows it first (SPEC 3).
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEEP_LINES)

    def connection(self):
        if self.server is None:
            raise StepFailed(f"Step '{self.name}' has no server to run on.")
        return self.ctx.runtime.connection(self.server, self.login)

    def log(self, text: str) -> None:
        """Record a line of our own (redacted like any output)."""
        for line in str(text).splitlines() or [""]:
            self.ctx.runtime.recorder.line(self.ctx, self.id, line)

    def unchanged(self, message: str | None = None) -> None:
        """Declare an explicit no-op: nothing needed changing (the step ends skipped)."""
        self.skipped = True
        if message:
            self.log(f"unchanged: {message}")

    def secret(self, value: str, name: str | None = None) -> shell.Secret:
        return self.ctx.secret(value, name)

    def _remember(self, command: shell.Command) -> str:
        masked = command.masked()
        for i, value in enumerate(command.secrets()):
            self.ctx.runtime.add_secret(value)
            if value not in self._secrets.values():
                self._secrets[f"s{len(self._secrets) + 1}"] = value
        self._scripts.append(masked)
        db.session.execute(sa.update(OperationStep).where(OperationStep.id == self.id)
                           .values(script="\n".join(self._scripts),
                                   secrets=self._secrets or None)
                           .execution_options(synchronize_session=False))
        db.session.commit()  # also ends any write transaction before network I/O
        return masked

    def run(self, command: shell.Command, *, timeout: float | None = None, check: bool = True,
            pty: bool = True, stdin: bytes | None = None, quiet: bool = False):
        """Run ``command`` on the step's server, streaming its lines; return its Result.

        ``quiet=True`` is for polls repeated many times a second (reading a
        gateway's log until it confirms something): neither the command nor
        its output goes to the step log; the caller logs what it concluded.

        Raises :class:`StepFailed` on a non-zero exit (unless ``check=False``),
        a timeout or a lost connection; :class:`OperationCancelled` on cancel.
        """
        if not isinstance(command, shell.Command):
            raise TypeError("step.run takes an app.shell.Command (build it with app.shell.cmd)")
        self.ctx.check_cancelled()
        masked = self._remember(command)
        conn = self.connection()
        if not quiet:
            self.log(f"$ {masked}")
        remaining = self.ctx.remaining_seconds()
        if timeout is None:
            timeout = remaining
        elif remaining is not None:
            timeout = min(timeout, remaining)
        recorder, ctx, step_id = self.ctx.runtime.recorder, self.ctx, self.id
        stderr_lines = self._stderr

        def on_line(stream: str, line: str) -> None:
            if not check:
                # a probe: "No such container" is one of its expected answers
                expected = terminal.mark_expected(terminal.strip_ansi(line))
                if expected is not None:
                    recorder.line(ctx, step_id, expected)
                    return
            text = recorder.line(ctx, step_id, line, stderr=(stream == "stderr"))
            if stream == "stderr" and text:
                stderr_lines.append(text)

        result = conn.run(command, on_line=None if quiet else on_line, timeout=timeout,
                          cancel=self.ctx.active_cancel_event, pty=pty, stdin=stdin)
        self.exit_code = result.exit_code
        if check and result.exit_code != 0:
            how = ("was killed by a signal" if result.exit_code == NO_EXIT_STATUS
                   else f"exited with {result.exit_code}")
            # What it said last is the reason a reader needs ("No space left on device").
            text = result.stderr if (result.stderr or "").strip() else (result.stdout or "")
            said = [terminal.strip_ansi(ln).strip() for ln in text.splitlines()]
            said = [ln for ln in said if ln][-2:]
            detail = (": " + " | ".join(said))[:400] if said else ""
            raise StepFailed(self.ctx.redact(f"`{masked}` {how}{detail}"), result.exit_code)
        return result

    def put_file(self, remote_path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Upload ``data`` over SFTP and rename it into place atomically."""
        self.ctx.check_cancelled()
        if isinstance(data, str):
            data = data.encode()
        db.session.commit()
        from app.remote import TransferFailed
        try:
            self.connection().put_file(remote_path, data, mode=mode)
        except TransferFailed as exc:
            # SFTP reports a full disk as a bare "Failure": say what the disk says.
            raise StepFailed(self.ctx.redact(f"{exc}{self._space_hint(remote_path, len(data))}")) \
                from None
        self.log(f"uploaded {remote_path} ({len(data)} bytes, mode {mode:04o})")

    def _space_hint(self, remote_path: str, size: int) -> str:
        import posixpath
        directory = posixpath.dirname(remote_path) or "."
        try:
            res = self.connection().run(shell.cmd("df", "-Pk", "--", directory), timeout=30,
                                        pty=False)
            free_kb = int(res.stdout.strip().splitlines()[-1].split()[3])
        except Exception:  # noqa: BLE001 - only a hint; the upload's own error stands
            return ""
        if free_kb * 1024 < size + 64 * 1024:
            return (f" No space left on the server: {free_kb} KB free on the filesystem of "
                    f"{directory} for {size} bytes.")
        return ""

    def mkdir(self, path: str) -> None:
        self.connection().mkdir_p(path)

    def _finish(self, status: StepStatus, message: str | None) -> None:
        if message:
            self.log(f"!! {message}")
        try:
            self.ctx.runtime.recorder.flush()
        except Exception:
            log.warning("could not flush step %s", self.id, exc_info=True)
        values = {"status": StepStatus(status).value, "finished_at": utcnow(),
                  "exit_code": self.exit_code, "updated_at": utcnow()}
        if status is StepStatus.SKIPPED:
            values["changed"] = False
        elif status is StepStatus.SUCCEEDED:
            values["changed"] = True
        stderr = "\n".join(self._stderr)[-STDERR_KEEP_CHARS:]
        if stderr or message:  # stderr first, the reason it failed last
            values["error_logs"] = "\n".join(x for x in (stderr, message) if x)
        if not db.session.is_active:
            db.session.rollback()
        db.session.execute(sa.update(OperationStep).where(OperationStep.id == self.id)
                           .values(**values).execution_options(synchronize_session=False))
        db.session.commit()
        self.ctx._publish_step(self.id, status)
