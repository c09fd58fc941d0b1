"""Backup and restore operations, and the scheduler tick (issue 17.3).

``database_backup`` (target: the slice): ``pg_dump -Fc`` runs inside the Postgres
container and writes a staging file in the operation's work directory on the
database server; the file is then streamed over SFTP (the pooled paramiko
connection) into the target -- a directory on the Keystone host, or an S3
multipart upload -- with its SHA-256 and size computed on the way and recorded on
the :class:`~app.models.backup.Backup` row. The staging file is removed whatever
happens. Scheduled backups then apply the policy's retention.

``database_restore`` (target: the slice restored INTO): the dump streams from the
target back to a staging file over SFTP, its SHA-256 is checked against the one
recorded, then ``pg_restore --clean --single-transaction`` runs into the database
(the web replicas stay up: they see the old data or the new, never half). Restoring
into the same database needs its name typed; a new slice is provisioned first.

Scheduling: ``keystone worker`` enqueues :func:`tick_job` every TICK_INTERVAL seconds
beside the periodic health check (the same Redis-TTL mechanism, see
:mod:`app.jobs.worker`). One tick starts a ``database_backup`` for every policy that
is due; a failed backup is a failed operation (on the dashboard), and the next one
is due one interval later. A page shows "late" when a due backup has not started
for a whole extra interval (the worker is not running).
"""
from __future__ import annotations

import logging
import posixpath

import sqlalchemy as sa

from app import redis_keys
from app.backups import Sha256Sink, HashingReader, expired, is_due, object_key
from app.backups.targets import TargetError, store_for, target_secrets
from app.drivers import get_driver
from app.drivers.postgres.driver import dump_command, restore_command
from app.extensions import db
from app.models import Operation, ServiceSlice
from app.models.backup import (Backup, BackupFrequency, BackupPolicy, BackupStatus,
                               BackupTarget, BackupTrigger)
from app.models.base import utcnow
from app.models.enums import OperationKind, ReplicaStatus, SliceStatus, SliceType
from app.operations import OperationContext, StepFailed, operation_handler, start_operation
from app.shell import cmd
from app.services_ops.steps import running_container

log = logging.getLogger(__name__)

TICK_INTERVAL = 60
ACTIVE = ("pending", "queued", "running")


def tick_key(config=None) -> str:
    return redis_keys.key("backups", "tick", config=config)


# --------------------------------------------------------------------------- starting

def lock_keys(slice_: ServiceSlice) -> list[str]:
    # The service's key: an update of Postgres queued after a backup waits for it.
    return [f"service:{slice_.service_id}"]


def start_backup(slice_: ServiceSlice, target: BackupTarget, *, user=None,
                 trigger: BackupTrigger = BackupTrigger.MANUAL, enqueue: bool = True) -> Operation:
    if slice_.type != SliceType.POSTGRES_DATABASE:
        raise StepFailed("Only Postgres database slices can be backed up.")
    return start_operation(OperationKind.DATABASE_BACKUP, target_type="service_slice",
                           target_id=slice_.id, organisation_id=slice_.service.organisation_id,
                           user=user, params={"target_id": target.id,
                                              "trigger": BackupTrigger(trigger).value},
                           lock_keys=lock_keys(slice_),
                           summary=f"Back up {slice_.name} to {target.name}", enqueue=enqueue)


def start_restore(backup: Backup, into: ServiceSlice, *, user=None,
                  confirm: str | None = None, enqueue: bool = True) -> Operation:
    params = {"backup_id": backup.id}
    if confirm is not None:
        params["confirm"] = confirm
    return start_operation(OperationKind.DATABASE_RESTORE, target_type="service_slice",
                           target_id=into.id, organisation_id=into.service.organisation_id,
                           user=user, params=params, lock_keys=lock_keys(into),
                           summary=f"Restore backup #{backup.id} into {into.name}",
                           enqueue=enqueue)


def active_backup(slice_id: int) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.kind == OperationKind.DATABASE_BACKUP.value,
                                   Operation.target_type == "service_slice",
                                   Operation.target_id == slice_id,
                                   Operation.status.in_(ACTIVE))
        .limit(1)).scalar_one_or_none()


# --------------------------------------------------------------------------- helpers

def _staging(ctx: OperationContext, name: str) -> str:
    return posixpath.join(ctx.workdir(), name)


def _remove_staging_later(ctx: OperationContext, server_id: int, path: str) -> None:
    """Remove the staging file after the handler, whatever happened (a clean-up step)."""
    def remove(ctx: OperationContext) -> None:
        with ctx.step("Remove the staging file", server=server_id) as step:
            step.run(cmd("rm", "-f", "--", path), pty=False, timeout=60)
    ctx.on_cleanup(remove)


def _target(target_id) -> BackupTarget:
    target = db.session.get(BackupTarget, int(target_id or 0))
    if target is None:
        raise StepFailed("The backup target no longer exists.")
    return target


def _mask(ctx: OperationContext, target: BackupTarget) -> None:
    for value in target_secrets(target):
        ctx.secret(value)


# --------------------------------------------------------------------------- backup

@operation_handler(OperationKind.DATABASE_BACKUP)
def backup_database(ctx: OperationContext) -> None:
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The database slice no longer exists.")
    target = _target(ctx.params.get("target_id"))
    _mask(ctx, target)
    service = slice_.service
    driver = get_driver(service)
    database, _role = driver.slice_names(slice_)
    trigger = BackupTrigger(ctx.params.get("trigger") or "manual")
    backup = Backup(organisation_id=service.organisation_id, slice_id=slice_.id,
                    target_id=target.id, operation_id=ctx.id, status=BackupStatus.RUNNING,
                    trigger=trigger, database=database, key="")
    db.session.add(backup)
    db.session.flush()
    backup.key = object_key(service.name, database, utcnow(), backup.id)
    db.session.commit()
    ctx.result.update({"backup_id": backup.id})
    try:
        _dump_and_store(ctx, slice_, target, backup, database)
    except BaseException:
        db.session.rollback()
        backup.status = BackupStatus.FAILED
        backup.finished_at = utcnow()
        db.session.commit()
        raise
    if trigger == BackupTrigger.SCHEDULED:
        _apply_retention(ctx, slice_)


def _dump_and_store(ctx, slice_, target, backup, database) -> None:
    service = slice_.service
    container = running_container(service)
    staging = _staging(ctx, f"backup-{backup.id}.dump")
    _remove_staging_later(ctx, service.server_id, staging)
    with ctx.step(f"Dump database {database} (pg_dump -Fc)", server=service.server) as step:
        step.mkdir(ctx.workdir())
        step.run(dump_command(container, database, staging), pty=False)
    with ctx.step(f"Copy the dump to {target.name} ({target.kind.value})",
                  server=service.server) as step:
        conn = step.connection()
        store = store_for(target)
        sink_holder: dict = {}

        def stream(write) -> int:
            sink = Sha256Sink(write)
            sink_holder["sink"] = sink
            conn.stream_from(staging, sink, cancel=ctx.active_cancel_event)
            return sink.size

        try:
            store.upload(backup.key, stream)
        except TargetError as exc:
            raise StepFailed(str(exc)) from None
        sink = sink_holder["sink"]
        if sink.size == 0:
            raise StepFailed("pg_dump wrote an empty file: nothing was backed up.")
        backup.size_bytes = sink.size
        backup.sha256 = sink.hexdigest
        step.log(f"stored {backup.key}: {sink.size} bytes, sha256 {sink.hexdigest}")
    backup.status = BackupStatus.SUCCEEDED
    backup.finished_at = utcnow()
    ctx.result.update({"size_bytes": backup.size_bytes, "sha256": backup.sha256,
                       "key": backup.key})
    db.session.commit()


def _apply_retention(ctx: OperationContext, slice_: ServiceSlice) -> None:
    policy = db.session.execute(sa.select(BackupPolicy).where(
        BackupPolicy.slice_id == slice_.id)).scalar_one_or_none()
    if policy is None:
        return
    backups = db.session.execute(sa.select(Backup).where(
        Backup.slice_id == slice_.id, Backup.target_id == policy.target_id)).scalars().all()
    old = expired(backups, policy.keep)
    with ctx.step(f"Retention: keep the {policy.keep} newest scheduled backups") as step:
        if not old:
            step.unchanged("nothing to remove")
            return
        store = store_for(policy.target)
        for b in old:
            store.delete(b.key)
            b.status = BackupStatus.DELETED
            step.log(f"removed {b.key}")
        db.session.commit()


# --------------------------------------------------------------------------- restore

@operation_handler(OperationKind.DATABASE_RESTORE)
def restore_database(ctx: OperationContext) -> None:
    into: ServiceSlice = ctx.target
    if into is None:
        raise StepFailed("The database slice to restore into no longer exists.")
    backup = db.session.get(Backup, int(ctx.params.get("backup_id") or 0))
    if backup is None or backup.status != BackupStatus.SUCCEEDED:
        raise StepFailed("The backup does not exist or holds no dump.")
    if backup.slice.service_id != into.service_id:
        raise StepFailed("A backup is restored into a database of the same Postgres service.")
    service = into.service
    driver = get_driver(service)
    target = backup.target
    _mask(ctx, target)
    if into.status == SliceStatus.PENDING:  # "restore into a new database": create it first
        from app.services_ops.slices import provision_new_slice
        provision_new_slice(ctx, into)
    elif into.status != SliceStatus.READY:
        raise StepFailed(f"The database {into.name} is {into.status.value}: it cannot be restored into.")
    else:  # an existing database: its data is replaced, so its name must have been typed
        database, _ = driver.slice_names(into)
        if ctx.params.get("confirm") != database:
            raise StepFailed("The restore was not confirmed with the database's name.")
    database, role = driver.slice_names(into)
    container = running_container(service)
    staging = _staging(ctx, f"restore-{backup.id}.dump")
    _remove_staging_later(ctx, service.server_id, staging)
    with ctx.step(f"Fetch backup #{backup.id} from {target.name}", server=service.server) as step:
        step.mkdir(ctx.workdir())
        conn = step.connection()
        try:
            source = store_for(target).open(backup.key)
        except TargetError as exc:
            raise StepFailed(str(exc)) from None
        reader = HashingReader(source)
        try:
            size = conn.stream_to(staging, reader.read, cancel=ctx.active_cancel_event)
        finally:
            source.close()
        if backup.sha256 and reader.hexdigest != backup.sha256:
            raise StepFailed(f"The backup's checksum does not match (sha256 {reader.hexdigest}, "
                             f"recorded {backup.sha256}): not restoring a damaged dump.")
        step.log(f"fetched {size} bytes, sha256 {reader.hexdigest} (matches the record)")
    with ctx.step(f"Restore into {database} (pg_restore --clean --single-transaction)",
                  server=service.server) as step:
        step.run(restore_command(container, database, role, staging), pty=False)
    ctx.result.update({"restored_backup": backup.id, "database": database})
    db.session.commit()


# --------------------------------------------------------------------------- the tick

def due_policies(now) -> list[BackupPolicy]:
    policies = db.session.execute(sa.select(BackupPolicy).where(
        BackupPolicy.frequency != BackupFrequency.OFF.value)).scalars().all()
    return [p for p in policies
            if is_due(p.frequency, p.last_scheduled_at, p.created_at, now)]


def tick(now=None) -> list[int]:
    """Start the scheduled backups that are due; return the operation ids started."""
    now = now or utcnow()
    started: list[int] = []
    for policy in due_policies(now):
        slice_ = policy.slice
        if slice_.status != SliceStatus.READY:
            continue
        if not any(r.status == ReplicaStatus.RUNNING for r in slice_.service.replicas):
            continue  # nothing to dump; the page says the service is not running
        if active_backup(slice_.id) is not None:
            continue
        policy.last_scheduled_at = now
        op = start_backup(slice_, policy.target, trigger=BackupTrigger.SCHEDULED)
        started.append(op.id)
    db.session.commit()
    return started


def tick_job() -> dict:
    """RQ entry point (enqueued by ``keystone worker``); never raises into RQ's job data."""
    from flask import has_app_context
    if has_app_context():
        return {"started": tick()}
    from app.jobs import get_app
    app = get_app()
    with app.app_context():
        try:
            return {"started": tick()}
        except Exception as exc:  # noqa: BLE001 - logged; the page shows a late schedule
            log.error("backup tick failed: %s", type(exc).__name__)
            return {"error": type(exc).__name__}
        finally:
            db.session.remove()


def schedule_tick(app, conn, queue) -> bool:
    """Enqueue :func:`tick_job` unless one was enqueued in the last interval (any worker)."""
    if not conn.set(tick_key(app.config), "1", nx=True, ex=max(1, TICK_INTERVAL - 5)):
        return False
    queue.enqueue("app.backups.handlers.tick_job", job_timeout=TICK_INTERVAL * 4,
                  result_ttl=TICK_INTERVAL * 2, failure_ttl=3600,
                  description="keystone scheduled backups tick")
    return True


__all__ = ["start_backup", "start_restore", "tick", "tick_job", "schedule_tick",
           "backup_database", "restore_database"]
