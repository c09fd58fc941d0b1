"""Locks: enforced by the database's unique key, queued or refused, freed at the end."""
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Operation, OperationLock
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus as S
from app.operations import OperationLocked, cancel_operation, finish, start_operation
from app.operations.lifecycle import claim, dispatch_queued
from tests.factories import build_org
from tests.opsupport import clean_streams  # noqa: F401


def _start(g, **kw):
    kw.setdefault("lock_keys", [f"environment:{g.environment.id}"])
    return start_operation(OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                           target_id=g.environment.id, organisation_id=g.org.id, **kw)


def test_claim_inserts_lock_rows_and_marks_running(app, clean_streams):
    g = build_org()
    op = _start(g, enqueue=False)
    assert op.status is S.PENDING
    outcome, _, _ = claim(op, "host/1")
    assert outcome == "running"
    db.session.refresh(op)
    assert op.status is S.RUNNING and op.started_at and op.heartbeat_at
    keys = db.session.execute(sa.select(OperationLock.key, OperationLock.operation_id)).all()
    assert keys == [(f"environment:{g.environment.id}", op.id)]


def test_second_operation_is_queued_behind_the_first(app, clean_streams):
    g = build_org()
    first = _start(g, enqueue=False)
    claim(first, "host/1")
    second = _start(g, enqueue=False)
    assert second.status is S.QUEUED
    assert second.rq_job_id is None  # queued operations carry no job until dispatched


def test_refuse_names_the_holder(app, clean_streams):
    g = build_org()
    first = _start(g, enqueue=False)
    claim(first, "host/1")
    with pytest.raises(OperationLocked) as info:
        _start(g, on_conflict="refuse", enqueue=False)
    assert info.value.holder_id == first.id
    assert f"operation #{first.id}" in str(info.value)
    assert "environment" in str(info.value)
    assert db.session.execute(sa.select(sa.func.count(Operation.id))).scalar() == 2  # nothing new


def test_database_refuses_a_second_holder_even_without_the_check(app, clean_streams):
    """Two claims racing past the application check: the unique key decides."""
    g = build_org()
    a = _start(g, enqueue=False)
    # Create b as pending directly (as if both passed the check at the same moment).
    b = Operation(organisation_id=g.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                  target_type="environment", target_id=g.environment.id,
                  lock_keys=list(a.lock_keys))
    db.session.add(b)
    db.session.commit()
    assert claim(a, "host/1")[0] == "running"
    outcome, key, holder = claim(b, "host/2")
    assert outcome == "conflict" and key == a.lock_keys[0] and holder.id == a.id
    db.session.refresh(b)
    assert b.status is S.PENDING  # nothing changed: the whole transaction rolled back
    with pytest.raises(sa.exc.IntegrityError):
        db.session.add(OperationLock(key=a.lock_keys[0], operation_id=b.id, acquired_at=utcnow()))
        db.session.commit()
    db.session.rollback()


def test_finish_frees_locks_and_dispatches_the_next(app, clean_streams):
    g = build_org()
    first = _start(g, enqueue=False)
    claim(first, "host/1")
    second = _start(g)
    third = _start(g)
    assert (second.status, third.status) == (S.QUEUED, S.QUEUED)
    assert finish(first.id, S.SUCCEEDED)
    db.session.refresh(second)
    db.session.refresh(third)
    assert second.status is S.PENDING and second.rq_job_id  # enqueued
    assert third.status is S.QUEUED  # first come, first served
    assert db.session.execute(sa.select(OperationLock)).first() is None
    assert not finish(first.id, S.FAILED)  # terminal states never change
    db.session.refresh(first)
    assert first.status is S.SUCCEEDED and first.finished_at


def test_disjoint_keys_do_not_wait(app, clean_streams):
    g = build_org()
    first = _start(g, enqueue=False)
    claim(first, "host/1")
    other = _start(g, lock_keys=["server:999"], enqueue=False)
    assert other.status is S.PENDING
    assert claim(other, "host/1")[0] == "running"


def test_cancel_before_start_ends_cancelled(app, clean_streams):
    g = build_org()
    first = _start(g, enqueue=False)
    claim(first, "host/1")
    queued = _start(g)
    message = cancel_operation(queued)
    db.session.refresh(queued)
    assert queued.status is S.CANCELLED and "before it started" in message
    # A job that still arrives for it does nothing.
    assert claim(queued, "host/1")[0] == "gone"


def test_cancel_running_sets_the_request(app, clean_streams):
    g = build_org()
    op = _start(g, enqueue=False)
    claim(op, "host/1")
    cancel_operation(op)
    db.session.refresh(op)
    assert op.status is S.RUNNING and op.cancel_requested_at is not None


def test_dispatch_is_idempotent(app, clean_streams):
    g = build_org()
    op = _start(g, enqueue=False)
    claim(op, "host/1")
    q = _start(g)
    finish(op.id, S.SUCCEEDED, dispatch=False)
    assert dispatch_queued() == [q.id]
    assert dispatch_queued() == []
