"""RecordingConnection, ConnectionPool bookkeeping, Result, and the package boundaries."""

import pathlib
import re
import threading

import pytest

from app import shell
from app.remote import (
    CommandCancelled,
    CommandFailed,
    ConnectionPool,
    HostKeyMismatch,
    RecordingConnection,
    Result,
    TransferFailed,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_records_real_and_masked_commands():
    fake = RecordingConnection()
    fake.connect()
    fake.run(shell.cmd("docker", "login", "-u", "me", "--password", shell.Secret("pw 1")))
    fake.run("uptime")
    assert fake.commands == ["docker login -u me --password ***", "uptime"]
    assert fake.rendered == ["docker login -u me --password 'pw 1'", "uptime"]
    assert fake.calls[0].secrets == ["pw 1"]


def test_scripted_results_and_lines():
    fake = RecordingConnection()
    fake.script("docker ps", output="web\nworker\n")
    fake.script(re.compile(r"^test -f"), exit_code=1, times=1)
    lines = []
    r = fake.run(shell.cmd("docker", "ps"), on_line=lambda s, l: lines.append((s, l)))
    assert r.stdout == "web\nworker\n" and lines == [("stdout", "web"), ("stdout", "worker")]
    assert fake.run(shell.cmd("test", "-f", "/x")).exit_code == 1
    assert fake.run(shell.cmd("test", "-f", "/x")).exit_code == 0  # times=1 used up
    assert fake.run(shell.cmd("anything")).ok


def test_scripted_exception_and_cancel():
    fake = RecordingConnection().script("boom", raises=TransferFailed("nope"))
    with pytest.raises(TransferFailed):
        fake.run(shell.cmd("boom"))
    ev = threading.Event()
    ev.set()
    with pytest.raises(CommandCancelled):
        fake.run(shell.cmd("x"), cancel=ev)


def test_files_and_mkdir():
    fake = RecordingConnection()
    fake.mkdir_p("/home/keystone/apps/my app")
    fake.put_file("/home/keystone/apps/my app/.env", b"A=1\n", mode=0o600)
    assert fake.commands == ["mkdir -p -- '/home/keystone/apps/my app'"]
    assert fake.files["/home/keystone/apps/my app/.env"] == (b"A=1\n", 0o600)
    assert fake.get_file("/home/keystone/apps/my app/.env") == b"A=1\n"
    with pytest.raises(TransferFailed):
        fake.get_file("/missing")


def test_fake_host_key_mismatch():
    fake = RecordingConnection(expected_fingerprint="SHA256:pinned", fingerprint="SHA256:other")
    with pytest.raises(HostKeyMismatch) as info:
        fake.connect()
    assert "SHA256:pinned" in str(info.value) and "SHA256:other" in str(info.value)


def test_pool_counts_handshakes_with_a_fake_factory():
    pool = ConnectionPool(factory=RecordingConnection)
    a = pool.get("h", 22, "keystone", "KEY", None)
    b = pool.get("h", 22, "keystone", "KEY", None)
    c = pool.get("other", 22, "keystone", "KEY", None)
    assert a is b and a is not c
    assert pool.handshakes == 2
    a.close()
    d = pool.get("h", 22, "keystone", "KEY", None)
    assert d is not a and pool.handshakes == 3
    with pytest.raises(HostKeyMismatch):
        pool.get("h", 22, "keystone", "KEY", "SHA256:somethingelse")
    pool.close()
    assert len(pool) == 0


def test_result_check():
    assert Result(0, "ok\n").check() .ok
    with pytest.raises(CommandFailed) as info:
        Result(2, "", "line1\nno such file\n").check("docker compose up")
    assert str(info.value) == "docker compose up exited with 2: line1 | no such file"
    with pytest.raises(CommandFailed, match="killed by a signal"):
        Result(-1).check()


def _python_sources():
    for path in (ROOT / "app").rglob("*.py"):
        yield path, path.read_text()


def test_paramiko_is_imported_only_in_app_remote():
    offenders = [
        str(p.relative_to(ROOT))
        for p, text in _python_sources()
        if re.search(r"^\s*(import|from)\s+paramiko", text, re.M) and "app/remote/" not in p.as_posix()
    ]
    assert offenders == []


def test_no_shell_true_anywhere_in_app():
    import ast

    # subprocess-style calls only: a compose healthcheck's CMD-SHELL flag is not a local shell.
    spawners = {"run", "Popen", "call", "check_call", "check_output", "create_subprocess_shell"}
    offenders = []
    for path, text in _python_sources():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name not in spawners:
                continue
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
