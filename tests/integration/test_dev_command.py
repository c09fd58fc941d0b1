"""`make run` = `keystone db upgrade` + `keystone dev` (issue 2): from an empty instance folder
it generates its keys (0600, once), starts a real embedded Redis, gunicorn and the RQ worker,
serves the app, runs a job end to end, and one Ctrl-C -- SIGINT to the terminal's whole
foreground process group -- stops every process it started.

No Docker needed; real processes, a real Redis, a real HTTP client.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status


def test_one_ctrl_c_stops_web_worker_and_embedded_redis(tmp_path):
    instance = tmp_path / "instance"
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "KEYSTONE_SECRET_KEY",
                        "KEYSTONE_ENCRYPTION_KEYS")}
    env["KEYSTONE_INSTANCE_PATH"] = str(instance)
    upgrade = subprocess.run([str(BIN / "keystone"), "db", "upgrade"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    # Keys were generated once, 0600, and the start said so.
    for name in ("secret_key", "encryption_keys"):
        assert (instance / name).stat().st_mode & 0o777 == 0o600
        assert f"generated {name}" in upgrade.stdout + upgrade.stderr
    secret = (instance / "secret_key").read_text()

    log = open(tmp_path / "dev.log", "w")
    dev = subprocess.Popen([str(BIN / "keystone"), "dev", "--port", str(port)], env=env,
                           cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # its own group, like a terminal's job
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                assert _get(f"http://127.0.0.1:{port}/signup") == 200
                break
            except OSError:
                assert dev.poll() is None, (tmp_path / "dev.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
                time.sleep(0.3)
        started = _descendants(dev.pid)
        names = " ".join(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                         for p in started if _alive(p))
        assert "redis-server" in names and "gunicorn" in names and "keystone worker" in names, \
            names
        assert (instance / "redis.sock").exists()
        # The worker takes jobs from the embedded Redis: a real job, end to end.
        from redis import Redis
        from rq import Queue
        conn = Redis(unix_socket_path=str(instance / "redis.sock"))
        queue_name = env.get("KEYSTONE_QUEUE", "keystone")
        job = Queue(queue_name, connection=conn).enqueue("os.getppid")  # the work horse's parent
        deadline = time.monotonic() + 60
        while job.get_status(refresh=True) not in ("finished", "failed"):
            assert time.monotonic() < deadline, "the worker never ran the job"
            time.sleep(0.3)
        assert job.get_status() == "finished" and job.return_value() in started
        conn.close()

        log.flush()
        before = (tmp_path / "dev.log").stat().st_size
        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert dev.wait(timeout=40) is not None
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in started if _alive(p)]
        assert not left, f"still running after Ctrl-C: {left}"
        # Quietly: web and worker stop before Redis, so no connection errors, no kills.
        with open(tmp_path / "dev.log", errors="replace") as f:
            f.seek(before)
            shutdown = f.read()
        for noise in ("Traceback", "Connection refused", "Error", "SIGKILL"):
            assert noise not in shutdown, shutdown
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/signup")
        # The keys are kept, not regenerated, for the next start.
        assert (instance / "secret_key").read_text() == secret
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)
        log.close()
