"""The operations engine against the sandbox: a real forking RQ worker, real sshd
servers, real Redis, SSE read by a streaming client."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.crypto import encrypted_columns
from app.extensions import db
from app.jobs import run_operation
from app.models import Operation, OperationLock, Server
from app.models.enums import OperationKind, OperationStatus as S, StepStatus as T
from app.operations import start_operation
from app.remote import generate_ed25519
from tests.conftest import KEYS
from tests.factories import SECRET_SENTINELS, build_org
from tests.opsupport import clean_streams, handlers  # noqa: F401

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K = OperationKind.CONFIG_CHANGE
SENTINEL = SECRET_SENTINELS["bootstrap_password"]


# --------------------------------------------------------------------------- helpers

@pytest.fixture()
def graph(app, sandbox):
    """An organisation whose server is sandbox server 1, reached as root with its key."""
    g = build_org()
    s = sandbox.servers[0]
    g.server.public_ip = s.host
    g.server.ssh_port = s.ssh_port
    g.server.management_user = s.user
    g.server.host_key_fingerprint = s.host_key_fingerprint
    g.org.management_key_private = s.root_key_path.read_text()
    db.session.commit()
    g.sandbox_server = s
    return g


@pytest.fixture()
def scripted(handlers):
    """The test handler in this process too (for operations run in-process)."""
    from tests.integration import ops_handlers
    handlers(K)(ops_handlers.scripted)


@pytest.fixture()
def workers(app, tmp_path):
    """Start `keystone worker` processes on this test's database, Redis and queue."""
    procs: list[subprocess.Popen] = []
    env = {**os.environ,
           "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "REDIS_URL": app.config["REDIS_URL"],
           "KEYSTONE_ENCRYPTION_KEYS": ",".join(KEYS),
           "KEYSTONE_SECRET_KEY": "test-secret",
           "KEYSTONE_QUEUE": app.config["RQ_QUEUE"],
           "KEYSTONE_REDIS_PREFIX": app.config["REDIS_PREFIX"],
           "KEYSTONE_INSTANCE_PATH": str(tmp_path / "worker-instance"),
           "KEYSTONE_HANDLER_MODULES": "tests.integration.ops_handlers",
           "PYTHONPATH": str(ROOT)}

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "keystone"), "worker"], env=env,
                                cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _start(g, steps, **kw):
    return start_operation(K, target_type="environment", target_id=g.environment.id,
                           organisation_id=g.org.id,
                           params={"server_id": g.server.id, "steps": steps},
                           lock_keys=[f"environment:{g.environment.id}"], **kw)


def _wait(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def _op(op_id) -> Operation:
    return db.session.get(Operation, op_id)


def _remote_processes(server, pattern: str) -> list[str]:
    out = server.exec("sh", "-c", "ps -eo pid,args | grep -F -- \"$1\" | grep -v grep || true",
                      "sh", pattern).stdout
    return [line for line in out.splitlines() if line.strip()]


def _sse_events(text: str) -> list[dict]:
    out = []
    for block in text.split("\n\n"):
        ev = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                field, _, value = line.partition(": ")
                ev.setdefault(field, []).append(value)
        if "event" in ev:
            out.append({"id": (ev.get("id") or [None])[0], "event": ev["event"][0],
                        "data": "\n".join(ev.get("data", []))})
    return out


def _login(auth):
    auth.login(email="b@example.com")


# --------------------------------------------------------------------------- tests

def test_three_step_operation_streams_lines_over_sse_while_it_runs(
        app, client, auth, graph, workers, clean_streams):
    _login(auth)
    workers()
    steps = [{"name": f"step {n}", "script": "lines", "args": [5, 0.3]} for n in range(3)]
    op = _start(graph, steps)
    resp = client.get(f"/operations/{op.id}/events", buffered=False)
    buf, arrivals = "", []
    for chunk in resp.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        buf += text
        for ev in _sse_events(text):
            if ev["event"] == "line" and "\">line " in ev["data"]:
                db.session.expire_all()
                arrivals.append((time.monotonic(), _op(op.id).status))
        if "event: end" in buf:
            break
    resp.close()
    events = _sse_events(buf)
    assert events[-1]["event"] == "end", buf[-2000:]
    assert events[-1]["data"] == "succeeded", (_op(op.id).error, buf[-1000:])
    lines = [e for e in events if e["event"] == "line" and "\">line " in e["data"]]
    assert len(lines) == 15
    assert all(status is S.RUNNING for _, status in arrivals)  # arrived while it ran
    assert arrivals[-1][0] - arrivals[0][0] > 3.0  # as printed, not in one batch at the end
    op = _op(op.id)
    assert [s.status for s in op.steps] == [T.SUCCEEDED] * 3
    assert op.steps[0].logs.count("\nline ") == 5


def test_sigkill_of_the_worker_interrupts_frees_the_lock_and_the_next_runs(
        app, graph, workers, clean_streams):
    first = workers()
    op = _start(graph, [{"name": "long", "script": "sleep", "args": [3031]}])
    _wait(lambda: "started" in ((_op(op.id).steps or [None])[0] or type("x", (), {"logs": ""})).logs,
          60)
    killed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    workers()  # a supervisor restarts the worker; its reaper and start-up recovery take over
    _wait(lambda: _op(op.id).status is S.INTERRUPTED, 60)
    assert time.monotonic() - killed_at < 60
    stopped = _op(op.id)
    assert "died" in stopped.error or "heartbeat" in stopped.error
    assert stopped.steps[0].status is T.INTERRUPTED and stopped.finished_at
    assert db.session.execute(sa.select(OperationLock)).first() is None
    nxt = _start(graph, [{"name": "quick", "script": "lines", "args": [2, 0]}])
    _wait(lambda: _op(nxt.id).status is S.SUCCEEDED, 60)
    _wait(lambda: not _remote_processes(graph.sandbox_server, "sleep 3031"), 30)


def test_killed_work_horse_is_interrupted_by_its_worker(app, graph, workers, clean_streams):
    workers()
    op = _start(graph, [{"name": "long", "script": "sleep", "args": [3032]}])
    _wait(lambda: _op(op.id).worker_name and _op(op.id).steps and "started" in _op(op.id).steps[0].logs, 60)
    horse_pid = int(_op(op.id).worker_name.rsplit("/", 1)[1])
    os.kill(horse_pid, signal.SIGKILL)
    _wait(lambda: _op(op.id).status is S.INTERRUPTED, 30)
    assert "died" in _op(op.id).error
    assert db.session.execute(sa.select(OperationLock)).first() is None
    _wait(lambda: not _remote_processes(graph.sandbox_server, "sleep 3032"), 30)


def _kill_session_sshd(server, pattern: str) -> None:
    """Kill the sshd process serving the session that runs `pattern` (a cut connection)."""
    script = r'''
pid=$(ps -eo pid,args | grep -F -- "$1" | grep -v grep | awk '{print $1}' | head -n1)
[ -n "$pid" ] || exit 3
while [ "$pid" -gt 1 ]; do
  args=$(tr '\0' ' ' < /proc/$pid/cmdline)
  case "$args" in "sshd: "*) kill -9 "$pid"; exit 0;; esac
  pid=$(awk '{print $4}' /proc/$pid/stat)
done
exit 4
'''
    server.exec("sh", "-c", script, "sh", pattern)


def test_cut_ssh_connection_fails_the_step_and_leaves_nothing_running(app, graph, clean_streams,
                                                                     scripted):
    app.config["KEYSTONE_SSH_DEAD_PEER_TIMEOUT"] = 10
    op = _start(graph, [{"name": "long", "script": "sleep", "args": [3033]}], enqueue=False)
    server = graph.sandbox_server

    def cut():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _remote_processes(server, "sleep 3033"):
                time.sleep(0.5)
                _kill_session_sshd(server, "sleep 3033")
                return
            time.sleep(0.2)

    threading.Thread(target=cut, daemon=True).start()
    started = time.monotonic()
    assert run_operation(op.id) == "failed"
    assert time.monotonic() - started < 60
    db.session.expire_all()
    op = _op(op.id)
    assert "SSH connection" in op.error and "lost" in op.error, op.error
    assert op.steps[0].status is T.FAILED and "lost" in op.steps[0].error_logs
    _wait(lambda: not _remote_processes(server, "sleep 3033"), 20)


def test_a_failed_step_keeps_its_stderr_apart_and_first(app, graph, clean_streams, scripted):
    """SPEC 3 on a real server under the pty: error_logs holds the stderr line (then the
    reason), the merged log every line, and the step's exit code is the command's."""
    op = _start(graph, [{"name": "migrate", "script": "fail_stderr", "args": ["users"]}],
                enqueue=False)
    assert run_operation(op.id) == "failed"
    db.session.expire_all()
    step = _op(op.id).steps[0]
    assert step.status is T.FAILED and step.exit_code == 4
    assert step.error_logs.splitlines()[0] == "SQLSTATE: table users exists"
    assert "exited with 4: SQLSTATE: table users exists" in step.error_logs.splitlines()[-1]
    stderr = "\n".join(step.error_logs.splitlines()[:-1])  # the last line is the reason
    assert stderr == "SQLSTATE: table users exists"
    assert "migrating users" in step.logs and "SQLSTATE: table users exists" in step.logs
    assert "KEYSTONE_ERR_" not in step.logs + step.error_logs


def test_changed_host_key_is_refused_and_names_both_fingerprints(app, graph, clean_streams, scripted):
    _, _, other_fp = generate_ed25519("old host key")
    graph.server.host_key_fingerprint = other_fp  # what we pinned when we first met it
    db.session.commit()
    op = _start(graph, [{"name": "hello", "script": "lines", "args": [1, 0]}], enqueue=False)
    assert run_operation(op.id) == "failed"
    db.session.expire_all()
    op = _op(op.id)
    assert other_fp in op.error and graph.sandbox_server.host_key_fingerprint in op.error
    assert "refused" in op.error
    assert db.session.get(Server, graph.server.id).host_key_fingerprint == other_fp  # not re-pinned


def test_secret_sentinel_appears_nowhere(app, client, auth, graph, workers, clean_streams):
    _login(auth)
    workers()
    op = _start(graph, [{"name": "use secret", "script": "echo_secret", "secret": True},
                        {"name": "after", "script": "lines", "args": [1, 0]}])
    resp = client.get(f"/operations/{op.id}/events", buffered=False)
    sse_text = ""
    for chunk in resp.response:
        sse_text += chunk.decode() if isinstance(chunk, bytes) else chunk
        if "event: end" in sse_text:
            break
    resp.close()
    db.session.expire_all()
    op = _op(op.id)
    assert op.status is S.SUCCEEDED, op.error
    assert "the secret is ***" in op.steps[0].logs  # it really was printed, and masked
    assert SENTINEL not in sse_text and "the secret is ***" in sse_text
    # Database: every column except encrypted ones.
    encrypted = {(t.name, c.name) for t, c in encrypted_columns(db.metadata)}
    for table in db.metadata.sorted_tables:
        cols = [c for c in table.columns if (table.name, c.name) not in encrypted]
        for row in db.session.execute(sa.select(*cols)).all():
            assert SENTINEL not in " ".join(str(v) for v in row), table.name
    assert op.steps[0].secrets and SENTINEL in op.steps[0].secrets.values()
    # Redis: every key of every type, RQ job hashes and results included.
    r = clean_streams
    seen = 0
    for key in r.scan_iter("*"):
        kind = r.type(key)
        dump = {b"stream": lambda: r.xrange(key), b"hash": lambda: r.hgetall(key),
                b"string": lambda: r.get(key), b"list": lambda: r.lrange(key, 0, -1),
                b"set": lambda: r.smembers(key), b"zset": lambda: r.zrange(key, 0, -1)}.get(kind)
        if dump is None:
            continue
        blob = repr(dump())
        seen += 1
        assert SENTINEL not in blob and SENTINEL.encode().hex() not in blob, key
    assert seen > 3
    # HTML.
    for url in (f"/operations/{op.id}", f"/operations/{op.id}/panel", "/operations", "/"):
        page = client.get(url).get_data(as_text=True)
        assert SENTINEL not in page, url
