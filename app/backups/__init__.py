"""Postgres backups (issue 17.3): pure parts, unit-tested without Docker.

* :func:`interval_of` / :func:`next_due` / :func:`is_due` -- when a slice's scheduled
  backup is due (hourly, daily, weekly), counted from the last time the tick started one;
* :func:`expired` -- which backups retention removes (keep the N newest scheduled ones);
* :class:`Sha256Sink` -- a checksum and size computed while the dump streams;
* :func:`object_key` -- the file name / object key of a new backup.

The I/O lives in :mod:`app.backups.targets` (directory, S3) and
:mod:`app.backups.handlers` (the operations and the scheduler tick).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Callable, Iterable, Sequence

from app.models.backup import BackupFrequency, BackupStatus, BackupTrigger

INTERVALS = {
    BackupFrequency.HOURLY: dt.timedelta(hours=1),
    BackupFrequency.DAILY: dt.timedelta(days=1),
    BackupFrequency.WEEKLY: dt.timedelta(weeks=1),
}
MAX_KEEP = 1000
# A scheduled backup this late (past one extra interval) means the tick stopped: say so.
LATE_FACTOR = 2


def interval_of(frequency: "BackupFrequency | str") -> dt.timedelta | None:
    return INTERVALS.get(BackupFrequency(frequency))


def next_due(frequency: "BackupFrequency | str", last_scheduled_at: dt.datetime | None,
             created_at: dt.datetime) -> dt.datetime | None:
    """When the next scheduled backup is due; None when the schedule is off.

    A policy that never ran is due at once (its first backup should not wait a week).
    """
    interval = interval_of(frequency)
    if interval is None:
        return None
    if last_scheduled_at is None:
        return created_at
    return last_scheduled_at + interval


def is_due(frequency, last_scheduled_at, created_at, now: dt.datetime) -> bool:
    due = next_due(frequency, last_scheduled_at, created_at)
    return due is not None and due <= now


def is_late(frequency, last_scheduled_at, created_at, now: dt.datetime) -> bool:
    """True when the tick has not started a due backup for a whole extra interval."""
    due = next_due(frequency, last_scheduled_at, created_at)
    interval = interval_of(frequency)
    return due is not None and interval is not None and now - due > interval * (LATE_FACTOR - 1)


def expired(backups: Iterable, keep: int) -> list:
    """The scheduled, successful backups beyond the ``keep`` newest (oldest last kept).

    Manual and before-update backups are never removed by retention; failed and
    deleted ones hold no file. ``keep`` below 1 keeps one: retention never empties a slice.
    """
    keep = max(1, int(keep))
    eligible = [b for b in backups
                if BackupStatus(b.status) == BackupStatus.SUCCEEDED
                and BackupTrigger(b.trigger) == BackupTrigger.SCHEDULED]
    eligible.sort(key=lambda b: (b.created_at, b.id), reverse=True)
    return eligible[keep:]


class Sha256Sink:
    """A sink for streamed chunks: hashes, counts, and passes each chunk on."""

    def __init__(self, write: Callable[[bytes], object] | None = None):
        self._hash = hashlib.sha256()
        self._write = write
        self.size = 0

    def __call__(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        if self._write is not None:
            self._write(chunk)

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """A file-like ``read(n)`` over another reader that hashes and counts what passes."""

    def __init__(self, raw):
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()


_KEY_PART = re.compile(r"[^a-z0-9_.-]+")


def object_key(service_name: str, database: str, when: dt.datetime, backup_id: int) -> str:
    """``<service>/<database>/<UTC time>-<id>.dump``: sortable, unique, no shell metacharacters."""
    svc = _KEY_PART.sub("-", service_name.lower()).strip("-") or "service"
    db_ = _KEY_PART.sub("-", database.lower()).strip("-") or "db"
    return f"{svc}/{db_}/{when.strftime('%Y%m%dT%H%M%SZ')}-{backup_id}.dump"


def human_size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


__all__ = ["INTERVALS", "interval_of", "next_due", "is_due", "is_late", "expired",
           "Sha256Sink", "HashingReader", "object_key", "human_size"]
