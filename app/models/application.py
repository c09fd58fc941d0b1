"""Applications (repositories), their environments, attachments and variables."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.crypto import EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)
from app.models.enums import (AttachmentRole, EnvironmentStatus, RepositoryType,
                              SchedulerMode, VariableSource)


class Application(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "applications"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    name: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    repository_url: Mapped[str] = mapped_column(sa.String(500), nullable=False)
    repository_type: Mapped[RepositoryType] = enum_column(RepositoryType, RepositoryType.GIT)
    default_branch: Mapped[str] = mapped_column(sa.String(255), default="main", nullable=False)
    deploy_key_public: Mapped[str | None] = mapped_column(sa.Text)
    deploy_key_private = mapped_column(EncryptedText, nullable=True)
    deploy_key_fingerprint: Mapped[str | None] = mapped_column(sa.String(100))
    deploy_key_installed_at: Mapped[dt.datetime | None] = mapped_column()
    # known_hosts line(s) of the git host, trusted at first verification.
    repository_known_hosts: Mapped[str | None] = mapped_column(sa.Text)
    repository_branches: Mapped[list] = json_column(default=list)

    organisation = relationship("Organisation")
    environments = relationship("Environment", back_populates="application",
                                cascade="all, delete-orphan", order_by="Environment.id")


class Environment(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "environments"
    __table_args__ = (sa.UniqueConstraint("application_id", "name"),)
    org_path = ("application",)

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = fk("applications.id")
    name: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    branch: Mapped[str] = mapped_column(sa.String(255), nullable=False, default="main")
    status: Mapped[EnvironmentStatus] = enum_column(EnvironmentStatus, EnvironmentStatus.NEW)
    scheduler_enabled: Mapped[bool] = mapped_column(default=True, nullable=False)
    scheduler_target_service_id: Mapped[int | None] = fk("services.id", nullable=True,
                                                         ondelete="SET NULL", use_alter=True)
    scheduler_mode: Mapped[SchedulerMode] = enum_column(SchedulerMode, SchedulerMode.SINGLE)
    # Which replica runs `schedule:run` in single mode (moved by deploys).
    scheduler_replica_id: Mapped[int | None] = fk("service_replicas.id", nullable=True,
                                                  ondelete="SET NULL", use_alter=True)
    build_config: Mapped[dict] = json_column()
    registry_id: Mapped[int | None] = fk("registries.id", nullable=True, ondelete="SET NULL")
    current_artifact_id: Mapped[int | None] = fk("build_artifacts.id", nullable=True,
                                                 ondelete="SET NULL", use_alter=True)

    application = relationship("Application", back_populates="environments")
    services = relationship("Service", back_populates="environment",
                            foreign_keys="Service.environment_id", order_by="Service.id")
    attachments = relationship("EnvironmentAttachment", back_populates="environment",
                               cascade="all, delete-orphan")
    variables = relationship("EnvironmentVariable", back_populates="environment",
                             cascade="all, delete-orphan", order_by="EnvironmentVariable.key")
    scheduler_target_service = relationship("Service", foreign_keys=[scheduler_target_service_id],
                                            post_update=True)
    container_registry = relationship("Registry")
    current_artifact = relationship("BuildArtifact", foreign_keys=[current_artifact_id],
                                    post_update=True)
    retention = relationship("EnvironmentRetention", uselist=False, passive_deletes=True)

    @property
    def keep_artifacts(self) -> int:
        """Artifacts kept for rollback besides the running one (app.housekeeping)."""
        return self.retention.keep_artifacts if self.retention is not None else \
            EnvironmentRetention.DEFAULT_KEEP

    @keep_artifacts.setter
    def keep_artifacts(self, value: int) -> None:
        if self.retention is None:
            self.retention = EnvironmentRetention(keep_artifacts=int(value))
        else:
            self.retention.keep_artifacts = int(value)

    @property
    def organisation_id(self) -> int:
        return self.application.organisation_id


class EnvironmentRetention(TimestampMixin, db.Model):
    """An environment's housekeeping setting (issue 23): how many artifacts besides the
    running one its servers and registry keep for rollback. No row: the default."""

    __tablename__ = "environment_retention"
    DEFAULT_KEEP = 5

    environment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True)
    keep_artifacts: Mapped[int] = mapped_column(default=DEFAULT_KEEP, server_default="5",
                                                nullable=False)


class EnvironmentAttachment(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "environment_attachments"
    # One attachment per slice: an environment may have several domains (route slices) on
    # one gateway. One Postgres/Valkey attachment per (service, role) is app.attachments'.
    __table_args__ = (sa.UniqueConstraint("environment_id", "service_slice_id"),)
    org_path = ("environment", "application")

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = fk("environments.id")
    service_id: Mapped[int] = fk("services.id")
    service_slice_id: Mapped[int | None] = fk("service_slices.id", nullable=True,
                                              ondelete="SET NULL")
    role: Mapped[AttachmentRole] = enum_column(AttachmentRole)
    env_prefix: Mapped[str | None] = mapped_column(sa.String(32))
    is_primary: Mapped[bool] = mapped_column(default=True, nullable=False)
    config: Mapped[dict] = json_column()

    environment = relationship("Environment", back_populates="attachments")
    service = relationship("Service")
    service_slice = relationship("ServiceSlice")


class EnvironmentVariable(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "environment_variables"
    __table_args__ = (sa.UniqueConstraint("environment_id", "key", "source"),)
    org_path = ("environment", "application")

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = fk("environments.id")
    key: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    value = mapped_column(EncryptedText, nullable=False)
    source: Mapped[VariableSource] = enum_column(VariableSource, VariableSource.USER)
    service_slice_id: Mapped[int | None] = fk("service_slices.id", nullable=True,
                                              ondelete="CASCADE")
    overridable: Mapped[bool] = mapped_column(default=True, nullable=False)
    is_secret: Mapped[bool] = mapped_column(default=False, nullable=False)

    environment = relationship("Environment", back_populates="variables")
    service_slice = relationship("ServiceSlice")
