"""Providers create servers; servers are reached over SSH with a pinned host key."""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.crypto import EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, enum_column, fk,
                             json_column, mapped_column, sa)
from app.models.enums import ProviderType, ServerStatus


class Provider(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "providers"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    name: Mapped[str] = mapped_column(sa.String(80), nullable=False)
    type: Mapped[ProviderType] = enum_column(ProviderType)
    api_token = mapped_column(EncryptedText, nullable=True)
    config: Mapped[dict] = json_column()

    organisation = relationship("Organisation")
    servers = relationship("Server", back_populates="provider")


class Server(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "servers"
    __table_args__ = (sa.UniqueConstraint("organisation_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    provider_id: Mapped[int | None] = fk("providers.id", nullable=True, ondelete="SET NULL")
    name: Mapped[str] = mapped_column(sa.String(63), nullable=False)
    status: Mapped[ServerStatus] = enum_column(ServerStatus, ServerStatus.NEW)
    provider_server_id: Mapped[str | None] = mapped_column(sa.String(64))
    public_ip: Mapped[str | None] = mapped_column(sa.String(64))
    private_ip: Mapped[str | None] = mapped_column(sa.String(64))
    ssh_port: Mapped[int] = mapped_column(default=22, nullable=False)
    # Host-key fingerprint pinned on first contact ("SHA256:..."); a mismatch is refused.
    host_key_fingerprint: Mapped[str | None] = mapped_column(sa.String(100))
    management_user: Mapped[str] = mapped_column(sa.String(32), default="keystone", nullable=False)
    # One-time bootstrap login (root or sudo user) for custom servers, cleared after provisioning.
    bootstrap_user: Mapped[str | None] = mapped_column(sa.String(32))
    bootstrap_private_key = mapped_column(EncryptedText, nullable=True)
    bootstrap_password = mapped_column(EncryptedText, nullable=True)
    docker_version: Mapped[str | None] = mapped_column(sa.String(64))
    compose_version: Mapped[str | None] = mapped_column(sa.String(64))
    docker_source: Mapped[str | None] = mapped_column(sa.String(32))
    provisioned_at: Mapped[dt.datetime | None] = mapped_column()
    facts: Mapped[dict] = json_column()
    # SPEC 14, "public fallback only if explicitly allowed": without a private network,
    # this server's services are offered to the organisation's other servers on its
    # public IP (opened to their public IPs only). Its one owner: app.endpoints.
    public_fallback: Mapped[bool] = mapped_column(default=False, server_default="0",
                                                  nullable=False)

    organisation = relationship("Organisation")
    provider = relationship("Provider", back_populates="servers")
    replicas = relationship("ServiceReplica", back_populates="server")

    @property
    def address(self) -> str | None:
        return self.public_ip
