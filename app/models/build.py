"""Registries and build artifacts: build once, run the same digest everywhere."""
from __future__ import annotations

from sqlalchemy.orm import relationship

from app.crypto import EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)
from app.models.enums import ArtifactStatus, RegistryType


class Registry(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "registries"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    name: Mapped[str] = mapped_column(sa.String(80), nullable=False)
    type: Mapped[RegistryType] = enum_column(RegistryType, RegistryType.GENERIC)
    url: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    username: Mapped[str | None] = mapped_column(sa.String(255))
    password = mapped_column(EncryptedText, nullable=True)
    namespace: Mapped[str | None] = mapped_column(sa.String(255))

    organisation = relationship("Organisation")


class BuildArtifact(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "build_artifacts"
    __table_args__ = (sa.Index("ix_build_artifacts_env_commit", "environment_id", "commit_sha"),)
    org_path = ("environment", "application")

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = fk("environments.id")
    commit_sha: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    # Hash of the build config, so the same commit + config is reused, not rebuilt.
    config_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="")
    image_tag: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    image_digest: Mapped[str | None] = mapped_column(sa.String(255))
    registry_ref: Mapped[str | None] = mapped_column(sa.String(500))
    built_by_operation_id: Mapped[int | None] = fk("operations.id", nullable=True,
                                                   ondelete="SET NULL")
    built_by_service_id: Mapped[int | None] = fk("services.id", nullable=True,
                                                 ondelete="SET NULL")
    status: Mapped[ArtifactStatus] = enum_column(ArtifactStatus, ArtifactStatus.PENDING)
    # `metadata` is reserved by SQLAlchemy's declarative base; the column keeps the spec's name.
    meta: Mapped[dict] = mapped_column("metadata", sa.JSON, default=dict, nullable=False)

    environment = relationship("Environment", foreign_keys=[environment_id])
    built_by_operation = relationship("Operation")
    built_by_service = relationship("Service")
