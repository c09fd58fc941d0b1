"""Server metrics (issue 17 section 4): one row per server per minute, rolled up per hour.

``resolution`` is ``minute`` (kept 24 h) or ``hour`` (kept 30 days); ``taken_at`` is the
start of the minute or hour (UTC, naive like every timestamp here). An hour row is the mean
of that hour's minute samples, kept up to date as they arrive (``samples`` counts them), so
the roll-up costs one upsert per sample and never rescans the minutes.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import relationship

from app.models.base import Mapped, OrgScoped, db, fk, json_column, mapped_column, sa

MINUTE = "minute"
HOUR = "hour"


class ServerMetric(OrgScoped, db.Model):
    __tablename__ = "server_metrics"
    __table_args__ = (sa.UniqueConstraint("server_id", "resolution", "taken_at"),)
    org_path = ("server",)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = fk("servers.id")
    resolution: Mapped[str] = mapped_column(sa.String(8), nullable=False)
    taken_at: Mapped[dt.datetime] = mapped_column(nullable=False)
    samples: Mapped[int] = mapped_column(default=1, nullable=False)
    cpu_percent: Mapped[float] = mapped_column(nullable=False)
    mem_used_mb: Mapped[float] = mapped_column(nullable=False)
    mem_total_mb: Mapped[float] = mapped_column(nullable=False)
    disk_used_gb: Mapped[float] = mapped_column(nullable=False)
    disk_total_gb: Mapped[float] = mapped_column(nullable=False)
    load1: Mapped[float] = mapped_column(nullable=False)
    load5: Mapped[float] = mapped_column(nullable=False)
    load15: Mapped[float] = mapped_column(nullable=False)
    # {container name: {"cpu": percent, "mem_mb": MiB}}
    containers: Mapped[dict] = json_column()

    server = relationship("Server")

    @property
    def mem_percent(self) -> float:
        return 100.0 * self.mem_used_mb / self.mem_total_mb if self.mem_total_mb else 0.0

    @property
    def disk_percent(self) -> float:
        return 100.0 * self.disk_used_gb / self.disk_total_gb if self.disk_total_gb else 0.0
