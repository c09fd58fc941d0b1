"""Audit events: who looked at or changed something that is not an operation.

Revealing a secret environment variable is recorded here (the value never is).
Rows are written by ``app.audit.record`` only (actor, organisation and client
address come from the request).
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.models.base import Mapped, OrgScoped, db, fk, json_column, mapped_column, sa, utcnow


class AuditEvent(OrgScoped, db.Model):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = fk("organisations.id")
    user_id: Mapped[int | None] = fk("users.id", nullable=True, ondelete="SET NULL")
    action: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    target_id: Mapped[int] = mapped_column(nullable=False)
    detail: Mapped[dict] = json_column()
    # The client's address as the web tier sees it (ProxyFix honours
    # KEYSTONE_TRUSTED_PROXIES); None outside a request (a job, the CLI).
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, nullable=False, index=True)

    user = relationship("User")
