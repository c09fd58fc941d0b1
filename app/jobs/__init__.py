"""RQ entry points. Jobs take ids, never objects or secrets.

``run_operation(operation_id)`` is the one job of the operations engine: the
RQ job data holds the id and nothing else, so no secret ever reaches Redis
through a job, and a retried or duplicated job is harmless (the operation row,
claimed with a compare-and-set, records what runs).
"""
from __future__ import annotations

import logging
from app import create_app
from app.extensions import db
from app.health import HEALTH_INTERVAL, check_health as run_check, lock_key
from app.operations.runner import execute_operation

log = logging.getLogger(__name__)

_app = None


def set_app(app) -> None:
    """The app the worker created before forking (reused by its work horses)."""
    global _app
    _app = app


def get_app():
    global _app
    if _app is None:
        _app = create_app()
    return _app


def _in_app(what: str, body, on_error):
    """``body()`` in the app context: the caller's (tests, ``keystone`` commands) as is, else
    the worker's, where it never raises (an exception's text could quote a secret and
    would land in RQ's job data in Redis): it is logged by type and ``on_error(exc)``
    answers instead; the session is rolled back and removed either way."""
    from flask import has_app_context

    if has_app_context():
        return body()
    with get_app().app_context():
        try:
            return body()
        except Exception as exc:  # noqa: BLE001 - see docstring
            db.session.rollback()
            log.error("%s: %s", what, type(exc).__name__)
            return on_error(exc)
        finally:
            db.session.remove()


def _once(lock: str, ttl: int, busy: str, body):
    """``body()`` unless another worker's pass holds ``lock`` (a Redis key with a TTL)."""
    import redis
    from flask import current_app
    conn = redis.Redis.from_url(current_app.config["REDIS_URL"])
    if not conn.set(lock, "1", nx=True, ex=ttl):
        return {"skipped": busy}
    try:
        return body()
    finally:
        conn.delete(lock)


def _error(exc: Exception) -> dict:
    return {"error": type(exc).__name__}


def run_operation(operation_id: int) -> str:
    """Run operation ``operation_id`` to a terminal state; return its status.

    Never raises: everything is recorded, redacted, on the operation row instead.
    """
    return _in_app(f"operation {operation_id}: engine error",
                   lambda: execute_operation(int(operation_id)), lambda exc: "error")


def check_health() -> dict:
    """The periodic health job (app.health): one pass, never two at once, never raises."""
    return _in_app("health check failed", lambda: _once(
        lock_key(), HEALTH_INTERVAL * 5, "another health check is running", run_check), _error)


def collect_metrics() -> dict:
    """The periodic metrics job (app.metrics): one pass, never two at once, never raises."""
    from app.metrics import METRICS_INTERVAL, collect_metrics as run_collect, lock_key as key
    return _in_app("metrics pass failed", lambda: _once(
        key(), METRICS_INTERVAL * 3, "another metrics pass is running", run_collect), _error)


def check_certificates(service_id: int | None = None) -> dict:
    """The certificate status pass (app.certificates): one gateway (``service_id``, the
    gateway page's "Check now") or all of them (hourly); never raises."""
    from app.certificates import CERT_INTERVAL, check_all, check_gateway, lock_key as key

    def one() -> dict:
        rows = check_gateway(int(service_id))
        return {"gateways": 1, "certificates": sum(1 for r in rows if r.not_after)}

    if service_id is not None:
        return _in_app(f"certificate check of gateway {service_id} failed", one, _error)
    return _in_app("certificate pass failed", lambda: _once(
        key(), CERT_INTERVAL, "another certificate pass is running", check_all), _error)


def tail_logs() -> dict:
    """The live-logs tailer (app.logtail): serves every open log pane, returns when none is
    left. Runs on its own queue (``keystone worker --logs``) so it never holds up a deploy."""
    def serve() -> dict:
        from app.logtail import Tailer
        from app.operations import logstream
        return Tailer(logstream.redis_client(blocking=True)).serve()

    return _in_app("live logs tailer failed", serve, _error)


def deliver_notification(delivery_id: int) -> str:
    """One attempt at one notification delivery (app.notifications.deliver); never raises."""
    from app.notifications import deliver
    return _in_app(f"notification {delivery_id}", lambda: deliver(int(delivery_id)),
                   lambda exc: "error")


def send_invitation(invitation_id: int) -> str:
    """Mail one invitation through the organisation's email channel (app.members)."""
    from app.members import send_invitation_mail
    return _in_app(f"invitation {invitation_id}",
                   lambda: send_invitation_mail(int(invitation_id)), lambda exc: "error")
