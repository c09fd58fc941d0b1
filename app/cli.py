"""The `keystone` command: a FlaskGroup over create_app plus Keystone's commands."""
from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext


def _create_app():
    from app import create_app
    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app)
def main():
    """Keystone: deploy Laravel apps to your own servers."""


@click.command("create-user")
@click.option("--email", prompt=True)
@click.option("--organisation", prompt=True)
@click.option("--password", default=None, help="Prompted for when omitted.")
@with_appcontext
def create_user_command(email, organisation, password):
    """Create an organisation and its owner."""
    from app.accounts import SignupError, create_account
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
    from app.crypto import rotate_all
    from app.extensions import db
    count = rotate_all(db.session, db.metadata)
    click.echo(f"re-encrypted {count} secret values under the newest key")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@with_appcontext
def worker_command(burst):
    """Run an RQ worker for Keystone's operations (and the reaper)."""
    from app.jobs.worker import run_worker
    run_worker(current_app._get_current_object(), burst=burst)


@click.command("dev")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@with_appcontext
def dev_command(host, port):
    """Start everything: embedded Redis (unless REDIS_URL is set), web and worker.

    One Ctrl-C stops them all.
    """
    from app import embedded_redis
    instance = Path(current_app.instance_path)
    env = dict(os.environ)
    procs: list[subprocess.Popen] = []
    if not os.environ.get("REDIS_URL"):
        sock = instance / "redis.sock"
        procs.append(embedded_redis.start(sock, instance / "redis"))
        env["REDIS_URL"] = f"unix://{sock}"
        click.echo(f"embedded redis on {sock}")
    exe = Path(sys.executable).parent
    gunicorn = [str(exe / "gunicorn"), "--worker-class", "gthread", "--workers", "1",
                "--threads", "32", "--bind", f"{host}:{port}", "--timeout", "120",
                "--graceful-timeout", "3", "--config", "python:app.gunicorn_conf", "wsgi:app"]
    procs.append(subprocess.Popen(gunicorn, env=env, cwd=str(Path(__file__).resolve().parent.parent)))
    procs.append(subprocess.Popen([str(exe / "keystone"), "worker"], env=env))
    click.echo(f"keystone on http://{host}:{port}  (Ctrl-C stops web, worker and redis)")

    stopping = False

    def stop(*_):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    click.echo(f"process {p.args[0]} exited with {p.returncode}; stopping all",
                               err=True)
                    stop()
                    break
            time.sleep(0.5)
    finally:
        stop()


def register_cli(app) -> None:
    for command in (create_user_command, rotate_keys_command, worker_command, dev_command):
        app.cli.add_command(command)
    try:
        from app.sandbox.cli import sandbox
    except ImportError:
        return
    app.cli.add_command(sandbox)
