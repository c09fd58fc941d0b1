"""Benchmark: how late a line printed on a server reaches a browser's log pane.

Everything is real: a sandbox server (sshd in a container), `keystone worker`
(forking RQ worker), the embedded Redis, gunicorn with gthread workers serving
`GET /operations/<id>/events`, and an SSE client reading it over HTTP after
signing in. The server prints LINES lines, each carrying its own clock in
nanoseconds (`date +%s%N`; containers share the host's clock), and the client
subtracts that from the arrival time. A second operation of 10 steps on the
same server reports how many SSH handshakes it cost (goal: 1).

Prints one JSON line:
    {"p50_ms": ..., "p95_ms": ..., "max_ms": ..., "lines": ..., "ssh_handshakes": ..., ...}

Run: python -m bench.log_latency [--lines 1200] [--interval 0.005] [--sandbox keystone-bench]
"""
from __future__ import annotations

import argparse
import http.client
import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from app.models.enums import OperationKind
from app.operations import operation_handler, stream_key

ROOT = Path(__file__).resolve().parents[1]
KIND = OperationKind.CONFIG_CHANGE
PRINT_LINES = ("sleep 1; i=1; while [ $i -le \"$1\" ]; do echo \"tick $i $(date +%s%N)\"; "
               "i=$((i+1)); sleep \"$2\"; done")


# ------------------------------------------------------------------ worker side

@operation_handler(KIND)
def bench_handler(ctx) -> None:
    """Runs in the worker (KEYSTONE_HANDLER_MODULES=bench.log_latency)."""
    from app.extensions import db
    from app.models import Server
    from app.shell import cmd
    server = db.session.get(Server, int(ctx.params["server_id"]))
    if ctx.params["mode"] == "lines":
        with ctx.step("print timestamped lines", server=server) as step:
            step.run(cmd("sh", "-c", PRINT_LINES, "sh", str(int(ctx.params["lines"])),
                         str(ctx.params["interval"])))
    else:
        for n in range(10):
            with ctx.step(f"step {n + 1}", server=server) as step:
                step.run(cmd("echo", f"step {n + 1}"))
    ctx.result["ssh_handshakes"] = ctx.runtime.handshakes


# ------------------------------------------------------------------ bench side

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 1)


def _login(base: str, email: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login", timeout=30).read().decode()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrf_token": token, "email": email,
                                   "password": password}).encode()
    opener.open(f"{base}/login", data=data, timeout=30).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def _wait_http(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not start")


def _read_sse(port: int, cookie: str, op_id: int, on_line, timeout: float) -> str:
    """Read the event stream until its end event; call on_line(text, arrival_ns)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", f"/operations/{op_id}/events",
                 headers={"Cookie": cookie, "Accept": "text/event-stream"})
    resp = conn.getresponse()
    if resp.status != 200 or "text/event-stream" not in resp.getheader("Content-Type", ""):
        raise RuntimeError(f"events answered {resp.status}")
    event, status = None, None
    while True:
        raw = resp.fp.readline()
        if not raw:
            break
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            if event == "line":
                on_line(line[6:], time.time_ns())
            elif event == "end":
                status = line[6:]
        elif line == "" and event == "end":
            break
    conn.close()
    return status or "no end event"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.log_latency")
    parser.add_argument("--lines", type=int, default=1200)
    parser.add_argument("--interval", type=float, default=0.005,
                        help="seconds between lines on the server")
    parser.add_argument("--sandbox", default="keystone-bench")
    args = parser.parse_args(argv)
    if args.lines < 1000:
        parser.error("--lines must be at least 1000")

    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from app import create_app, embedded_redis
    from app.accounts import create_account
    from app.extensions import db
    from app.models import Operation, Server
    from app.operations import start_operation
    from app.sandbox import Sandbox

    work = Path(tempfile.mkdtemp(prefix="keystone-bench-log-"))
    redis_proc = embedded_redis.start(work / "redis.sock", work / "redis")
    sb = Sandbox(name=args.sandbox, state_dir=ROOT / "instance" / "sandbox" / args.sandbox)
    try:  # reuse a running sandbox as it is (other benchmarks share it)
        info = sb.status()
        if not info.running or not info.servers:
            raise RuntimeError("not running")
    except Exception:
        info = sb.up(servers=2, bare=False)
    target = info.servers[0]
    key = Fernet.generate_key().decode()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{work / 'keystone.db'}",
           "REDIS_URL": f"unix://{work / 'redis.sock'}", "KEYSTONE_ENCRYPTION_KEYS": key,
           "KEYSTONE_SECRET_KEY": "bench-log-latency", "KEYSTONE_QUEUE": "bench-log-latency",
           "KEYSTONE_INSTANCE_PATH": str(work / "instance"),
           "KEYSTONE_HANDLER_MODULES": "bench.log_latency", "PYTHONPATH": str(ROOT)}
    app = create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "ENCRYPTION_KEYS": [key],
                      "SECRET_KEY": env["KEYSTONE_SECRET_KEY"], "REDIS_URL": env["REDIS_URL"],
                      "RQ_QUEUE": env["KEYSTONE_QUEUE"]}, instance_path=env["KEYSTONE_INSTANCE_PATH"])
    procs: list[subprocess.Popen] = []
    port = _free_port()
    password = "bench password long enough"
    try:
        with app.app_context():
            upgrade()
            user = create_account(organisation="Bench", email="bench@example.com", password=password)
            org = user.organisation
            org.management_key_private = target.root_key_path.read_text()
            server = Server(organisation=org, name="bench-1", public_ip=target.host,
                            ssh_port=target.ssh_port, management_user=target.user,
                            host_key_fingerprint=target.host_key_fingerprint)
            db.session.add(server)
            db.session.commit()
            org_id, server_id = org.id, server.id
        bin_dir = ROOT / ".venv" / "bin"
        logs = open(work / "processes.log", "wb")
        procs.append(subprocess.Popen([str(bin_dir / "keystone"), "worker"], env=env, cwd=str(ROOT),
                                      stdout=logs, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [str(bin_dir / "gunicorn"), "--worker-class", "gthread", "--workers", "1",
             "--threads", "16", "--bind", f"127.0.0.1:{port}", "--timeout", "120", "wsgi:app"],
            env=env, cwd=str(ROOT), stdout=logs, stderr=subprocess.STDOUT))
        _wait_http(port)
        cookie = _login(f"http://127.0.0.1:{port}", "bench@example.com", password)

        latencies: list[float] = []
        seen: set[int] = set()

        def on_line(data: str, arrived_ns: int) -> None:
            m = re.search(r">tick (\d+) (\d+)<", data)
            if m:
                seen.add(int(m.group(1)))
                latencies.append((arrived_ns - int(m.group(2))) / 1e6)

        with app.app_context():
            op = start_operation(KIND, target_type="server", target_id=server_id,
                                 organisation_id=org_id, summary="log latency benchmark",
                                 params={"mode": "lines", "server_id": server_id,
                                         "lines": args.lines, "interval": args.interval},
                                 lock_keys=[f"server:{server_id}"])
            op_id = op.id
        status = _read_sse(port, cookie, op_id, on_line, timeout=300)
        with app.app_context():
            ten = start_operation(KIND, target_type="server", target_id=server_id,
                                  organisation_id=org_id, summary="10 steps",
                                  params={"mode": "steps", "server_id": server_id},
                                  lock_keys=[f"server:{server_id}"])
            ten_id = ten.id
        ten_status = _read_sse(port, cookie, ten_id, lambda *_: None, timeout=300)
        with app.app_context():
            ten = db.session.get(Operation, ten_id)
            handshakes = (ten.result or {}).get("ssh_handshakes")
            steps = len(ten.steps)
            if status != "succeeded":
                raise RuntimeError(f"operation #{op_id} {status}: {db.session.get(Operation, op_id).error}")
        # Where the time goes: a stream id is Redis' clock (ms) when the worker added the line.
        import redis
        to_redis: list[float] = []
        client = redis.Redis.from_url(env["REDIS_URL"])
        for entry_id, fields in client.xrange(stream_key(op_id)):
            m = re.match(rb"tick \d+ (\d+)", fields.get(b"t", b""))
            if m:
                to_redis.append(int(entry_id.split(b"-")[0]) - int(m.group(1)) / 1e6)
        result = {
            "p50_ms": _pct(latencies, 0.50), "p95_ms": _pct(latencies, 0.95),
            "to_redis_p50_ms": _pct(to_redis, 0.50), "to_redis_p95_ms": _pct(to_redis, 0.95),
            "max_ms": round(max(latencies), 1), "lines": len(latencies),
            "lines_lost": args.lines - len(seen), "ssh_handshakes": handshakes,
            "handshake_op_steps": steps, "handshake_op_status": ten_status,
            "line_interval_ms": args.interval * 1000, "server": "gunicorn gthread",
        }
        print(json.dumps(result))
        sys.stdout.flush()
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
