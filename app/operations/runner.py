"""The body of the RQ job: claim the operation, run its handler, always end it."""
from __future__ import annotations

import logging
import os
import socket

from flask import current_app

from app.extensions import db
from app.models import Operation
from app.models.enums import OperationStatus
from app.operations import lifecycle
from app.operations.context import OperationContext
from app.operations.runtime import Runtime
from app.operations.registry import handler_for

log = logging.getLogger(__name__)
S = OperationStatus


def worker_identity() -> str:
    """host/pid of the process running the operation: the reaper checks the pid."""
    return f"{socket.gethostname()}/{os.getpid()}"


def execute_operation(operation_id: int) -> str:
    """Run one operation to a terminal state; return its status (never raises).

    Refuses duplicates: a job whose operation is no longer pending or queued
    (claimed by another job, cancelled, finished) does nothing.
    """
    op = db.session.get(Operation, int(operation_id))
    if op is None:
        return "missing"
    if op.parent_id is not None:
        return "child operations run inside their parent"
    outcome, key, holder = lifecycle.claim(op, worker_identity())
    if outcome == "gone":
        db.session.refresh(op)
        return S(op.status).value
    if outcome == "conflict":
        log.info("operation %s waits behind operation %s (%s)", op.id,
                 holder.id if holder else "?", key)
        lifecycle.requeue(op)
        return "queued"
    runtime = Runtime(current_app._get_current_object(), worker_name=worker_identity())
    ctx = OperationContext(runtime, op)
    runtime.start_heartbeat()
    try:
        status = ctx.execute(handler_for(op.kind))
    finally:
        runtime.close()
    return status.value
