"""Postgres backups and restore on the sandbox (issue 17.3): no mocks.

One module-scoped bed: a Postgres service deployed on a sandbox server (over real
SSH), one database slice with a row in a table. The tests run in file order:

1. back up to a directory on the Keystone host (the dump comes over SFTP), drop the
   table, restore into the same database, and the row is back; restore into a new
   database too;
2. S3 round trip against a real S3 API server (moto's server mode, a subprocess),
   with boto3: back up, the object's SHA-256 is the one recorded, restore from it;
3. a backup that fails (the database is missing on the server) ends as a failed
   operation and a failed backup row, never silently.
"""
from __future__ import annotations

import hashlib
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


class World:
    pass


def _run_op(op_id: int, expect: str = "succeeded"):
    from app.extensions import db
    from app.models import Operation
    from app.operations.runner import execute_operation
    status = execute_operation(op_id)
    db.session.expire_all()
    op = db.session.get(Operation, op_id)
    if status != expect:
        lines = [f"operation {op.id} {op.kind} {status}: {op.error}"]
        for step in op.steps:
            lines.append(f"--- {step.name} [{step.status}]\n{step.logs[-3000:]}\n{step.error_logs}")
        pytest.fail("\n".join(lines), pytrace=False)
    return op


def _psql(w, database: str, sql: str) -> str:
    return w.srv.exec("docker", "exec", w.container, "psql", "-X", "-A", "-t", "-v",
                      "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-c", sql).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from tests.conftest import make_app
    from app.accounts import create_account
    from app.attachments import start_slice_provision
    from app.extensions import db
    from app.models import Registry, Server, Service, ServiceSlice
    from app.models.enums import DeployPolicy, ServerStatus, ServiceCategory, SliceStatus, SliceType
    from app.drivers import get_driver
    from app.sandbox.testbed import MANAGEMENT_USER
    from app.services_ops.deploy import start_service_deploy

    srv = sandbox.servers[-1]
    tmp = tmp_path_factory.mktemp("backups")
    app = make_app(tmp, migrated_db_template, redis_url)
    ctx = app.app_context()
    ctx.push()
    w = World()
    w.srv, w.tmp = srv, tmp
    user = create_account(organisation="Backups", email="backups@example.com",
                          password="correct horse battery")
    org = user.organisation
    org.management_key_private = srv.root_key_path.read_text()
    server = Server(organisation=org, name="bk-1", public_ip=srv.host, ssh_port=srv.ssh_port,
                    private_ip=srv.private_ip, management_user=MANAGEMENT_USER,
                    host_key_fingerprint=srv.host_key_fingerprint, status=ServerStatus.ACTIVE)
    base = random.randint(100_000, 900_000)
    reg = sandbox.registry
    pg = Service(id=base, organisation=org, server=server, name="pgbk", type="postgres",
                 driver_name="postgres", category=ServiceCategory.DATABASE, version_track="18",
                 deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                 config={"image": sandbox.images.get("postgres",
                                                     f"{reg.url}/keystone-sandbox/postgres:18")})
    registry = Registry(organisation=org, name="sandbox", url=reg.url, username=reg.username,
                        password=reg.password)
    db.session.add_all([server, registry, pg])
    db.session.commit()
    _run_op(start_service_deploy(pg, enqueue=False).id)
    config, creds = get_driver(pg).new_slice_config("shop")
    sl = ServiceSlice(service=pg, name="shop", type=SliceType.POSTGRES_DATABASE,
                      status=SliceStatus.PENDING, config=config, credentials=creds)
    db.session.add(sl)
    db.session.commit()
    _run_op(start_slice_provision(sl, enqueue=False).id)
    db.session.refresh(pg)
    w.org, w.user, w.pg, w.slice, w.base = org, user, pg, sl, base
    w.container = pg.replicas[0].container_name
    # The application's own data, created as the slice's owner (as Laravel's migrations would).
    _psql(w, "shop", "SET ROLE shop; CREATE TABLE orders (id int primary key, item text); "
                     "INSERT INTO orders VALUES (1, 'keystone ''quoted'' row')")
    yield w
    srv.exec("docker", "rm", "-f", w.container, check=False)
    vols = srv.exec("docker", "volume", "ls", "-q", check=False).stdout.split()
    mine = [v for v in vols if v.startswith(f"keystone_service_{base}_")]
    if mine:
        srv.exec("docker", "volume", "rm", "-f", *mine, check=False)
    srv.exec("rm", "-rf", f"/home/keystone/services/{base}", check=False)
    db.session.remove()
    ctx.pop()


def test_backup_to_directory_drop_table_restore_row_is_back(world):
    from app.backups.handlers import start_backup, start_restore
    from app.extensions import db
    from app.models import ServiceSlice
    from app.models.backup import Backup, BackupStatus, BackupTarget, BackupTargetKind
    from app.models.enums import SliceStatus, SliceType
    from app.drivers import get_driver
    w = world
    target = BackupTarget(organisation_id=w.org.id, name="local",
                          kind=BackupTargetKind.DIRECTORY, config={"path": str(w.tmp / "dumps")})
    db.session.add(target)
    db.session.commit()
    op = _run_op(start_backup(w.slice, target, enqueue=False).id)
    backup = db.session.get(Backup, op.result["backup_id"])
    assert backup.status == BackupStatus.SUCCEEDED
    dump = w.tmp / "dumps" / backup.key
    data = dump.read_bytes()
    assert data[:5] == b"PGDMP"                       # pg_dump's custom format
    assert backup.size_bytes == len(data)
    assert backup.sha256 == hashlib.sha256(data).hexdigest()
    # The staging file on the server is gone.
    assert w.srv.exec("sh", "-c", "ls /home/keystone/operations/*/backup-*.dump 2>/dev/null "
                      "| wc -l").stdout.strip() == "0"

    _psql(w, "shop", "DROP TABLE orders")
    with pytest.raises(Exception):
        _psql(w, "shop", "SELECT count(*) FROM orders")
    # Same database: the typed name is required, checked again by the handler.
    bad = _run_op(start_restore(backup, w.slice, confirm="wrong", enqueue=False).id, "failed")
    assert "not confirmed" in bad.error
    _run_op(start_restore(backup, w.slice, confirm="shop", enqueue=False).id)
    assert _psql(w, "shop", "SELECT item FROM orders WHERE id = 1") == "keystone 'quoted' row"
    # Owned by the slice's user again, so the application can write to it.
    assert _psql(w, "shop", "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'") == "shop"

    # Into a new database slice: provisioned, then restored, owned by its own user.
    config, creds = get_driver(w.pg).new_slice_config("shop_copy")
    copy = ServiceSlice(service=w.pg, name="shop_copy", type=SliceType.POSTGRES_DATABASE,
                        status=SliceStatus.PENDING, config=config, credentials=creds)
    db.session.add(copy)
    db.session.commit()
    _run_op(start_restore(backup, copy, enqueue=False).id)
    db.session.refresh(copy)
    assert copy.status == SliceStatus.READY
    assert _psql(w, "shop_copy", "SELECT item FROM orders") == "keystone 'quoted' row"
    assert _psql(w, "shop_copy",
                 "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'") == "shop_copy"


@pytest.fixture(scope="module")
def moto_server():
    """A real S3 API server (moto's server mode) on localhost, as a subprocess."""
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                             "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:  # pragma: no cover
        proc.kill()
        pytest.fail("moto_server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_s3_round_trip_against_a_real_s3_api(world, moto_server):
    import boto3
    from app.backups.handlers import start_backup, start_restore
    from app.extensions import db
    from app.models import Operation
    from app.models.backup import Backup, BackupStatus, BackupTarget, BackupTargetKind
    w = world
    secret = "moto-secret-" + str(w.base)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                      aws_access_key_id="AKIAKEYSTONETEST", aws_secret_access_key=secret)
    s3.create_bucket(Bucket="keystone-backups")
    target = BackupTarget(organisation_id=w.org.id, name="s3", kind=BackupTargetKind.S3,
                          config={"endpoint_url": moto_server, "region": "us-east-1",
                                  "bucket": "keystone-backups", "prefix": "prod"},
                          credentials={"access_key_id": "AKIAKEYSTONETEST",
                                       "secret_access_key": secret})
    db.session.add(target)
    db.session.commit()
    _psql(w, "shop", "INSERT INTO orders VALUES (2, 'from s3')")
    op = _run_op(start_backup(w.slice, target, enqueue=False).id)
    backup = db.session.get(Backup, op.result["backup_id"])
    body = s3.get_object(Bucket="keystone-backups", Key=f"prod/{backup.key}")["Body"].read()
    assert body[:5] == b"PGDMP"
    assert backup.sha256 == hashlib.sha256(body).hexdigest() and backup.size_bytes == len(body)
    # The secret is in no step record, script or log of the operation.
    op = db.session.get(Operation, op.id)
    recorded = " ".join(f"{s.logs} {s.script} {s.error_logs}" for s in op.steps)
    assert secret not in recorded and secret not in str(op.params)

    _psql(w, "shop", "DELETE FROM orders WHERE id = 2")
    _run_op(start_restore(backup, w.slice, confirm="shop", enqueue=False).id)
    assert _psql(w, "shop", "SELECT item FROM orders WHERE id = 2") == "from s3"
    assert backup.status == BackupStatus.SUCCEEDED

    # Retention after a scheduled backup: keep 1 -> the older scheduled object is deleted
    # from the bucket; the manual backup above is never removed by retention.
    from app.models.backup import BackupPolicy, BackupTrigger
    db.session.add(BackupPolicy(slice_id=w.slice.id, target_id=target.id, frequency="daily",
                                keep=1))
    db.session.commit()
    first = db.session.get(Backup, _run_op(start_backup(
        w.slice, target, trigger=BackupTrigger.SCHEDULED, enqueue=False).id).result["backup_id"])
    second = db.session.get(Backup, _run_op(start_backup(
        w.slice, target, trigger=BackupTrigger.SCHEDULED, enqueue=False).id).result["backup_id"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="keystone-backups")["Contents"]}
    assert f"prod/{second.key}" in keys and f"prod/{backup.key}" in keys
    assert f"prod/{first.key}" not in keys
    db.session.refresh(first)
    assert first.status == BackupStatus.DELETED


def test_a_failing_backup_is_a_failed_operation(world):
    from app.backups.handlers import start_backup
    from app.extensions import db
    from app.models import ServiceSlice
    from app.models.backup import Backup, BackupStatus, BackupTarget
    from app.models.enums import SliceStatus, SliceType
    w = world
    ghost = ServiceSlice(service=w.pg, name="ghost", type=SliceType.POSTGRES_DATABASE,
                         status=SliceStatus.READY, config={"database": "ghost",
                                                           "username": "ghost"})
    db.session.add(ghost)
    db.session.commit()
    target = db.session.query(BackupTarget).filter_by(name="local").one()
    op = _run_op(start_backup(ghost, target, enqueue=False).id, "failed")
    assert "pg_dump" in op.error and "ghost" in op.error
    backup = db.session.query(Backup).filter_by(operation_id=op.id).one()
    assert backup.status == BackupStatus.FAILED and backup.sha256 is None
    assert not list((w.tmp / "dumps").rglob("*ghost*"))   # no partial file left behind
