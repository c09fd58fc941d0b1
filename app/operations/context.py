"""What a handler sees while its operation runs: :class:`OperationContext`.

The context opens steps (:class:`app.operations.step.StepHandle`), runs children (one at
a time or side by side, ``run_children``/``in_parallel``), polls cancel and the deadline,
and ends the operation in a terminal state. What the whole tree shares (the SSH pool,
the secrets to redact, the log recorder, the heartbeat) is its
:class:`app.operations.runtime.Runtime`.
"""
from __future__ import annotations

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
from app.operations import lifecycle, logstream
from app.operations.errors import (ChildFailed, OperationCancelled, OperationError,
                                   OperationTimedOut, StepFailed)
from app.operations.registry import handler_for, timeout_for
from app.operations.runtime import Runtime
from app.operations.step import StepHandle
from app.remote import (CommandCancelled, CommandTimeout, ConnectionLost, HostKeyMismatch,
                        RemoteError)

if TYPE_CHECKING:
    from app.operations.fanout import Child

log = logging.getLogger(__name__)
S = OperationStatus

CLEANUP_MIN_SECONDS = 120     # clean-up steps get at least this long, even after a timeout
SIBLING_FAILED = "sibling_failed"  # cancel reason of children stopped by a failed sibling
CHILD_LOCK_WAIT = 600         # how long a child waits for a lock held by another tree


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
            return self.run_child(spec.kind, spec.target_type, spec.target_id, spec.handler,
                                  params=spec.params, lock_keys=spec.lock_keys,
                                  summary=spec.summary, server_id=spec.server_id,
                                  on_start=register).id

        outcomes = run_limited(list(children), self.runtime.in_thread(work), max(1, limit),
                               on_failure=stop_siblings,
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
        outcomes = run_limited(list(items), self.runtime.in_thread(work), max(1, limit),
                               name=f"op{self.id}")
        failures = sorted((o for o in outcomes if o.error is not None),
                          key=lambda o: o.failed_order or 0)
        if failures:
            raise failures[0].error
        self.check_cancelled()
        return [o.result for o in outcomes]

    def in_background(self, work: Callable[[], object], *, name: str = "background"):
        """Start ``work()`` in a thread of its own (steps of THIS operation, with its own app
        context and database session: ``work`` loads its rows by id) and return its
        :class:`app.operations.fanout.Background` at once. The caller must ``join`` it
        before the operation ends, whatever happens."""
        from app.operations.fanout import Background
        self.check_cancelled()
        db.session.commit()
        return Background(self.runtime.in_thread(work), name=f"op{self.id}-{name}")

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
