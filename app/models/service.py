"""Services (logical), their replicas (runtime placement), slices and endpoints."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.crypto import EncryptedJSON
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)
from app.models.enums import (PRESENT_REPLICA_STATUSES, DeployPolicy, EndpointScope,
                              HealthStatus, ReplicaStatus, ServiceCategory, ServiceStatus,
                              SliceStatus, SliceType, UpdateStatus)


class Service(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "environment_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    environment_id: Mapped[int | None] = fk("environments.id", nullable=True)
    server_id: Mapped[int | None] = fk("servers.id", nullable=True, ondelete="SET NULL")
    name: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    category: Mapped[ServiceCategory] = enum_column(ServiceCategory)
    type: Mapped[str] = mapped_column(sa.String(32), nullable=False)  # driver type, e.g. "postgres"
    version_track: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="")
    driver_name: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    status: Mapped[ServiceStatus] = enum_column(ServiceStatus, ServiceStatus.NEW)
    desired_replicas: Mapped[int] = mapped_column(default=1, nullable=False)
    desired_revision: Mapped[int] = mapped_column(default=1, nullable=False)
    deploy_policy: Mapped[DeployPolicy] = enum_column(DeployPolicy, DeployPolicy.MANUAL)
    process_roles: Mapped[list] = json_column(default=list)
    current_image_digest: Mapped[str | None] = mapped_column(sa.String(255))
    available_image_digest: Mapped[str | None] = mapped_column(sa.String(255))
    update_status: Mapped[UpdateStatus] = enum_column(UpdateStatus, UpdateStatus.UNKNOWN)
    default_cpu_limit: Mapped[float | None] = mapped_column()
    default_memory_limit_mb: Mapped[int | None] = mapped_column()
    config: Mapped[dict] = json_column()
    # Driver secrets (e.g. the Postgres superuser password), never shown.
    secrets = mapped_column(EncryptedJSON, nullable=True)

    organisation = relationship("Organisation")
    environment = relationship("Environment", back_populates="services",
                               foreign_keys=[environment_id])
    server = relationship("Server")
    replicas = relationship("ServiceReplica", back_populates="service",
                            cascade="all, delete-orphan", order_by="ServiceReplica.id")
    slices = relationship("ServiceSlice", back_populates="service",
                          cascade="all, delete-orphan", order_by="ServiceSlice.id")
    endpoints = relationship("Endpoint", back_populates="service", cascade="all, delete-orphan")

    @property
    def present_replicas(self) -> list["ServiceReplica"]:
        """What pages list: replicas whose container exists, and ones the periodic health
        check found dead or vanished (a problem to show). A replica Keystone itself removed
        (a failed deploy, a cutover) is gone and not listed."""
        return [r for r in self.replicas if r.status in PRESENT_REPLICA_STATUSES
                or (r.status == ReplicaStatus.FAILED and r.container_state
                    and r.container_state != REMOVED_BY_KEYSTONE)]


REMOVED_BY_KEYSTONE = "removed"
"""``container_state`` of a replica whose container Keystone removed itself."""


class ServiceReplica(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "service_replicas"
    __table_args__ = (sa.UniqueConstraint("server_id", "container_name"),)
    org_path = ("service",)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = fk("services.id")
    server_id: Mapped[int] = fk("servers.id")
    operation_id: Mapped[int | None] = fk("operations.id", nullable=True, ondelete="SET NULL")
    container_name: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    container_id: Mapped[str | None] = mapped_column(sa.String(80))
    image_digest: Mapped[str | None] = mapped_column(sa.String(255))
    internal_host: Mapped[str | None] = mapped_column(sa.String(255))
    internal_port: Mapped[int | None] = mapped_column()
    public_port: Mapped[int | None] = mapped_column()
    status: Mapped[ReplicaStatus] = enum_column(ReplicaStatus, ReplicaStatus.PENDING)
    health_status: Mapped[HealthStatus] = enum_column(HealthStatus, HealthStatus.UNKNOWN)
    cpu_limit: Mapped[float | None] = mapped_column()
    memory_limit_mb: Mapped[int | None] = mapped_column()
    config: Mapped[dict] = json_column()
    # What the periodic health check (app.health) last saw: Docker's state of the container
    # (running / exited / restarting / gone / crash_loop), its restart count, and when.
    container_state: Mapped[str | None] = mapped_column(sa.String(32))
    restart_count: Mapped[int | None] = mapped_column()
    checked_at: Mapped[dt.datetime | None] = mapped_column()

    service = relationship("Service", back_populates="replicas")
    server = relationship("Server", back_populates="replicas")
    operation = relationship("Operation")

    @property
    def effective_cpu_limit(self) -> float | None:
        return self.cpu_limit if self.cpu_limit is not None else self.service.default_cpu_limit

    @property
    def effective_memory_limit_mb(self) -> int | None:
        if self.memory_limit_mb is not None:
            return self.memory_limit_mb
        return self.service.default_memory_limit_mb


class ServiceSlice(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "service_slices"
    __table_args__ = (sa.UniqueConstraint("service_id", "type", "name"),)
    org_path = ("service",)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = fk("services.id")
    environment_id: Mapped[int | None] = fk("environments.id", nullable=True, ondelete="SET NULL")
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    type: Mapped[SliceType] = enum_column(SliceType)
    status: Mapped[SliceStatus] = enum_column(SliceStatus, SliceStatus.PENDING)
    config: Mapped[dict] = json_column()
    credentials = mapped_column(EncryptedJSON, nullable=True)

    service = relationship("Service", back_populates="slices")
    environment = relationship("Environment")


class Endpoint(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "endpoints"
    org_path = ("service",)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = fk("services.id")
    service_replica_id: Mapped[int | None] = fk("service_replicas.id", nullable=True)
    scope: Mapped[EndpointScope] = enum_column(EndpointScope)
    hostname: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    ip_address: Mapped[str | None] = mapped_column(sa.String(64))
    port: Mapped[int] = mapped_column(nullable=False)
    priority: Mapped[int] = mapped_column(default=100, nullable=False)
    health_status: Mapped[HealthStatus] = enum_column(HealthStatus, HealthStatus.UNKNOWN)

    service = relationship("Service", back_populates="endpoints")
    replica = relationship("ServiceReplica")
