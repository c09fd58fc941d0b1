"""Backups pages and forms (issue 17.3): targets, schedule, back up now, restore,
download, "back up first", the scheduler tick. Operations are created for real
(enqueued to the embedded Redis); nothing here needs Docker or SSH."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from app.models import Operation, ServiceReplica
from app.models.backup import (Backup, BackupPolicy, BackupStatus, BackupTarget,
                               BackupTargetKind, BackupTrigger)
from app.models.base import utcnow
from app.models.enums import OperationKind, ReplicaStatus, ServerStatus, SliceStatus
from tests.conftest import sign_in
from tests.factories import build_org


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    graph.server.status = ServerStatus.ACTIVE
    graph.slice.status = SliceStatus.READY
    graph.slice.config = {"database": "shop_production", "username": "shop_production"}
    db.session.add(ServiceReplica(service=graph.postgres, server=graph.server,
                                  container_name="ks-pg-1", status=ReplicaStatus.RUNNING))
    db.session.commit()
    sign_in(client, graph.user)
    return graph


@pytest.fixture()
def token(g, auth):
    return auth.csrf()


def _target(db, g, tmp_path, name="local"):
    t = BackupTarget(organisation_id=g.org.id, name=name, kind=BackupTargetKind.DIRECTORY,
                     config={"path": str(tmp_path / "dumps")})
    db.session.add(t)
    db.session.commit()
    return t


def _ops(db, kind):
    return db.session.execute(sa.select(Operation).where(Operation.kind == kind)
                              .order_by(Operation.id)).scalars().all()


def test_s3_target_secret_is_encrypted_at_rest_and_never_shown(client, db, g, token):
    secret = "S3-SECRET-SENTINEL-9f1c"
    r = client.post("/backups/targets", data={
        "csrf_token": token, "name": "b2", "kind": "s3", "endpoint_url": "http://127.0.0.1:9000",
        "region": "us-east-1", "bucket": "keystone-backups", "prefix": "prod/",
        "access_key_id": "AKIATEST", "secret_access_key": secret})
    assert r.status_code == 302
    t = db.session.execute(sa.select(BackupTarget).where(BackupTarget.name == "b2")).scalar_one()
    assert t.credentials["secret_access_key"] == secret and t.config["prefix"] == "prod"
    raw = db.session.execute(sa.text("SELECT credentials FROM backup_targets WHERE name = 'b2'")
                             ).scalar()
    assert secret not in raw and "AKIATEST" not in raw
    page = client.get("/backups/targets").get_data(as_text=True)
    assert secret not in page and "keystone-backups" in page


@pytest.mark.parametrize("data,field", [
    ({"kind": "directory", "path": "relative"}, "Use an absolute path"),
    ({"kind": "directory", "path": "/tmp/$(id)"}, "Use an absolute path"),
    ({"kind": "s3", "bucket": "Bad_Bucket", "access_key_id": "a", "secret_access_key": "b"},
     "3-63 lowercase"),
    ({"kind": "s3", "bucket": "ok-bucket", "endpoint_url": "ftp://x", "access_key_id": "a",
      "secret_access_key": "b"}, "http(s)://"),
    ({"kind": "s3", "bucket": "ok-bucket"}, "Required for an S3 target"),
])
def test_bad_target_input_is_a_form_error(client, db, g, token, data, field):
    r = client.post("/backups/targets", data={"csrf_token": token, "name": "t1", **data})
    assert r.status_code == 400 and field in r.get_data(as_text=True)
    assert db.session.execute(sa.select(sa.func.count(BackupTarget.id))
                              .where(BackupTarget.name == "t1")).scalar() == 0


def test_service_page_shows_the_backups_section(client, db, g, tmp_path):
    _target(db, g, tmp_path)
    page = client.get(f"/services/{g.postgres.id}").get_data(as_text=True)
    assert 'id="backups"' in page and 'data-backup-slice="shop_production"' in page
    assert "Back up now" in page and "Back up first" in page


def test_schedule_form_saves_and_validates_keep(client, db, g, token, tmp_path):
    t = _target(db, g, tmp_path)
    url = f"/services/{g.postgres.id}/slices/{g.slice.id}/backups/policy"
    r = client.post(url, data={"csrf_token": token, "target_id": t.id, "frequency": "hourly",
                               "keep": "0"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "1 to 1000" in r.get_data(as_text=True)
    assert db.session.execute(sa.select(BackupPolicy)).scalar_one_or_none() is None
    r = client.post(url, data={"csrf_token": token, "target_id": t.id, "frequency": "hourly",
                               "keep": "24"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Schedule: hourly" in r.get_data(as_text=True)
    p = db.session.execute(sa.select(BackupPolicy)).scalar_one()
    assert (p.frequency.value, p.keep, p.target_id) == ("hourly", 24, t.id)
    r = client.post(url, data={"csrf_token": token, "target_id": 999, "frequency": "weekly",
                               "keep": "3"}, headers={"HX-Request": "true"})
    assert "Not a valid choice" in r.get_data(as_text=True)


def test_back_up_now_starts_an_operation_with_ids_only(client, db, g, token, tmp_path):
    t = _target(db, g, tmp_path)
    r = client.post(f"/services/{g.postgres.id}/slices/{g.slice.id}/backups/now",
                    data={"csrf_token": token, "target_id": t.id}, headers={"HX-Request": "true"})
    assert r.status_code == 204 and "/operations/" in r.headers["HX-Redirect"]
    [op] = _ops(db, OperationKind.DATABASE_BACKUP)
    assert op.target_type == "service_slice" and op.target_id == g.slice.id
    assert op.params == {"target_id": t.id, "trigger": "manual"}
    assert f"service:{g.postgres.id}" in op.lock_keys


def test_tick_starts_due_backups_once(client, db, g, tmp_path):
    from app.backups.handlers import tick
    t = _target(db, g, tmp_path)
    db.session.add(BackupPolicy(slice_id=g.slice.id, target_id=t.id, frequency="daily", keep=3))
    db.session.commit()
    started = tick()
    assert len(started) == 1
    op = db.session.get(Operation, started[0])
    assert op.params["trigger"] == "scheduled"
    assert tick() == []                                   # one active already, and not due
    policy = db.session.execute(sa.select(BackupPolicy)).scalar_one()
    later = policy.last_scheduled_at + dt.timedelta(days=1)
    op.status = "failed"                                  # a failed one: retried next interval
    db.session.commit()
    assert tick(policy.last_scheduled_at + dt.timedelta(hours=23)) == []
    assert len(tick(later)) == 1


def test_late_schedule_is_shown(client, db, g, tmp_path):
    t = _target(db, g, tmp_path)
    db.session.add(BackupPolicy(slice_id=g.slice.id, target_id=t.id, frequency="hourly", keep=3,
                                last_scheduled_at=utcnow() - dt.timedelta(hours=3)))
    db.session.commit()
    page = client.get(f"/services/{g.postgres.id}/backups").get_data(as_text=True)
    assert "data-backup-late" in page and "keystone worker" in page


def _backup(db, g, t, tmp_path):
    b = Backup(organisation_id=g.org.id, slice_id=g.slice.id, target_id=t.id,
               status=BackupStatus.SUCCEEDED, trigger=BackupTrigger.MANUAL,
               database="shop_production", key="postgres/shop_production/x-1.dump",
               size_bytes=5, sha256="0" * 64)
    db.session.add(b)
    db.session.commit()
    path = tmp_path / "dumps" / b.key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PGDMP")
    return b


def test_restore_same_database_needs_the_typed_name(client, db, g, token, tmp_path):
    b = _backup(db, g, _target(db, g, tmp_path), tmp_path)
    r = client.post(f"/backups/{b.id}/restore", data={"csrf_token": token, "mode": "same",
                                                      "confirm": "shop"})
    assert r.status_code == 400 and "Type shop_production exactly" in r.get_data(as_text=True)
    assert _ops(db, OperationKind.DATABASE_RESTORE) == []
    r = client.post(f"/backups/{b.id}/restore", data={"csrf_token": token, "mode": "same",
                                                      "confirm": "shop_production"})
    assert r.status_code == 302
    [op] = _ops(db, OperationKind.DATABASE_RESTORE)
    assert op.target_id == g.slice.id and op.params["confirm"] == "shop_production"


def test_restore_into_a_new_database_creates_a_pending_slice(client, db, g, token, tmp_path):
    b = _backup(db, g, _target(db, g, tmp_path), tmp_path)
    r = client.post(f"/backups/{b.id}/restore", data={"csrf_token": token, "mode": "new",
                                                      "new_name": "bad name;"})
    assert r.status_code == 400 and "lowercase letters" in r.get_data(as_text=True)
    r = client.post(f"/backups/{b.id}/restore", data={"csrf_token": token, "mode": "new",
                                                      "new_name": "shop_copy"})
    assert r.status_code == 302
    [op] = _ops(db, OperationKind.DATABASE_RESTORE)
    new = db.session.get(type(g.slice), op.target_id)
    assert new.name == "shop_copy" and new.status == SliceStatus.PENDING
    assert new.credentials["password"]


def test_download_of_a_directory_backup(client, db, g, tmp_path):
    b = _backup(db, g, _target(db, g, tmp_path), tmp_path)
    r = client.get(f"/backups/{b.id}/download")
    assert r.status_code == 200 and r.data == b"PGDMP"
    assert "attachment" in r.headers["Content-Disposition"]


def test_update_with_back_up_first_waits_for_the_backups(client, db, g, token, tmp_path):
    _target(db, g, tmp_path)
    r = client.post(f"/services/{g.postgres.id}/deploy",
                    data={"csrf_token": token, "confirm_downtime": "y", "backup_first": "y"})
    assert r.status_code == 302, r.get_data(as_text=True)
    [backup_op] = _ops(db, OperationKind.DATABASE_BACKUP)
    [deploy] = _ops(db, OperationKind.SERVICE_DEPLOY)
    assert backup_op.params["trigger"] == "before_update"
    assert deploy.params["after_backups"] == [backup_op.id]
    assert deploy.status.value == "queued"               # behind the backup's service lock


def test_deploy_refuses_to_run_when_its_backup_failed(app, db, g, tmp_path):
    from app.operations.runner import execute_operation
    from app.services_ops.deploy import start_service_deploy
    failed = Operation(organisation_id=g.org.id, kind=OperationKind.DATABASE_BACKUP,
                       target_type="service_slice", target_id=g.slice.id, status="failed",
                       params={}, lock_keys=[])
    db.session.add(failed)
    db.session.commit()
    op = start_service_deploy(g.postgres, confirm_downtime=True, after_backups=[failed.id],
                              enqueue=False)
    assert execute_operation(op.id) == "failed"
    db.session.expire_all()
    assert "nothing was updated" in db.session.get(Operation, op.id).error


def test_dashboard_shows_a_failed_backup_until_a_later_one_succeeds(client, db, g, tmp_path):
    t = _target(db, g, tmp_path)
    failed = Backup(organisation_id=g.org.id, slice_id=g.slice.id, target_id=t.id,
                    status=BackupStatus.FAILED, trigger=BackupTrigger.SCHEDULED,
                    database="shop_production", key="k1")
    db.session.add(failed)
    db.session.commit()
    page = client.get("/").get_data(as_text=True)
    assert "data-backup-alerts" in page and "the latest backup failed" in page
    db.session.add(Backup(organisation_id=g.org.id, slice_id=g.slice.id, target_id=t.id,
                          status=BackupStatus.SUCCEEDED, trigger=BackupTrigger.MANUAL,
                          database="shop_production", key="k2", sha256="0" * 64, size_bytes=1))
    db.session.commit()
    assert "data-backup-alerts" not in client.get("/").get_data(as_text=True)


def test_dashboard_shows_a_late_schedule(client, db, g, tmp_path):
    t = _target(db, g, tmp_path)
    db.session.add(BackupPolicy(slice_id=g.slice.id, target_id=t.id, frequency="daily", keep=3,
                                last_scheduled_at=utcnow() - dt.timedelta(days=3)))
    db.session.commit()
    page = client.get("/").get_data(as_text=True)
    assert "scheduled backups are late" in page


def test_worker_enqueues_the_tick_once_per_interval(app, redis_url):
    import redis
    from rq import Queue
    from app.backups.handlers import schedule_tick
    conn = redis.Redis.from_url(redis_url)
    queue = Queue("backups-tick-test", connection=conn)
    from app.backups.handlers import tick_key
    conn.delete(tick_key(app.config))
    assert schedule_tick(app, conn, queue) is True
    assert schedule_tick(app, conn, queue) is False       # another worker, same minute
    [job] = queue.jobs
    assert job.func_name == "app.backups.handlers.tick_job" and job.args == ()
    queue.empty()
    conn.delete(tick_key(app.config))
