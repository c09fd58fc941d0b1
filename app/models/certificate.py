"""What each gateway's Caddy holds for each of its domains (issue 22): read, not decided.

One row per (gateway service, hostname), refreshed by :func:`app.certificates.check_gateway`
from the certificate files in the gateway's storage and the gateway's own log (issuer,
validity, the last obtain/renew attempt and its error). Caddy owns issuance and renewal;
this table is what Keystone last saw, for the UI and the expiry warning.
"""
from __future__ import annotations

import datetime as dt

from app.models.base import Mapped, OrgScoped, db, fk, mapped_column, sa


class GatewayCertificate(OrgScoped, db.Model):
    __tablename__ = "gateway_certificates"
    __table_args__ = (sa.UniqueConstraint("service_id", "hostname"),)
    org_path = ("service",)

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = fk("services.id")
    hostname: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    issuer: Mapped[str | None] = mapped_column(sa.String(255))
    serial: Mapped[str | None] = mapped_column(sa.String(80))
    not_before: Mapped[dt.datetime | None] = mapped_column()
    not_after: Mapped[dt.datetime | None] = mapped_column()
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    checked_at: Mapped[dt.datetime] = mapped_column(nullable=False)

    service = db.relationship("Service")
