"""Housekeeping's control-plane parts (issue 23) against the real database and Redis:
the per-environment setting and its form, pruned artifacts out of rollback, old step
logs archived and still shown, Redis log streams trimmed, the triggers (after a deploy,
daily, disk pressure) and the deploy refused when the image would not fit."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from app.models import BuildArtifact, Operation, OperationLogArchive, OperationStep
from app.models.base import utcnow
from app.models.enums import (ArtifactStatus, OperationKind, OperationStatus, ServerStatus)
from tests.conftest import sign_in
from tests.factories import build_org


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    graph.server.status = ServerStatus.ACTIVE
    graph.server.host_key_fingerprint = "SHA256:test"
    graph.web.server_id = graph.server.id
    db.session.commit()
    sign_in(client, graph.user)
    return graph


def _artifact(db, env, status=ArtifactStatus.READY, **meta):
    a = BuildArtifact(environment_id=env.id, commit_sha="a" * 40, image_tag="keystone/x:1",
                      image_digest="sha256:" + "b" * 64, status=status, meta=dict(meta))
    db.session.add(a)
    db.session.commit()
    return a


def test_keep_setting_has_a_typed_home_and_a_form(g, client, auth, db):
    env = g.environment
    assert env.keep_artifacts == 5 and env.retention is None
    page = client.get(f"/environments/{env.id}").get_data(as_text=True)
    assert 'name="keep_artifacts"' in page and 'value="5"' in page
    token = auth.csrf()
    r = client.post(f"/environments/{env.id}/keep-artifacts",
                    data={"csrf_token": token, "keep_artifacts": "3"})
    assert r.status_code == 302
    db.session.expire_all()
    assert g.environment.keep_artifacts == 3 and g.environment.retention.keep_artifacts == 3
    for bad in ("0", "101", "3; rm -rf /", "", "-1", "2.5"):
        client.post(f"/environments/{env.id}/keep-artifacts",
                    data={"csrf_token": token, "keep_artifacts": bad})
        db.session.expire_all()
        assert g.environment.keep_artifacts == 3, bad


def test_rollback_does_not_offer_pruned_artifacts(g, client, auth, db):
    env = g.environment
    ready = _artifact(db, env)
    pruned = _artifact(db, env, ArtifactStatus.PRUNED)
    count = sa.select(sa.func.count(Operation.id)).where(
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY.value)
    before = db.session.execute(count).scalar()
    page = client.get(f"/environments/{env.id}/rollback").get_data(as_text=True)
    assert f"/rollback/{ready.id}" in page and f"/rollback/{pruned.id}" not in page
    r = client.post(f"/environments/{env.id}/rollback/{pruned.id}",
                    headers={"X-CSRFToken": auth.csrf(), "HX-Request": "true"})
    assert "not usable" in r.get_data(as_text=True)
    assert db.session.execute(count).scalar() == before


def _finished_op(db, g, days_ago: int, logs: str, kind=OperationKind.ENVIRONMENT_DEPLOY):
    when = utcnow() - dt.timedelta(days=days_ago)
    op = Operation(organisation_id=g.org.id, kind=kind, target_type="environment",
                   target_id=g.environment.id, status=OperationStatus.SUCCEEDED,
                   started_at=when, finished_at=when)
    db.session.add(op)
    db.session.flush()
    db.session.add(OperationStep(operation_id=op.id, name="s", order=1, logs=logs,
                                 error_logs=""))
    db.session.commit()
    return op


def test_old_step_logs_are_archived_compressed_and_still_shown(g, client, db):
    from app.housekeeping.control import archive_old_logs
    from app.operations.sse import replay_lines
    text = "".join(f"line {i} of an old deploy\n" for i in range(2000))
    old = _finished_op(db, g, 120, text)
    recent = _finished_op(db, g, 3, "recent line\n")
    out = archive_old_logs()
    assert out["steps_archived"] == 1 and out["bytes_archived"] == len(text)
    db.session.expire_all()
    step = db.session.get(Operation, old.id).steps[0]
    assert step.logs == ""                               # out of the hot table
    archive = db.session.get(OperationLogArchive, step.id)
    assert archive.size == len(text) and len(archive.logs) < len(text) / 10
    assert step.log_text == text
    assert [t for _, t in replay_lines(db.session.get(Operation, old.id))][-1] == \
        "line 1999 of an old deploy"
    assert db.session.get(Operation, recent.id).steps[0].logs == "recent line\n"
    assert archive_old_logs()["steps_archived"] == 0     # idempotent
    # The operation page replays the archived lines.
    body = client.get(f"/operations/{old.id}/events").get_data(as_text=True)
    assert "line 1999 of an old deploy" in body


def test_log_streams_of_ended_operations_get_a_ttl(g, db):
    from app import redis_keys
    from app.housekeeping.control import trim_log_streams
    from app.operations import logstream
    client = logstream.redis_client()
    ended = _finished_op(db, g, 1, "x\n")
    running = Operation(organisation_id=g.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                        target_type="environment", target_id=g.environment.id,
                        status=OperationStatus.RUNNING)
    db.session.add(running)
    db.session.commit()
    for op_id in (ended.id, running.id, 987654):
        client.xadd(logstream.stream_key(op_id), {"k": "line", "t": "x"})
    out = trim_log_streams(client, now_ttl=60)
    assert out == {"streams_expired": 1, "streams_deleted": 1}
    assert 0 < client.ttl(logstream.stream_key(ended.id)) <= 60
    assert client.ttl(logstream.stream_key(running.id)) == -1
    assert not client.exists(logstream.stream_key(987654))
    assert redis_keys.prefix() in logstream.stream_key(ended.id)


def test_a_successful_deploy_starts_housekeeping_once_per_server(g, db):
    from app.housekeeping.handlers import active_housekeeping
    from app.operations.lifecycle import finish
    ops = []
    for _ in range(2):
        op = Operation(organisation_id=g.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                       target_type="environment", target_id=g.environment.id,
                       status=OperationStatus.RUNNING)
        db.session.add(op)
        db.session.commit()
        finish(op.id, OperationStatus.SUCCEEDED)
        ops.append(op)
    hk = active_housekeeping(g.server.id)
    assert hk is not None and hk.kind == OperationKind.HOUSEKEEPING
    assert hk.lock_keys == [f"housekeeping:server/{g.server.id}"]   # never blocks a deploy
    assert db.session.execute(sa.select(sa.func.count(Operation.id)).where(
        Operation.kind == OperationKind.HOUSEKEEPING.value)).scalar() == 1   # joined
    failed = Operation(organisation_id=g.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                       target_type="environment", target_id=g.environment.id,
                       status=OperationStatus.RUNNING)
    db.session.add(failed)
    db.session.commit()
    finish(failed.id, OperationStatus.FAILED)
    assert db.session.execute(sa.select(sa.func.count(Operation.id)).where(
        Operation.kind == OperationKind.HOUSEKEEPING.value)).scalar() == 1


def test_daily_tick_and_disk_pressure(g, db):
    from app.housekeeping.handlers import disk_pressure, due_servers, tick
    now = utcnow()
    assert [s.id for s in due_servers(now)] == [g.server.id]
    started = tick(now)["started"]
    assert len(started) == 1
    assert due_servers(now) == []                                   # not again today
    assert due_servers(now + dt.timedelta(days=1, minutes=1)) != []
    assert disk_pressure(g.server, 80.0) is None                    # under 85 %: nothing
    op = disk_pressure(g.server, 91.0)
    assert op is not None and op.id == started[0]                   # joins the pending one
    assert disk_pressure(g.server, 95.0) is None                    # once per half hour


def test_a_deploy_that_would_not_fit_is_refused_with_the_numbers(g, db):
    from app.deploys.service import DeployBlocked, disk_problems
    from app.metrics import Sample, store
    env = g.environment
    current = _artifact(db, env, size_bytes=3 * 1024 ** 3)
    env.current_artifact_id = current.id
    db.session.commit()
    sample = Sample(cpu_percent=1, mem_used_mb=1, mem_total_mb=2, disk_used_gb=18.0,
                    disk_total_gb=20.0, load1=0, load5=0, load15=0, containers={})
    store(db.session, g.server.id, sample, utcnow())
    db.session.commit()
    problems = disk_problems(env, [g.server], None)
    assert len(problems) == 1
    assert "3.6 GB" in problems[0] and "2.0 GB is free" in problems[0]
    assert "web-1" in problems[0]
    small = _artifact(db, env, size_bytes=100 * 1024 ** 2)
    assert disk_problems(env, [g.server], small) == []
    assert issubclass(DeployBlocked, Exception)
