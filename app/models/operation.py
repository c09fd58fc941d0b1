"""Operations: the audit and execution record of every state change."""
from __future__ import annotations

import datetime as dt
import secrets as _secrets

from sqlalchemy.orm import relationship

from app.crypto import EncryptedJSON
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)
from app.models.enums import OperationKind, OperationStatus, StepStatus


def new_hash() -> str:
    return _secrets.token_hex(8)


class Operation(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "operations"
    __table_args__ = (
        sa.Index("ix_operations_target", "target_type", "target_id"),
        sa.Index("ix_operations_org_created", "organisation_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    parent_id: Mapped[int | None] = fk("operations.id", nullable=True)
    # Names the working directory on servers: /home/keystone/operations/<hash>/
    hash: Mapped[str] = mapped_column(sa.String(32), nullable=False, unique=True, default=new_hash)
    kind: Mapped[OperationKind] = enum_column(OperationKind)
    target_type: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    target_id: Mapped[int] = mapped_column(nullable=False)
    status: Mapped[OperationStatus] = enum_column(OperationStatus, OperationStatus.PENDING)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    created_by_id: Mapped[int | None] = fk("users.id", nullable=True, ondelete="SET NULL")
    # Set by the running worker every few seconds; the reaper ends stale ones.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column()
    timeout_seconds: Mapped[int] = mapped_column(default=1800, nullable=False)
    rq_job_id: Mapped[str | None] = mapped_column(sa.String(64))
    worker_name: Mapped[str | None] = mapped_column(sa.String(128))
    error: Mapped[str | None] = mapped_column(sa.Text)
    summary: Mapped[str | None] = mapped_column(sa.String(255))
    # Lock keys this operation needs (e.g. "environment:4", "gateway:2").
    lock_keys: Mapped[list] = json_column(default=list)
    params: Mapped[dict] = json_column()
    result: Mapped[dict] = json_column()
    image_digest: Mapped[str | None] = mapped_column(sa.String(255))

    parent = relationship("Operation", remote_side=[id], back_populates="children")
    children = relationship("Operation", back_populates="parent", order_by="Operation.id")
    steps = relationship("OperationStep", back_populates="operation",
                         cascade="all, delete-orphan", order_by="OperationStep.order")
    created_by = relationship("User")

    @property
    def is_terminal(self) -> bool:
        return OperationStatus(self.status).terminal

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return (end - self.started_at).total_seconds()


class OperationStep(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "operation_steps"
    __table_args__ = (sa.UniqueConstraint("operation_id", "order"),)
    org_path = ("operation",)

    id: Mapped[int] = mapped_column(primary_key=True)
    operation_id: Mapped[int] = fk("operations.id")
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    order: Mapped[int] = mapped_column(nullable=False)
    status: Mapped[StepStatus] = enum_column(StepStatus, StepStatus.PENDING)
    # The masked script: secrets appear as ***.
    script: Mapped[str | None] = mapped_column(sa.Text)
    logs: Mapped[str] = mapped_column(sa.Text, default="", nullable=False)
    error_logs: Mapped[str] = mapped_column(sa.Text, default="", nullable=False)
    secrets = mapped_column(EncryptedJSON, nullable=True)
    exit_code: Mapped[int | None] = mapped_column()
    server_id: Mapped[int | None] = fk("servers.id", nullable=True, ondelete="SET NULL")
    is_cleanup: Mapped[bool] = mapped_column(default=False, nullable=False)
    changed: Mapped[bool | None] = mapped_column()
    started_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    operation = relationship("Operation", back_populates="steps")
    archive = relationship("OperationLogArchive", uselist=False, lazy="select",
                           passive_deletes=True)

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        return (end - self.started_at).total_seconds()

    @property
    def log_text(self) -> str:
        """The step's log, from the hot column or, past the retention, from its archive."""
        if self.logs:
            return self.logs
        return self.archive.text if self.archive is not None else ""


class OperationLogArchive(db.Model):
    """A step's log past the retention (app.housekeeping.control): zlib-compressed, out of
    the hot ``operation_steps`` table, read back by :attr:`OperationStep.log_text`."""

    __tablename__ = "operation_log_archives"

    step_id: Mapped[int] = mapped_column(sa.ForeignKey("operation_steps.id", ondelete="CASCADE"),
                                         primary_key=True)
    logs: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    size: Mapped[int] = mapped_column(nullable=False)
    archived_at: Mapped[dt.datetime] = mapped_column(nullable=False)

    @property
    def text(self) -> str:
        import zlib
        return zlib.decompress(self.logs).decode("utf-8", "replace")


class OperationLock(db.Model):
    """A row per held lock; the unique key makes the database enforce exclusivity."""

    __tablename__ = "operation_locks"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    operation_id: Mapped[int] = fk("operations.id")
    acquired_at: Mapped[dt.datetime] = mapped_column(nullable=False)

    operation = relationship("Operation")
