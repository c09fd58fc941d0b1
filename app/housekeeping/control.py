"""The control plane's own housekeeping (issue 23): old step logs and Redis log streams.

* :func:`archive_old_logs` -- the logs of steps of operations that ended more than
  ``KEYSTONE_LOG_RETENTION_DAYS`` (default 90) days ago are zlib-compressed into
  ``operation_log_archives`` and emptied in the hot ``operation_steps`` table;
  :attr:`app.models.OperationStep.log_text` reads them back, so the operation's page and
  its replayed log still show them.
* :func:`trim_log_streams` -- an operation's Redis stream gets a TTL when it ends
  (``KEYSTONE_LOG_STREAM_TTL``) and is capped at ``KEYSTONE_LOG_STREAM_MAXLEN`` entries;
  a stream whose end was never published (Redis down at that moment) would live forever:
  streams of ended operations without a TTL get one, streams of unknown operations go.

Both run from the daily housekeeping tick (:func:`app.housekeeping.handlers.tick`).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import zlib

import sqlalchemy as sa

from app import redis_keys
from app.extensions import db
from app.models import Operation, OperationLogArchive, OperationStep
from app.models.base import utcnow
from app.models.enums import OperationStatus

log = logging.getLogger(__name__)

LOG_RETENTION_DAYS = int(os.environ.get("KEYSTONE_LOG_RETENTION_DAYS", "90"))
BATCH = 500
CONTROL_EVERY = 24 * 3600
TERMINAL = [s.value for s in (OperationStatus.SUCCEEDED, OperationStatus.FAILED,
                              OperationStatus.CANCELLED, OperationStatus.INTERRUPTED)]


def archive_old_logs(now: dt.datetime | None = None, days: int | None = None,
                     batch: int = BATCH) -> dict:
    """Move the logs of steps of operations that ended ``days`` ago into the archive."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=LOG_RETENTION_DAYS if days is None else days)
    steps = moved = 0
    while True:
        rows = db.session.execute(
            sa.select(OperationStep.id, OperationStep.logs)
            .join(Operation, Operation.id == OperationStep.operation_id)
            .where(Operation.status.in_(TERMINAL), Operation.finished_at < cutoff,
                   OperationStep.logs != "")
            .limit(batch)).all()
        if not rows:
            break
        for step_id, text in rows:
            data = text.encode("utf-8")
            archive = db.session.get(OperationLogArchive, step_id)
            if archive is not None:   # appended after an earlier archive: keep both
                data = zlib.decompress(archive.logs) + data
                archive.logs, archive.size, archive.archived_at = zlib.compress(data, 9), len(data), now
            else:
                db.session.add(OperationLogArchive(step_id=step_id, logs=zlib.compress(data, 9),
                                                   size=len(data), archived_at=now))
            moved += len(data)
        db.session.execute(sa.update(OperationStep).where(
            OperationStep.id.in_([r[0] for r in rows])).values(logs="")
            .execution_options(synchronize_session=False))
        db.session.commit()
        steps += len(rows)
    return {"steps_archived": steps, "bytes_archived": moved}


def trim_log_streams(client=None, now_ttl: int | None = None) -> dict:
    """TTL on streams of ended operations that have none; delete streams of operations the
    database does not know. Returns counts."""
    from app.operations import logstream
    client = client or logstream.redis_client()
    ttl = logstream.STREAM_TTL if now_ttl is None else now_ttl
    pattern = redis_keys.key("op", "*", "log")
    prefix = redis_keys.key("op", "")
    expired = deleted = 0
    for raw in client.scan_iter(match=pattern, count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        ident = key[len(prefix):].rpartition(":")[0]
        if not ident.isdigit():
            continue
        if client.ttl(key) != -1:
            continue   # expiring already (or gone)
        status = db.session.execute(sa.select(Operation.status).where(
            Operation.id == int(ident))).scalar()
        if status is None:
            client.delete(key)
            deleted += 1
        elif getattr(status, "value", status) in TERMINAL:
            client.expire(key, ttl)
            expired += 1
    return {"streams_expired": expired, "streams_deleted": deleted}


def control_plane_pass(now: dt.datetime | None = None) -> dict:
    """Once a day (a Redis key with a day's TTL): archive old logs, trim streams."""
    from app.operations import logstream
    try:
        if not logstream.redis_client().set(redis_keys.key("housekeeping", "control"), "1",
                                            nx=True, ex=CONTROL_EVERY):
            return {"skipped": "ran in the last day"}
    except Exception:  # noqa: BLE001 - Redis down: the logs can wait a day
        return {"skipped": "redis unavailable"}
    out = archive_old_logs(now)
    try:
        out.update(trim_log_streams())
    except Exception as exc:  # noqa: BLE001
        log.warning("trimming log streams failed: %s", type(exc).__name__)
    return out


__all__ = ["archive_old_logs", "trim_log_streams", "control_plane_pass", "LOG_RETENTION_DAYS"]
