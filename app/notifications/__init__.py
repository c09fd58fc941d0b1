"""Notifications (issue 18 section 4): an organisation's channels hear about its events.

The one entry point is :func:`notify(org_id, event, payload)`: it writes one
``NotificationDelivery`` per enabled channel that chose ``event`` and enqueues an RQ job
per delivery (``app.jobs.deliver_notification(delivery_id)``, the id only). It never
raises and never waits on the network, so a dead channel cannot fail or delay a deploy.
A failed attempt is retried after :data:`retry_delays` (back-off); the worker's reaper
loop enqueues the due retries (:func:`dispatch_due`).

Events (:data:`EVENTS`). Emitted today: ``deploy.succeeded``, ``deploy.failed``,
``rollback.succeeded``, ``rollback.failed`` (the end of an environment deploy, from the
operations' end listener), ``server.unreachable`` (provisioning cannot reach a server),
``image.update_available`` (a service's track has a newer image). Defined for the parts
that emit them: ``disk.nearly_full`` (app.metrics, once per server per 6 h) and
``backup.failed`` (a failed or interrupted ``database_backup`` operation).
"""
from __future__ import annotations

import datetime as dt
import logging
import re

import sqlalchemy as sa

from app.extensions import db
from app.models import NotificationChannel, NotificationDelivery, Operation
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus

log = logging.getLogger(__name__)

EVENTS: dict[str, str] = {
    "deploy.succeeded": "Deploy succeeded",
    "deploy.failed": "Deploy failed",
    "rollback.succeeded": "Rollback succeeded",
    "rollback.failed": "Rollback failed",
    "server.unreachable": "Server unreachable",
    "disk.nearly_full": "Disk nearly full",
    "backup.failed": "Backup failed",
    "image.update_available": "Image update available",
    "certificate.expiring": "Certificate expiring, renewal failing",
}
DEFAULT_EVENTS = ["deploy.failed", "rollback.failed", "server.unreachable",
                  "disk.nearly_full", "backup.failed", "certificate.expiring"]
KINDS: dict[str, str] = {
    "email": "Email (SMTP)",
    "slack": "Slack incoming webhook",
    "mattermost": "Mattermost incoming webhook",
    "discord": "Discord webhook",
    "webhook": "Generic webhook (HMAC-signed JSON)",
}
LOG_LINES = 20  # last lines of the failing step in a deploy.failed event
DEFAULT_RETRY_DELAYS = (30, 120, 600, 1800)


def retry_delays() -> tuple[int, ...]:
    """Seconds before each retry (len = retries after the first attempt)."""
    try:
        from flask import current_app
        value = current_app.config.get("NOTIFY_RETRY_DELAYS")
    except RuntimeError:
        value = None
    return tuple(int(v) for v in value) if value is not None else DEFAULT_RETRY_DELAYS


def next_attempt(attempts: int, now: dt.datetime, delays=None) -> dt.datetime | None:
    """When to try again after ``attempts`` failed attempts (None: give up)."""
    delays = tuple(delays if delays is not None else retry_delays())
    if attempts < 1 or attempts > len(delays):
        return None
    return now + dt.timedelta(seconds=delays[attempts - 1])


# --------------------------------------------------------------------------- notify

def notify(org_id: int, event: str, payload: dict) -> list[int]:
    """Queue ``event`` for every enabled channel of the organisation that chose it.

    ``payload`` is JSON data without secrets (callers build it from ids and names; deploy
    events go through :func:`deploy_payload`, which redacts). Returns the delivery ids.
    Never raises.
    """
    if event not in EVENTS:
        log.warning("notify: unknown event %r", event)
        return []
    try:
        channels = db.session.execute(sa.select(NotificationChannel).where(
            NotificationChannel.organisation_id == int(org_id),
            NotificationChannel.enabled.is_(True))).scalars().all()
        now = utcnow()
        rows = [NotificationDelivery(channel_id=c.id, event=event,
                                     payload={"event": event, "title": EVENTS[event],
                                              "organisation_id": int(org_id),
                                              "at": now.isoformat() + "Z", **payload},
                                     status="pending", created_at=now)
                for c in channels if event in (c.events or [])]
        if not rows:
            return []
        db.session.add_all(rows)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.warning("notify %s: could not record the deliveries", event, exc_info=True)
        return []
    ids = [r.id for r in rows]
    queued = [i for i in ids if enqueue(i)]
    if queued:  # the others stay pending: dispatch_due enqueues them when Redis is back
        db.session.execute(sa.update(NotificationDelivery).where(
            NotificationDelivery.id.in_(queued), NotificationDelivery.status == "pending")
            .values(status="queued").execution_options(synchronize_session=False))
        db.session.commit()
    return ids


def enqueue(delivery_id: int, delay: int = 0) -> bool:
    """Put the delivery job on the queue (False when Redis is down: dispatch_due retries)."""
    try:
        from flask import current_app
        from rq import Queue

        from app.operations import logstream
        queue = Queue(current_app.config["RQ_QUEUE"], connection=logstream.redis_client())
        queue.enqueue("app.jobs.deliver_notification", int(delivery_id), job_timeout=60,
                      result_ttl=3600, failure_ttl=24 * 3600,
                      description=f"keystone notification #{delivery_id}")
        return True
    except Exception as exc:
        log.warning("notification %s: could not enqueue (%s)", delivery_id, type(exc).__name__)
        return False


def dispatch_due(now: dt.datetime | None = None) -> list[int]:
    """Enqueue deliveries whose retry is due (and pending ones that never reached Redis)."""
    now = now or utcnow()
    stale = now - dt.timedelta(minutes=2)
    ids = db.session.execute(sa.select(NotificationDelivery.id).where(sa.or_(
        sa.and_(NotificationDelivery.status == "retrying",
                NotificationDelivery.next_attempt_at <= now),
        sa.and_(NotificationDelivery.status == "pending",
                NotificationDelivery.created_at <= stale)))
        .order_by(NotificationDelivery.id).limit(100)).scalars().all()
    out = []
    for delivery_id in ids:
        # Claim it (a compare-and-set), so two reapers never send it twice.
        res = db.session.execute(sa.update(NotificationDelivery).where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.status.in_(["retrying", "pending"]))
            .values(status="queued").execution_options(synchronize_session=False))
        db.session.commit()
        if res.rowcount == 1 and enqueue(delivery_id):
            out.append(delivery_id)
    return out


# --------------------------------------------------------------------------- deliver

def deliver(delivery_id: int, now: dt.datetime | None = None) -> str:
    """One attempt (the RQ job's body): sent, retrying (with its next time) or failed."""
    from app.notifications.senders import SendError, send
    row = db.session.get(NotificationDelivery, int(delivery_id))
    if row is None or row.status in ("sent", "failed"):
        return "gone" if row is None else row.status
    channel = row.channel
    row.attempts = (row.attempts or 0) + 1
    row.last_attempt_at = now or utcnow()
    try:
        code = send(channel, row)
    except SendError as exc:
        row.response_code = exc.code
        row.error = redact(str(exc), channel)[:500]
        retry_at = next_attempt(row.attempts, row.last_attempt_at)
        row.status = "retrying" if retry_at else "failed"
        row.next_attempt_at = retry_at
    else:
        row.status, row.response_code, row.error, row.next_attempt_at = "sent", code, "", None
    db.session.commit()
    return row.status


def redact(text: str, channel: NotificationChannel) -> str:
    """``text`` without any of the channel's secrets (an error may quote a URL)."""
    for value in (channel.secrets or {}).values():
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return text


# --------------------------------------------------------------------------- deploy events

def _redact_lines(text: str, secrets: list[str]) -> str:
    for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def deploy_payload(op: Operation, env, secrets: list[str] = ()) -> dict:
    """What a deploy/rollback event says: environment, commit, operation, and when it
    failed, the failing step and its last log lines (with the environment's secrets
    replaced by ***)."""
    result = dict(op.result or {})
    payload = {
        "application": env.application.name if env is not None else None,
        "environment": env.name if env is not None else None,
        "environment_id": op.target_id,
        "operation_id": op.id,
        "status": OperationStatus(op.status).value,
        "commit": result.get("commit") or (op.params or {}).get("commit_sha"),
        "summary": op.summary,
    }
    if OperationStatus(op.status) is not OperationStatus.SUCCEEDED:
        failing = failing_step(op)
        payload["error"] = _redact_lines((op.error or "")[:1000], list(secrets))
        if failing is not None:
            text = "\n".join(x for x in (failing.log_text, (failing.error_logs or "")) if x)
            lines = [ln for ln in text.splitlines() if ln.strip()][-LOG_LINES:]
            payload["failing_step"] = failing.name
            payload["log_tail"] = [_redact_lines(ln, list(secrets))[:500] for ln in lines]
    return payload


def failing_step(op: Operation):
    """The step that failed first anywhere in the operation's tree (the cause: a parent's
    step fails after its child's), clean-up steps aside; None if no step failed."""
    failed, stack = [], [op]
    while stack:
        current = stack.pop()
        failed.extend(s for s in current.steps
                      if s.status.value == "failed" and not s.is_cleanup)
        stack.extend(current.children)
    if not failed:
        return None
    far = dt.datetime.max
    return min(failed, key=lambda s: (s.finished_at or far, s.id))


def backup_payload(op: Operation) -> dict:
    """What ``backup.failed`` says: the database, its service, the operation, the reason
    and the failing step (the operation's text is already redacted by the engine)."""
    from app.models import ServiceSlice
    slice_ = db.session.get(ServiceSlice, op.target_id) if op.target_id else None
    failing = failing_step(op)
    return {"database": slice_.name if slice_ is not None else None,
            "service": slice_.service.name if slice_ is not None and slice_.service else None,
            "slice_id": op.target_id, "operation_id": op.id,
            "status": OperationStatus(op.status).value,
            "trigger": (op.params or {}).get("trigger"),
            "error": (op.error or "")[:1000],
            "failing_step": failing.name if failing is not None else None}


def operation_ended(op: Operation) -> None:
    """End listener: a top-level environment deploy ended -> deploy.* / rollback.* event;
    a database backup that failed -> backup.failed."""
    if OperationKind(op.kind) is OperationKind.DATABASE_BACKUP:
        if OperationStatus(op.status) in (OperationStatus.FAILED, OperationStatus.INTERRUPTED):
            notify(op.organisation_id, "backup.failed", backup_payload(op))
        return
    if OperationKind(op.kind) is not OperationKind.ENVIRONMENT_DEPLOY:
        return
    status = OperationStatus(op.status)
    if status not in (OperationStatus.SUCCEEDED, OperationStatus.FAILED,
                      OperationStatus.INTERRUPTED):
        return  # a cancelled deploy was someone's choice
    from app.models import Environment
    env = db.session.get(Environment, op.target_id)
    secrets: list[str] = []
    if env is not None:
        secrets = [v.value for v in env.variables if v.is_secret or _looks_secret(v.key)]
    kind = "rollback" if (op.params or {}).get("rollback") else "deploy"
    event = f"{kind}.{'succeeded' if status is OperationStatus.SUCCEEDED else 'failed'}"
    notify(op.organisation_id, event, deploy_payload(op, env, secrets))


_SECRET_KEY = re.compile(r".*(KEY|SECRET|PASSWORD|TOKEN|PASS|DSN|CREDENTIALS?).*", re.I)


def _looks_secret(key: str) -> bool:
    from app.attachments import is_managed_secret
    try:
        if is_managed_secret(key):
            return True
    except Exception:
        pass
    return bool(_SECRET_KEY.fullmatch(key or ""))
