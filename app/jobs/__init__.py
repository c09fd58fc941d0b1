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


def run_operation(operation_id: int) -> str:
    """Run operation ``operation_id`` to a terminal state; return its status.

    Never raises: an exception would put its text (which could quote a
    secret) into RQ's job data in Redis. Everything is recorded, redacted, on
    the operation row instead.
    """
    from flask import has_app_context


    if has_app_context():
        return execute_operation(int(operation_id))
    app = get_app()
    with app.app_context():
        try:
            return execute_operation(int(operation_id))
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.error("operation %s: engine error %s", operation_id, type(exc).__name__)
            return "error"
        finally:
            db.session.remove()


def check_health() -> dict:
    """The periodic health job (app.health): one pass, never two at once, never raises."""
    from flask import has_app_context


    def once() -> dict:
        import redis
        from flask import current_app
        conn = redis.Redis.from_url(current_app.config["REDIS_URL"])
        if not conn.set(lock_key(), "1", nx=True, ex=HEALTH_INTERVAL * 5):
            return {"skipped": "another health check is running"}
        try:
            return run_check()
        finally:
            conn.delete(lock_key())

    if has_app_context():
        return once()
    app = get_app()
    with app.app_context():
        try:
            return once()
        except Exception as exc:  # noqa: BLE001 - logged, never in RQ's job data
            log.error("health check failed: %s", type(exc).__name__)
            return {"error": type(exc).__name__}
        finally:
            db.session.remove()


def collect_metrics() -> dict:
    """The periodic metrics job (app.metrics): one pass, never two at once, never raises."""
    from flask import has_app_context

    def once() -> dict:
        import redis
        from flask import current_app

        from app.metrics import METRICS_INTERVAL, collect_metrics as run_collect, lock_key
        conn = redis.Redis.from_url(current_app.config["REDIS_URL"])
        if not conn.set(lock_key(), "1", nx=True, ex=METRICS_INTERVAL * 3):
            return {"skipped": "another metrics pass is running"}
        try:
            return run_collect()
        finally:
            conn.delete(lock_key())

    if has_app_context():
        return once()
    app = get_app()
    with app.app_context():
        try:
            return once()
        except Exception as exc:  # noqa: BLE001 - logged, never in RQ's job data
            log.error("metrics pass failed: %s", type(exc).__name__)
            return {"error": type(exc).__name__}
        finally:
            db.session.remove()


def tail_logs() -> dict:
    """The live-logs tailer (app.logtail): serves every open log pane, returns when none is
    left. Runs on its own queue (``keystone worker --logs``) so it never holds up a deploy."""
    from flask import has_app_context

    def once() -> dict:
        from app.logtail import Tailer
        from app.operations import logstream
        return Tailer(logstream.redis_client(blocking=True)).serve()

    if has_app_context():
        return once()
    app = get_app()
    with app.app_context():
        try:
            return once()
        except Exception as exc:  # noqa: BLE001 - logged, never in RQ's job data
            log.error("live logs tailer failed: %s", type(exc).__name__)
            return {"error": type(exc).__name__}


def deliver_notification(delivery_id: int) -> str:
    """One attempt at one notification delivery (app.notifications.deliver); never raises."""
    from flask import has_app_context

    from app.notifications import deliver

    if has_app_context():
        return deliver(int(delivery_id))
    app = get_app()
    with app.app_context():
        try:
            return deliver(int(delivery_id))
        except Exception as exc:  # noqa: BLE001 - logged, never in RQ's job data
            db.session.rollback()
            log.error("notification %s: %s", delivery_id, type(exc).__name__)
            return "error"
        finally:
            db.session.remove()
