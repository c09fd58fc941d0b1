"""What the dashboard says about backups: never silent (issue 17.3).

A database slice whose newest backup failed, or whose schedule is late (no scheduled
backup started for a whole extra interval: the worker is not running), is an alert
until a later backup succeeds or the schedule catches up.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.backups import is_late
from app.extensions import db
from app.models import Service, ServiceSlice
from app.models.backup import Backup, BackupFrequency, BackupPolicy, BackupStatus
from app.models.base import utcnow


@dataclass(frozen=True)
class BackupAlert:
    service_id: int
    service_name: str
    slice_name: str
    problem: str                 # "failed" / "late"
    operation_id: int | None


def alerts(organisation_id: int, now=None) -> list[BackupAlert]:
    now = now or utcnow()
    out: list[BackupAlert] = []
    newest = (sa.select(Backup.slice_id, sa.func.max(Backup.id).label("id"))
              .where(Backup.organisation_id == organisation_id,
                     Backup.status != BackupStatus.DELETED.value)
              .group_by(Backup.slice_id).subquery())
    failed = db.session.execute(
        sa.select(Backup, ServiceSlice, Service).join(newest, newest.c.id == Backup.id)
        .join(ServiceSlice, ServiceSlice.id == Backup.slice_id)
        .join(Service, Service.id == ServiceSlice.service_id)
        .where(Backup.status == BackupStatus.FAILED.value)).all()
    for backup, sl, svc in failed:
        out.append(BackupAlert(svc.id, svc.name, sl.name, "failed", backup.operation_id))
    policies = db.session.execute(
        sa.select(BackupPolicy, ServiceSlice, Service)
        .join(ServiceSlice, ServiceSlice.id == BackupPolicy.slice_id)
        .join(Service, Service.id == ServiceSlice.service_id)
        .where(Service.organisation_id == organisation_id,
               BackupPolicy.frequency != BackupFrequency.OFF.value)).all()
    for p, sl, svc in policies:
        if is_late(p.frequency, p.last_scheduled_at, p.created_at, now):
            out.append(BackupAlert(svc.id, svc.name, sl.name, "late", None))
    return out


__all__ = ["BackupAlert", "alerts"]
