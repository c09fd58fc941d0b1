"""Starting, queueing, claiming, finishing and cancelling operations.

Locks are rows: ``OperationLock.key`` is unique, and the rows are inserted in
the same transaction that turns the operation ``running`` (a compare-and-set
UPDATE ... WHERE status IN ('pending', 'queued')). A concurrent claim of the
same key fails on the unique index, so the database, not convention, ensures
at most one running operation per lock key. The loser goes back to
``queued`` and is dispatched when the holder ends.

Queued operations carry no RQ job: :func:`dispatch_queued` (run whenever an
operation ends, and by the reaper every few seconds) enqueues the oldest
queued operation whose keys are free, first come first served.
"""
from __future__ import annotations

import logging
import secrets as _secrets
from typing import Iterable

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from app import audit
from app.extensions import db
from app.models import Operation, OperationLock, OperationStep
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus, StepStatus
from app.operations import logstream
from app.operations.errors import OperationError, OperationLocked
from app.operations.registry import JOB_TIMEOUT_GRACE, timeout_for
from app.operations.state import ACTIVE, NOT_STARTED, step_status_for

log = logging.getLogger(__name__)

S = OperationStatus
JOB_FUNCTION = "app.jobs.run_operation"


# --------------------------------------------------------------------------- locks

def describe_key(key: str) -> str:
    kind, _, ident = key.partition(":")
    return f"{kind.replace('_', ' ')} {ident}".strip()


def describe_operation(op: Operation) -> str:
    return f"operation #{op.id} ({OperationKind(op.kind).value.replace('_', ' ')}, {S(op.status).value})"


def lock_holders(keys: Iterable[str]) -> dict[str, Operation]:
    """key -> the operation holding it (a row in operation_locks)."""
    keys = list(keys)
    if not keys:
        return {}
    rows = db.session.execute(
        sa.select(OperationLock.key, Operation).join(Operation, Operation.id == OperationLock.operation_id)
        .where(OperationLock.key.in_(keys))).all()
    return {key: op for key, op in rows}


def _active_claims(exclude_id: int | None = None) -> list[Operation]:
    """Active operations (pending, queued, running) that name lock keys, oldest first."""
    ops = db.session.execute(
        sa.select(Operation).where(Operation.status.in_([s.value for s in ACTIVE]))
        .order_by(Operation.id)).scalars().all()
    return [op for op in ops if op.lock_keys and op.id != exclude_id]


def blocking_operation(keys: Iterable[str], exclude_id: int | None = None) \
        -> tuple[str, Operation] | None:
    """The first active operation that needs one of ``keys`` (key, operation)."""
    wanted = set(keys)
    if not wanted:
        return None
    for op in _active_claims(exclude_id):
        common = wanted.intersection(op.lock_keys)
        if common:
            return sorted(common)[0], op
    return None


def conflict_message(key: str, holder: Operation) -> str:
    verb = "is running" if S(holder.status) is S.RUNNING else f"is {S(holder.status).value}"
    return (f"The {describe_key(key)} is busy: operation #{holder.id} "
            f"({OperationKind(holder.kind).value.replace('_', ' ')}) {verb} and holds its lock.")


# --------------------------------------------------------------------------- start

def start_operation(kind: OperationKind, *, target_type: str, target_id: int,
                    organisation_id: int, user=None, params: dict | None = None,
                    lock_keys: Iterable[str] = (), summary: str | None = None,
                    on_conflict: str = "queue", timeout_seconds: int | None = None,
                    enqueue: bool = True) -> Operation:
    """Create an operation and enqueue the one RQ job that runs it (its id only).

    ``on_conflict="queue"``: if another active operation needs one of the
    lock keys, the new one is created ``queued`` and runs when the keys free
    up. ``on_conflict="refuse"``: raise :class:`OperationLocked` naming the
    holder, and create nothing. ``params`` must not contain secrets (they are
    stored in clear and shown); secrets live in encrypted columns that the
    handler reads.

    Commits the session (together with whatever the caller added to it).
    """
    if on_conflict not in ("queue", "refuse"):
        raise ValueError("on_conflict must be 'queue' or 'refuse'")
    kind = OperationKind(kind)
    keys = sorted(set(lock_keys))
    blocker = blocking_operation(keys)
    if blocker is not None and on_conflict == "refuse":
        key, holder = blocker
        raise OperationLocked(conflict_message(key, holder), key=key, holder_id=holder.id)
    op = Operation(organisation_id=organisation_id, kind=kind, target_type=target_type,
                   target_id=int(target_id), params=dict(params or {}), lock_keys=keys,
                   summary=(summary or None) and summary[:255],
                   created_by_id=getattr(user, "id", None),
                   timeout_seconds=int(timeout_seconds or timeout_for(kind)),
                   status=S.QUEUED if blocker is not None else S.PENDING)
    db.session.add(op)
    db.session.flush()
    # The one audit hook of operation-driven actions (deploys, rollbacks, commands,
    # servers, service deploys, backups): recorded in the same commit as the operation.
    audit.record_operation(op)
    db.session.commit()
    logstream.clear(op.id)
    if op.status is S.PENDING and enqueue:
        enqueue_operation(op)
    return op


def enqueue_operation(op: Operation) -> str:
    """Put the job for ``op`` on the RQ queue; returns the job id."""
    from rq import Queue
    job_id = f"op-{op.id}-{_secrets.token_hex(4)}"
    op.rq_job_id = job_id
    db.session.commit()
    conn = logstream.redis_client()
    queue = Queue(current_app.config["RQ_QUEUE"], connection=conn)
    try:
        queue.enqueue(JOB_FUNCTION, op.id, job_id=job_id,
                      job_timeout=int(op.timeout_seconds) + JOB_TIMEOUT_GRACE,
                      result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
                      description=f"keystone operation #{op.id}")
    except Exception as exc:  # redis down: the operation must still end
        finish(op.id, S.FAILED, f"Could not queue the job (Redis unreachable: {type(exc).__name__}).")
        raise OperationError("Could not queue the operation: Redis is unreachable.") from None
    return job_id


# --------------------------------------------------------------------------- dispatch

def dispatch_queued() -> list[int]:
    """Enqueue queued operations whose locks are free, oldest first; return their ids."""
    started: list[int] = []
    claimed: set[str] = set()
    queued: list[Operation] = []
    for op in _active_claims():
        if S(op.status) in (S.RUNNING, S.PENDING):
            claimed.update(op.lock_keys)
        else:
            queued.append(op)
    # Keys held by rows (e.g. an interrupted holder not yet reaped) also count.
    claimed.update(db.session.execute(sa.select(OperationLock.key)).scalars())
    for op in queued:
        keys = set(op.lock_keys)
        if keys & claimed:
            claimed |= keys  # first come, first served: later ones wait behind it
            continue
        claimed |= keys
        res = db.session.execute(
            sa.update(Operation).where(Operation.id == op.id, Operation.status == S.QUEUED.value)
            .values(status=S.PENDING.value, updated_at=utcnow()))
        db.session.commit()
        if res.rowcount == 1:
            db.session.refresh(op)
            try:
                enqueue_operation(op)
            except OperationError:
                continue
            started.append(op.id)
    return started


# --------------------------------------------------------------------------- claim

def claim(op: Operation, worker_name: str | None, inherited: Iterable[str] = ()) \
        -> tuple[str, str | None, Operation | None]:
    """Mark ``op`` running and insert its lock rows in ONE transaction.

    Returns ("running", None, None), ("gone", None, None) when the operation
    is no longer startable (claimed elsewhere, cancelled, finished), or
    ("conflict", key, holder) when a lock key is held (nothing changed).
    Keys in ``inherited`` are held by an ancestor and not inserted again.
    """
    now = utcnow()
    session = db.session
    session.commit()
    try:
        res = session.execute(
            sa.update(Operation)
            .where(Operation.id == op.id, Operation.status.in_([s.value for s in NOT_STARTED]),
                   Operation.cancel_requested_at.is_(None))
            .values(status=S.RUNNING.value, started_at=now, heartbeat_at=now,
                    worker_name=worker_name, updated_at=now)
            .execution_options(synchronize_session=False))
        if res.rowcount != 1:
            session.rollback()
            session.refresh(op)
            if S(op.status) in NOT_STARTED and op.cancel_requested_at is not None:
                finish(op.id, S.CANCELLED, "Cancelled before it started.")
            return "gone", None, None
        inherited = set(inherited)
        for key in sorted(set(op.lock_keys or ()) - inherited):
            session.add(OperationLock(key=key, operation_id=op.id, acquired_at=now))
        session.commit()
    except IntegrityError:
        session.rollback()
        holders = lock_holders(set(op.lock_keys or ()) - set(inherited))
        key, holder = next(iter(sorted(holders.items(), key=lambda kv: kv[0])), (None, None))
        session.refresh(op)
        return "conflict", key, holder
    session.refresh(op)
    return "running", None, None


def requeue(op: Operation) -> None:
    """After a lost claim: wait behind the holder (and re-check, in case it just ended)."""
    db.session.execute(
        sa.update(Operation).where(Operation.id == op.id, Operation.status == S.PENDING.value)
        .values(status=S.QUEUED.value, updated_at=utcnow()))
    db.session.commit()
    dispatch_queued()


# --------------------------------------------------------------------------- finish

def ancestor_ids(op: Operation) -> list[int]:
    ids, current = [], op.parent
    while current is not None:
        ids.append(current.id)
        current = current.parent
    return ids


def finish(operation_id: int, status: OperationStatus, error: str | None = None,
           result: dict | None = None, dispatch: bool = True) -> bool:
    """End an operation: terminal status, finished_at, locks freed, readers told.

    A compare-and-set on the active statuses: an operation that already ended
    is left alone (returns False). Steps still running end with it.
    """
    status = S(status)
    now = utcnow()
    values = {"status": status.value, "finished_at": now, "updated_at": now}
    if error is not None:
        values["error"] = error[:20000]
    if result is not None:
        values["result"] = result
    session = db.session
    session.commit()
    res = session.execute(
        sa.update(Operation).where(Operation.id == operation_id,
                                   Operation.status.in_([s.value for s in ACTIVE]))
        .values(**values).execution_options(synchronize_session=False))
    if res.rowcount != 1:
        session.rollback()
        return False
    step_values = {"status": step_status_for(status).value, "finished_at": now,
                   "updated_at": now}
    if error is not None:
        # A step cut short (its worker died, the reaper ended it) says why on the step
        # itself, not only on the operation.
        step_values["error_logs"] = sa.case(
            (sa.func.coalesce(OperationStep.error_logs, "") == "", error[:20000]),
            else_=OperationStep.error_logs)
    session.execute(
        sa.update(OperationStep).where(OperationStep.operation_id == operation_id,
                                       OperationStep.status.in_([StepStatus.RUNNING.value,
                                                                 StepStatus.PENDING.value]))
        .values(**step_values)
        .execution_options(synchronize_session=False))
    session.execute(sa.delete(OperationLock).where(OperationLock.operation_id == operation_id)
                    .execution_options(synchronize_session=False))
    session.commit()
    op = session.get(Operation, operation_id)
    if op is not None:
        session.refresh(op)
    try:
        logstream.publish_end(logstream.redis_client(), operation_id, status.value,
                              ancestor_ids(op) if op is not None else [])
    except Exception:  # the database is the truth; readers also poll it
        log.warning("could not publish the end of operation %s", operation_id, exc_info=True)
    if op is not None and op.parent_id is None:
        run_end_listeners(op)
    if dispatch:
        try:
            dispatch_queued()
        except Exception:
            log.warning("dispatch after operation %s failed", operation_id, exc_info=True)
    return True


# Called with every top-level operation that just ended (once: finish is a compare-and-set),
# in whichever process ended it. Each must be quick and never raise; a failure is logged.
# app.hooks starts the coalesced follow-up deploy; app.notifications tells the channels.
END_LISTENERS: list[str] = [
    "app.hooks.service.operation_ended",
    "app.notifications.operation_ended",
    "app.housekeeping.handlers.operation_ended",   # housekeeping after each deploy
]


def run_end_listeners(op: Operation) -> None:
    import importlib
    for dotted in END_LISTENERS:
        module, _, name = dotted.rpartition(".")
        try:
            getattr(importlib.import_module(module), name)(op)
        except Exception:
            db.session.rollback()
            log.warning("end listener %s failed for operation %s", dotted, op.id, exc_info=True)


# --------------------------------------------------------------------------- cancel

def cancel_operation(op: Operation) -> str:
    """Ask ``op`` (and its children) to stop.

    Not started yet: it ends ``cancelled`` at once. Running: cancel_requested_at
    is set; the worker notices within about a second, terminates the remote
    command, runs clean-up steps and ends the operation ``cancelled``.
    Returns a sentence for the UI.
    """
    session = db.session
    session.refresh(op)
    if op.is_terminal:
        return f"Operation #{op.id} already ended ({S(op.status).value})."
    now = utcnow()
    session.execute(
        sa.update(Operation).where(Operation.id == op.id, Operation.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now, updated_at=now).execution_options(synchronize_session=False))
    session.commit()
    session.refresh(op)
    if S(op.status) in NOT_STARTED:
        finish(op.id, S.CANCELLED, "Cancelled before it started.")
        return f"Operation #{op.id} was cancelled before it started."
    return f"Cancelling operation #{op.id}: the running command is being stopped; clean-up steps still run."


# --------------------------------------------------------------------------- checks

def latest_operation(kind: OperationKind, target_type: str, target_id: int,
                     organisation_id: int) -> Operation | None:
    """The newest top-level operation of ``kind`` on the target (what a page shows)."""
    return db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == organisation_id,
                                   Operation.kind == OperationKind(kind).value,
                                   Operation.target_type == target_type,
                                   Operation.target_id == int(target_id),
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id.desc()).limit(1)).scalar_one_or_none()


def start_or_join(kind: OperationKind, *, target_type: str, target_id: int,
                  organisation_id: int, **kwargs) -> Operation:
    """Start a check (an operation that reads the network and changes no server), or return
    the one of the same kind already active on the target (a second click joins it)."""
    active = latest_operation(kind, target_type, target_id, organisation_id)
    if active is not None and not active.is_terminal and \
            dict(active.params or {}) == dict(kwargs.get("params") or {}):
        return active
    # One check of a kind per target at a time; it never waits behind a deploy.
    kwargs.setdefault("lock_keys", [f"{OperationKind(kind).value}:{target_type}/{int(target_id)}"])
    return start_operation(kind, target_type=target_type, target_id=target_id,
                           organisation_id=organisation_id, **kwargs)
