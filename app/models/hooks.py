"""Deploy webhooks (push to deploy, app.hooks) and notification channels (app.notifications).

A deploy hook's secret is the HMAC key the git host signs with, so Keystone needs it in
clear to verify: it is encrypted at rest (EncryptedText), shown once when made or rotated.
``pending_commit_sha`` is the coalesced follow-up: pushes that arrive while a deploy of the
environment is active overwrite it, and the end of that deploy starts ONE deploy of it.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.crypto import EncryptedJSON, EncryptedText
from app.models.base import (Mapped, OrgScoped, TimestampMixin, db, fk, json_column,
                             mapped_column, sa)


class DeployHook(TimestampMixin, OrgScoped, db.Model):
    __tablename__ = "deploy_hooks"
    org_path = ("environment", "application")

    id: Mapped[int] = mapped_column(primary_key=True)
    environment_id: Mapped[int] = fk("environments.id")
    # The public part of the URL (/hooks/deploy/<token>): finds the hook, proves nothing.
    token: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    secret = mapped_column(EncryptedText, nullable=False)
    enabled: Mapped[bool] = mapped_column(default=True, nullable=False)
    rotated_at: Mapped[dt.datetime | None] = mapped_column()
    pending_commit_sha: Mapped[str | None] = mapped_column(sa.String(64))
    pending_since: Mapped[dt.datetime | None] = mapped_column()
    last_delivery_at: Mapped[dt.datetime | None] = mapped_column()

    environment = relationship("Environment")
    deliveries = relationship("DeployHookDelivery", back_populates="hook",
                              cascade="all, delete-orphan",
                              order_by="DeployHookDelivery.id.desc()")

    __table_args__ = (sa.UniqueConstraint("environment_id"),)


class DeployHookDelivery(OrgScoped, db.Model):
    """One request the hook answered (a replayed delivery id is refused by the unique key)."""

    __tablename__ = "deploy_hook_deliveries"
    __table_args__ = (sa.UniqueConstraint("hook_id", "delivery_id"),)
    org_path = ("hook", "environment", "application")

    id: Mapped[int] = mapped_column(primary_key=True)
    hook_id: Mapped[int] = fk("deploy_hooks.id")
    delivery_id: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(16), nullable=False)  # github/gitea/generic
    event: Mapped[str] = mapped_column(sa.String(40), nullable=False, default="")
    ref: Mapped[str] = mapped_column(sa.String(255), nullable=False, default="")
    commit_sha: Mapped[str | None] = mapped_column(sa.String(64))
    # deployed / coalesced / ignored
    outcome: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    reason: Mapped[str] = mapped_column(sa.String(255), nullable=False, default="")
    operation_id: Mapped[int | None] = fk("operations.id", nullable=True, ondelete="SET NULL")
    received_at: Mapped[dt.datetime] = mapped_column(nullable=False)

    hook = relationship("DeployHook", back_populates="deliveries")


class NotificationChannel(TimestampMixin, OrgScoped, db.Model):
    """Where an organisation's events go: ``kind`` email, slack, mattermost, discord, webhook.

    ``config`` holds what is not secret (SMTP host, port, sender, recipients, user);
    ``secrets`` (encrypted) the SMTP password, the incoming-webhook URL (it carries the
    token) or the generic webhook's URL and signing secret.
    """

    __tablename__ = "notification_channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    config: Mapped[dict] = json_column()
    secrets = mapped_column(EncryptedJSON, nullable=True)
    events: Mapped[list] = json_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True, nullable=False)

    deliveries = relationship("NotificationDelivery", back_populates="channel",
                              cascade="all, delete-orphan",
                              order_by="NotificationDelivery.id.desc()")


class NotificationDelivery(OrgScoped, db.Model):
    """One event sent (or being retried) to one channel: the channel's delivery log."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (sa.Index("ix_notification_deliveries_due", "status", "next_attempt_at"),)
    org_path = ("channel",)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel_id: Mapped[int] = fk("notification_channels.id")
    event: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    # The rendered event (never a secret: app.notifications.render redacts).
    payload: Mapped[dict] = json_column()
    # pending -> sent | retrying -> ... -> failed
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(default=0, nullable=False)
    response_code: Mapped[int | None] = mapped_column()
    error: Mapped[str] = mapped_column(sa.String(500), nullable=False, default="")
    created_at: Mapped[dt.datetime] = mapped_column(nullable=False)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column()
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column()

    channel = relationship("NotificationChannel", back_populates="deliveries")
