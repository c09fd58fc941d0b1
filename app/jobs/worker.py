"""The Keystone RQ worker: forks a work horse per job, runs the reaper.

Fork safety (a paramiko Transport is a thread plus a socket; a pooled database
connection is a socket): the worker process itself opens no SSH connection,
and in the work horse, right after the fork, the SQLAlchemy pools are
disposed without closing the parent's connections and the Redis clients are
forgotten, so the horse opens its own. The horse also asks the kernel to kill
it when the worker dies (PR_SET_PDEATHSIG), so a SIGKILLed worker never
leaves a headless operation running; the reaper then ends it ``interrupted``.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading

import redis
from rq import Queue, Worker

from app.extensions import db
from app.health import HEALTH_INTERVAL, schedule_key
from app.jobs import set_app
from app.logsetup import configure_logging
from app.operations import logstream
from app.operations.lifecycle import dispatch_queued
from app.operations.reaper import REAP_INTERVAL, interrupt, reap
from app.operations.registry import load_handlers
from app.remote.quiet import quiet_transport_errors

log = logging.getLogger(__name__)

JOB_MONITORING_INTERVAL = 5


def redis_connection(app) -> redis.Redis:
    return redis.Redis.from_url(app.config["REDIS_URL"])


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the reaper still catches it
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class KeystoneWorker(Worker):
    """RQ's forking worker with Keystone's after-fork hygiene and dead-horse handling."""

    flask_app = None

    def fork_work_horse(self, job, queue):
        self._keystone_parent_pid = os.getpid()
        return super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        _die_with_parent(getattr(self, "_keystone_parent_pid", os.getppid()))
        app = self.flask_app
        if app is not None:
            with app.app_context():
                for engine in db.engines.values():
                    engine.dispose(close=False)
            logstream.reset_clients()
        return super().main_work_horse(job, queue)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        app = self.flask_app
        if app is None or not job.args or job.func_name != "app.jobs.run_operation":
            return
        sig = os.WTERMSIG(ret_val) if ret_val and os.WIFSIGNALED(ret_val) else None
        why = f"signal {signal.Signals(sig).name}" if sig else f"exit status {ret_val}"
        with app.app_context():
            try:
                interrupt(int(job.args[0]), f"Interrupted: the process running it died ({why}).")
                dispatch_queued()
            finally:
                db.session.remove()


def _reaper_loop(app, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        with app.app_context():
            try:
                reap()
            except Exception:
                log.warning("reaper pass failed", exc_info=True)
            try:  # notification retries that are due (app.notifications)
                from app.notifications import dispatch_due
                dispatch_due()
            except Exception:
                db.session.rollback()
                log.warning("notification dispatch failed", exc_info=True)
            finally:
                db.session.remove()


def start_reaper(app, interval: float | None = None) -> threading.Event:
    """Run the reaper every ``interval`` seconds in a daemon thread; set the event to stop."""
    stop = threading.Event()
    thread = threading.Thread(target=_reaper_loop, args=(app, stop, interval or REAP_INTERVAL),
                              name="keystone-reaper", daemon=True)
    thread.start()
    return stop


def schedule_health_check(app, conn, queue) -> bool:
    """Enqueue the periodic health job unless one was enqueued in the last interval (by this
    or another worker: a Redis key with a TTL). The job runs in a work horse, which may open
    SSH connections; this process never does."""
    if not conn.set(schedule_key(app.config), "1", nx=True, ex=max(1, HEALTH_INTERVAL - 5)):
        return False
    queue.enqueue("app.jobs.check_health", job_timeout=HEALTH_INTERVAL * 4,
                  result_ttl=HEALTH_INTERVAL * 2, failure_ttl=3600,
                  description="keystone periodic health check")
    return True


def schedule_metrics(app, conn, queue) -> bool:
    """Enqueue the periodic metrics job (app.metrics) unless one was enqueued in the last
    interval, the way :func:`schedule_health_check` does."""
    from app.metrics import METRICS_INTERVAL, schedule_key as metrics_key
    if not conn.set(metrics_key(app.config), "1", nx=True, ex=max(1, METRICS_INTERVAL - 5)):
        return False
    queue.enqueue("app.jobs.collect_metrics", job_timeout=METRICS_INTERVAL * 2,
                  result_ttl=METRICS_INTERVAL * 2, failure_ttl=3600,
                  description="keystone periodic server metrics")
    return True


def schedule_certificates(app, conn, queue) -> bool:
    """Enqueue the hourly certificate status pass (app.certificates) unless one was enqueued
    in the last interval, the way :func:`schedule_health_check` does."""
    from app.certificates import CERT_INTERVAL, schedule_key as cert_key
    if not conn.set(cert_key(app.config), "1", nx=True, ex=max(1, CERT_INTERVAL - 5)):
        return False
    queue.enqueue("app.jobs.check_certificates", job_timeout=600, result_ttl=CERT_INTERVAL,
                  failure_ttl=3600, description="keystone certificate status pass")
    return True


def _health_loop(app, conn, queue, stop: threading.Event, interval: float) -> None:
    from app.backups.handlers import schedule_tick
    while not stop.wait(interval):
        try:
            schedule_health_check(app, conn, queue)
        except Exception:
            log.warning("could not enqueue the health check", exc_info=True)
        try:
            schedule_metrics(app, conn, queue)
        except Exception:
            log.warning("could not enqueue the metrics pass", exc_info=True)
        try:
            schedule_certificates(app, conn, queue)
        except Exception:
            log.warning("could not enqueue the certificate pass", exc_info=True)
        try:  # scheduled Postgres backups (app.backups.handlers), same cadence
            schedule_tick(app, conn, queue)
        except Exception:
            log.warning("could not enqueue the scheduled backups tick", exc_info=True)
        try:  # daily housekeeping of servers and of the control plane (app.housekeeping)
            from app.housekeeping.handlers import schedule_tick as housekeeping_tick
            housekeeping_tick(app, conn, queue)
        except Exception:
            log.warning("could not enqueue the housekeeping tick", exc_info=True)


def start_health_scheduler(app, conn, queue, interval: float | None = None) -> threading.Event:
    """Every HEALTH_INTERVAL seconds, enqueue app.jobs.check_health (app.health)."""
    stop = threading.Event()
    thread = threading.Thread(target=_health_loop,
                              args=(app, conn, queue, stop, interval or HEALTH_INTERVAL),
                              name="keystone-health", daemon=True)
    thread.start()
    return stop


KEYS_MISMATCH = ("keystone worker: KEYSTONE_ENCRYPTION_KEYS cannot decrypt the secrets stored in "
                 "DATABASE_URL ({column}). Every web and worker process of one Keystone needs "
                 "the same KEYSTONE_ENCRYPTION_KEYS (a worker on another machine: copy them; "
                 "without them it generates a key of its own).")


def check_encryption_keys(app) -> None:
    """Refuse to start (SystemExit) when the keys cannot read the database's secrets."""
    from app.crypto import undecryptable_column
    with app.app_context():
        try:
            column = undecryptable_column(db.session, db.metadata)
        finally:
            db.session.remove()
    if column is not None:
        raise SystemExit(KEYS_MISMATCH.format(column=column))


def recover(app) -> list[int]:
    """Start-up recovery: end what died with the previous worker, restart the queue."""
    with app.app_context():
        try:
            return reap()
        finally:
            db.session.remove()


def run_logs_worker(app, burst: bool = False) -> None:
    """The worker of live container logs (app.logtail): its own queue, so the long-running
    tailer job never waits behind a deploy or holds one up. No reaper, no schedulers."""
    from app.logtail import queue_name
    check_encryption_keys(app)
    set_app(app)
    configure_logging()
    quiet_transport_errors()
    conn = redis_connection(app)
    queue = Queue(queue_name(app.config), connection=conn)
    worker = KeystoneWorker([queue], connection=conn,
                            job_monitoring_interval=JOB_MONITORING_INTERVAL)
    worker.flask_app = app
    worker.work(burst=burst, with_scheduler=False)


def run_worker(app, burst: bool = False, reaper_interval: float | None = None) -> None:
    check_encryption_keys(app)
    set_app(app)
    load_handlers()  # import handler modules once, before forking
    configure_logging()
    quiet_transport_errors()  # SSH retries while a server boots are in the step log already
    try:
        recovered = recover(app)
        if recovered:
            log.warning("recovered: interrupted operations %s", recovered)
    except Exception:
        log.warning("start-up recovery failed", exc_info=True)
    stop = start_reaper(app, reaper_interval)
    conn = redis_connection(app)
    queue = Queue(app.config["RQ_QUEUE"], connection=conn)
    worker = KeystoneWorker([queue], connection=conn,
                            job_monitoring_interval=JOB_MONITORING_INTERVAL)
    worker.flask_app = app
    health = start_health_scheduler(app, conn, queue) if not burst else None
    try:
        worker.work(burst=burst, with_scheduler=False)
    finally:
        stop.set()
        if health is not None:
            health.set()
