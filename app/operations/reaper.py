"""The reaper: every operation reaches a terminal state, even when its worker died.

RQ notices a dead work horse only through its own maintenance (minutes). We
keep our own heartbeat (``Operation.heartbeat_at``, written every few seconds
by a thread in the work horse) and our own liveness check: ``worker_name`` is
``host/pid`` of the work horse, so on the same host a dead pid is noticed at
once; elsewhere a heartbeat older than STALE_AFTER seconds means dead.

A reaped operation (and its active children) ends ``interrupted``, its locks
are freed in the same transaction, and the next queued operation is started.
``keystone worker`` runs :func:`reap` at start-up (recovery after a crash or
reboot) and every REAP_INTERVAL seconds; ``keystone reap`` runs it once.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket

import sqlalchemy as sa
import sqlalchemy.orm  # noqa: F401

from app.extensions import db
from app.models import Operation, OperationStep
from app.models.base import utcnow
from app.models.enums import TERMINAL_STATUSES, OperationStatus, StepStatus
from app.operations import lifecycle, logstream

log = logging.getLogger(__name__)
S = OperationStatus

STALE_AFTER = 30          # seconds without a heartbeat: the worker is gone
HUNG_AFTER = 300          # seconds without a heartbeat from a live pid: hung
PENDING_GRACE = 60        # seconds before a pending op with no job is re-enqueued
REAP_INTERVAL = 10        # seconds between passes inside `keystone worker`


def pid_alive(worker_name: str | None) -> bool | None:
    """True/False for a work horse on this host, None when it ran elsewhere."""
    host, _, pid = (worker_name or "").rpartition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    pid_i = int(pid)
    try:
        os.kill(pid_i, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid_i}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    return True


def _descendants(op_id: int) -> list[int]:
    ids, frontier = [], [op_id]
    while frontier:
        children = db.session.execute(sa.select(Operation.id).where(
            Operation.parent_id.in_(frontier))).scalars().all()
        ids.extend(children)
        frontier = children
    return ids


def interrupt(op_id: int, reason: str) -> bool:
    """End ``op_id`` and its active descendants ``interrupted``; free their locks. The
    reason goes on the steps that were running; when the worker died between two steps
    (none was running anywhere in the tree), on a step of its own at the end of
    ``op_id``, so the reason stands with the steps, where the page and the API show why."""
    descendants = _descendants(op_id)
    for child_id in reversed(descendants):
        lifecycle.finish(child_id, S.INTERRUPTED, reason, dispatch=False)
    ended = lifecycle.finish(op_id, S.INTERRUPTED, reason, dispatch=False)
    if ended:
        _say_why_on_a_step(op_id, [op_id, *descendants], reason)
    return ended


def _say_why_on_a_step(op_id: int, tree_ids: list[int], reason: str) -> None:
    cut_short = db.session.execute(
        sa.select(sa.func.count(OperationStep.id))
        .where(OperationStep.operation_id.in_(tree_ids),
               OperationStep.status == StepStatus.INTERRUPTED.value)).scalar_one()
    if cut_short:
        return
    last = db.session.execute(sa.select(sa.func.max(OperationStep.order))
                              .where(OperationStep.operation_id == op_id)).scalar()
    now = utcnow()
    db.session.add(OperationStep(
        operation_id=op_id, name="Interrupted between steps", order=(last or 0) + 1,
        status=StepStatus.INTERRUPTED, logs="", error_logs=reason, started_at=now,
        finished_at=now))
    db.session.commit()


def reap(now: dt.datetime | None = None) -> list[int]:
    """One pass: interrupt operations whose worker died; restart stuck queue entries."""
    now = now or utcnow()
    reaped: list[int] = []
    running = db.session.execute(
        sa.select(Operation).where(Operation.status == S.RUNNING.value,
                                   Operation.parent_id.is_(None))).scalars().all()
    for op in running:
        beat = op.heartbeat_at or op.started_at or op.created_at
        age = (now - beat).total_seconds()
        alive = pid_alive(op.worker_name)
        if alive is False:
            why = "its worker process died"
        elif alive is None and age > STALE_AFTER:
            why = f"its worker stopped sending heartbeats {int(age)}s ago"
        elif alive and age > HUNG_AFTER:
            why = f"its worker has been unresponsive for {int(age)}s"
        else:
            continue
        reason = (f"Interrupted: {why}. Its remote commands were cut off with the SSH "
                  f"connection; run the operation again.")
        if interrupt(op.id, reason):
            log.warning("operation %s interrupted: %s", op.id, why)
            reaped.append(op.id)
    # Orphaned children (their root ended without ending them).
    parent = sa.orm.aliased(Operation)
    orphans = db.session.execute(
        sa.select(Operation.id).join(parent, parent.id == Operation.parent_id)
        .where(Operation.status.in_([S.RUNNING.value, S.PENDING.value, S.QUEUED.value]),
               parent.status.in_([s.value for s in TERMINAL_STATUSES]))).scalars().all()
    for child_id in orphans:
        lifecycle.finish(child_id, S.INTERRUPTED, "Its parent operation ended first.",
                         dispatch=False)
    _requeue_lost_jobs(now)
    lifecycle.dispatch_queued()
    return reaped


def _requeue_lost_jobs(now: dt.datetime) -> None:
    """Pending operations whose RQ job vanished or died before it started."""
    from rq.job import Job, JobStatus
    from rq.exceptions import NoSuchJobError
    pending = db.session.execute(
        sa.select(Operation).where(Operation.status == S.PENDING.value,
                                   Operation.parent_id.is_(None),
                                   Operation.updated_at < now - dt.timedelta(seconds=PENDING_GRACE))
    ).scalars().all()
    if not pending:
        return
    conn = logstream.redis_client()
    for op in pending:
        lost = op.rq_job_id is None
        if not lost:
            try:
                status = Job.fetch(op.rq_job_id, connection=conn).get_status()
                lost = status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED,
                                  JobStatus.FINISHED)
            except NoSuchJobError:
                lost = True
        if lost:
            log.warning("operation %s lost its job; queueing it again", op.id)
            lifecycle.enqueue_operation(op)
