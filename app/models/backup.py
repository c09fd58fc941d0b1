"""Postgres backups (issue 17.3): targets, per-slice policies, and the backups taken.

* :class:`BackupTarget` -- where dumps go: a directory on the Keystone host (the dump
  reaches it over SFTP from the database server) or an S3-compatible bucket. S3
  credentials live in ``credentials`` (encrypted at rest, never in params or logs).
* :class:`BackupPolicy` -- one per database slice: target, frequency, retention.
* :class:`Backup` -- one dump: where it is, its size and SHA-256, the operation that made it.
"""
from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy.orm import relationship

from app.crypto import EncryptedJSON
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)


class BackupTargetKind(StrEnum):
    DIRECTORY = "directory"   # a directory on the Keystone host (reached over SFTP)
    S3 = "s3"                 # any S3-compatible store


class BackupFrequency(StrEnum):
    OFF = "off"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"


class BackupStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"       # removed by retention or by hand


class BackupTrigger(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    BEFORE_UPDATE = "before_update"


class BackupTarget(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "backup_targets"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    name: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    kind: Mapped[BackupTargetKind] = enum_column(BackupTargetKind)
    # directory: {"path"}; s3: {"endpoint_url", "region", "bucket", "prefix"}
    config: Mapped[dict] = json_column()
    # s3: {"access_key_id", "secret_access_key"}
    credentials = mapped_column(EncryptedJSON, nullable=True)

    def describe(self) -> str:
        cfg = self.config or {}
        if self.kind == BackupTargetKind.DIRECTORY:
            return f"directory {cfg.get('path')}"
        where = cfg.get("endpoint_url") or "AWS"
        return f"s3://{cfg.get('bucket')}/{cfg.get('prefix') or ''} at {where}"


class BackupPolicy(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "backup_policies"
    org_path = ("slice", "service")

    id: Mapped[int] = mapped_column(primary_key=True)
    slice_id: Mapped[int] = mapped_column(sa.ForeignKey("service_slices.id", ondelete="CASCADE"),
                                          nullable=False, unique=True)
    target_id: Mapped[int] = fk("backup_targets.id")
    frequency: Mapped[BackupFrequency] = enum_column(BackupFrequency, BackupFrequency.OFF)
    keep: Mapped[int] = mapped_column(default=7, nullable=False)
    # When the tick last started a scheduled backup (success or not): the next is due
    # one interval later, so a failing backup is retried each interval, never in a loop.
    last_scheduled_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    slice = relationship("ServiceSlice")
    target = relationship("BackupTarget")


class Backup(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    slice_id: Mapped[int] = fk("service_slices.id")
    target_id: Mapped[int] = fk("backup_targets.id")
    operation_id: Mapped[int | None] = fk("operations.id", nullable=True, ondelete="SET NULL")
    status: Mapped[BackupStatus] = enum_column(BackupStatus, BackupStatus.RUNNING)
    trigger: Mapped[BackupTrigger] = enum_column(BackupTrigger, BackupTrigger.MANUAL)
    database: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    key: Mapped[str] = mapped_column(sa.String(512), nullable=False)  # file name / object key
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)

    slice = relationship("ServiceSlice")
    target = relationship("BackupTarget")


__all__ = ["BackupTarget", "BackupPolicy", "Backup", "BackupTargetKind", "BackupFrequency",
           "BackupStatus", "BackupTrigger"]
