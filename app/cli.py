"""The `keystone` command: a FlaskGroup over create_app plus Keystone's commands.

``keystone --help`` lists the operator's commands only and builds no app (so it
writes nothing: no instance folder, no generated secret). Developer commands
(Flask's ``run``, ``shell`` and ``routes``; Alembic's authoring commands under
``db``) still work but are hidden from that help; the epilog names them.
"""
from __future__ import annotations

import copy
import getpass
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, routes_command, run_command, shell_command, with_appcontext
from flask_migrate.cli import db as migrate_db_group

from app import create_app, embedded_redis
from app.accounts import SignupError, create_account
from app.crypto import rotate_all
from app.extensions import db
from app.jobs.worker import run_logs_worker, run_worker
from app.operations.reaper import reap
from app.sandbox.cli import sandbox

# `keystone db ...` subcommands an operator uses; the rest (revision, migrate, merge, edit,
# init, list-templates, check) write or compare migration files: developer commands.
OPERATOR_DB_COMMANDS = frozenset({"upgrade", "downgrade", "current", "history", "heads",
                                  "branches", "show", "stamp"})
DEVELOPER_COMMANDS = ("run", "shell", "routes")
DEVELOPER_EPILOG = ("Developer commands (hidden above): keystone run | shell | routes, and "
                    "keystone db revision | migrate | merge | edit | check | init | "
                    "list-templates.")


def keystone_version() -> str:
    try:
        return package_version("keystone")
    except PackageNotFoundError:  # running from a checkout that was never pip-installed
        return "unknown"


def _create_app():
    return create_app()


class KeystoneGroup(FlaskGroup):
    """Lists its own commands without building the app; any other name (a developer
    command, a plugin's) is still looked up on the app's CLI as Flask does."""

    def list_commands(self, ctx):
        return sorted(self.commands)


def _hidden(command: click.Command) -> click.Command:
    hidden = copy.copy(command)
    hidden.hidden = True
    return hidden


def _db_group() -> click.Group:
    """Flask-Migrate's ``db`` group with the authoring commands hidden from its help."""
    group = copy.copy(migrate_db_group)
    group.commands = {name: (cmd if name in OPERATOR_DB_COMMANDS else _hidden(cmd))
                      for name, cmd in migrate_db_group.commands.items()}
    return group


# load_dotenv=False: only the file named with `keystone -e FILE` is read, never a stray
# .env in the current directory.
@click.group(cls=KeystoneGroup, create_app=_create_app, add_default_commands=False,
             add_version_option=False, load_dotenv=False, epilog=DEVELOPER_EPILOG)
@click.version_option(keystone_version(), "--version", prog_name="keystone",
                      message="%(prog)s %(version)s")
def main():
    """Keystone: deploy Laravel apps to your own servers."""


# The API client commands (login, deploy, status) need no server app: registered on the
# group itself, so they never load create_app (no instance keys on a laptop or CI runner).
from app.client.cli import COMMANDS as _CLIENT_COMMANDS  # noqa: E402

for _command in _CLIENT_COMMANDS:
    main.add_command(_command)


@click.command("create-user")
@click.option("--email", prompt=True)
@click.option("--organisation", prompt=True)
@click.option("--password", default=None, help="Prompted for when omitted.")
@with_appcontext
def create_user_command(email, organisation, password):
    """Create an organisation and its owner."""
    if password is None:
        password = getpass.getpass("Password: ")
    try:
        user = create_account(organisation=organisation, email=email, password=password)
    except SignupError as exc:
        raise click.ClickException(str(exc))
    click.echo(f"created {user.email} (owner of {user.organisation.name})")


@click.command("rotate-keys")
@with_appcontext
def rotate_keys_command():
    """Re-encrypt every stored secret under the newest KEYSTONE_ENCRYPTION_KEYS key."""
    count = rotate_all(db.session, db.metadata)
    click.echo(f"re-encrypted {count} secret values under the newest key")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--logs", is_flag=True,
              help="Serve live container logs instead (their own queue and process).")
@with_appcontext
def worker_command(burst, logs):
    """Run an RQ worker for Keystone's operations (and the reaper)."""
    if logs:
        run_logs_worker(current_app._get_current_object(), burst=burst)
        return
    run_worker(current_app._get_current_object(), burst=burst)


def gunicorn_argv(host: str, port: int, workers: int = 1) -> list[str]:
    """The web process as `make run` starts it (gthread: a thread per open live-log stream).

    Several of these, on one machine or several, serve one Keystone when they share
    DATABASE_URL, REDIS_URL and the keys (README "Control plane at scale")."""
    exe = Path(sys.executable).parent
    return [str(exe / "gunicorn"), "--worker-class", "gthread", "--workers", str(int(workers)),
            "--threads", "32", "--bind", f"{host}:{int(port)}", "--timeout", "120",
            "--graceful-timeout", "3", "--log-level", "warning",
            "--config", "python:app.gunicorn_conf", "wsgi:app"]


@click.command("dev")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=2, type=click.IntRange(1, 8), show_default=True,
              help="RQ worker processes: operations on different targets run side by side "
                   "(provisioning two servers, creating a database while a cache starts).")
@with_appcontext
def dev_command(host, port, workers):
    """Start everything: embedded Redis (unless REDIS_URL is set), web and worker.

    One Ctrl-C stops them all.
    """
    instance = Path(current_app.instance_path)
    env = dict(os.environ)
    redis_proc: subprocess.Popen | None = None
    if not os.environ.get("REDIS_URL"):
        sock = instance / "redis.sock"
        redis_proc = embedded_redis.start(sock, instance / "redis", own_session=True)
        env["REDIS_URL"] = f"unix://{sock}"
        click.echo(f"embedded redis on {sock}")
    exe = Path(sys.executable).parent
    gunicorn = gunicorn_argv(host, port)
    # Each child runs in its own session: Ctrl-C (SIGINT to the terminal's foreground
    # group) reaches only this process, which then stops them in order.
    web = subprocess.Popen(gunicorn, env=env, cwd=str(Path(__file__).resolve().parent.parent),
                           start_new_session=True)
    worker_procs = [subprocess.Popen([str(exe / "keystone"), "worker"], env=env,
                                     start_new_session=True) for _ in range(workers)]
    logs_worker = subprocess.Popen([str(exe / "keystone"), "worker", "--logs"], env=env,
                                   start_new_session=True)
    procs = [p for p in (redis_proc, web, *worker_procs, logs_worker) if p is not None]
    click.echo(f"keystone on http://{host}:{port}  (Ctrl-C stops web, worker and redis)")

    stopping = False

    def stop(*_):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        click.echo("stopping web and worker, then redis")
        _stop_processes([web, *worker_procs], redis_proc, [logs_worker])

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    click.echo(f"process {p.args[0]} exited with {p.returncode}; stopping all",
                               err=True)
                    stop()
                    break
            time.sleep(0.2)
    finally:
        stop()


def _wait_all(procs: list[subprocess.Popen], seconds: float) -> list[subprocess.Popen]:
    """Wait up to ``seconds`` for every process; return those still running."""
    deadline = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    return [p for p in procs if p.poll() is None]


def _stop_processes(apps: list[subprocess.Popen], redis_proc: subprocess.Popen | None,
                    others: list[subprocess.Popen] = ()) -> None:
    """Web and worker first, then Redis (so the worker never sees Redis vanish), in ~3 s.

    gunicorn gets SIGINT (quick shutdown: open live-log streams are not waited for); the RQ
    worker SIGTERM (warm shutdown: it stops at once when idle). A worker still busy after
    1.5 s gets a second SIGTERM (cold shutdown: the job's work horse is stopped; the reaper
    marks that operation interrupted at the next start). Anything left is killed.
    """
    web, *workers = apps
    for p in others:  # the live-logs worker: its tails end when their viewers go
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    apps = [*apps, *others]
    if web.poll() is None:
        web.send_signal(signal.SIGINT)
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    left = _wait_all(apps, 1.5)
    for worker in workers:
        if worker in left:
            worker.send_signal(signal.SIGTERM)
    for p in _wait_all(left, 0.8):
        p.kill()
        p.wait(timeout=5)
    if redis_proc is not None and redis_proc.poll() is None:
        redis_proc.terminate()
        for p in _wait_all([redis_proc], 0.6):
            p.kill()
            p.wait(timeout=5)


@click.command("reap")
@with_appcontext
def reap_command():
    """End operations whose worker died (interrupted), free their locks, start queued ones."""
    reaped = reap()
    click.echo(f"interrupted {len(reaped)} operation(s)" + (f": {reaped}" if reaped else ""))


OPERATOR_COMMANDS = (create_user_command, rotate_keys_command, worker_command, dev_command,
                     reap_command, sandbox)

for _command in OPERATOR_COMMANDS:
    main.add_command(_command)
main.add_command(_db_group(), "db")
for _command in (run_command, shell_command, routes_command):
    main.add_command(_hidden(_command))


def register_cli(app) -> None:
    """The same commands on the app's own CLI (``app.test_cli_runner()``, ``flask``)."""
    for command in OPERATOR_COMMANDS:
        app.cli.add_command(command)
