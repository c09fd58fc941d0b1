"""app.remote against real OpenSSH servers.

Every test that takes ``sshd`` runs twice: against a throwaway sshd this
module starts on 127.0.0.1 (generated host key, generated client key in a
private authorized_keys file, logged in as the current user; fast and needs
nothing but openssh-server) and against the first server of the shared
``sandbox`` fixture (a container with sshd, reached by its pinned host key
and root key, like a real server). Leftover processes and file modes are
checked over a second SSH connection, never locally.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from app import shell
from app.shell import end_of_options
from app.remote import (
    AuthenticationFailed,
    CommandCancelled,
    CommandTimeout,
    Connection,
    ConnectionLost,
    ConnectionPool,
    ConnectionRefused,
    ConnectTimeout,
    HostKeyMismatch,
    ProtocolError,
    Unreachable,
    generate_ed25519,
)

pytestmark = pytest.mark.integration

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_sshd(tmp_path_factory):
    if not os.path.exists(SSHD):
        pytest.fail("openssh-server is not installed: apt-get install -y openssh-server "
                    "(scripts/ensure-docker.sh installs it)")
    d = tmp_path_factory.mktemp("sshd")
    host_private, _host_public, host_fp = generate_ed25519("host")
    client_private, client_public, _ = generate_ed25519("keystone-test")
    (d / "host_key").write_text(host_private)
    os.chmod(d / "host_key", 0o600)
    (d / "authorized_keys").write_text(client_public + "\n")
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {d / 'host_key'}",
                f"AuthorizedKeysFile {d / 'authorized_keys'}",
                f"PidFile {d / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "MaxStartups 100",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.poll() is not None else ""
                proc.kill()
                pytest.fail(f"could not start a local sshd: {err}")
            time.sleep(0.05)
    yield SimpleNamespace(
        host="127.0.0.1",
        port=port,
        username=getpass.getuser(),
        key=client_private,
        fingerprint=host_fp,
    )
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["local-sshd", "sandbox"])
def sshd(request):
    """One SSH target: host, port, username, key (private PEM), fingerprint (pinned)."""
    if request.param == "local-sshd":
        return request.getfixturevalue("local_sshd")
    server = request.getfixturevalue("sandbox").servers[0]
    return SimpleNamespace(
        host=server.host,
        port=server.ssh_port,
        username=server.user,
        key=server.root_key_path.read_text(),
        fingerprint=server.host_key_fingerprint,
    )


def _conn(s, **kw) -> Connection:
    kw.setdefault("expected_fingerprint", s.fingerprint)
    return Connection(s.host, s.port, s.username, s.key, **kw)


@pytest.fixture
def conn(sshd):
    c = _conn(sshd)
    c.connect()
    yield c
    c.close()


def _remote_processes(sshd, needle: str) -> list[str]:
    """Processes whose command line contains needle, seen over a second connection."""
    listing = shell.cmd("sh", "-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done 2>/dev/null')
    with _conn(sshd) as other:
        out = other.run(listing, pty=False).stdout
    return [line for line in out.splitlines() if needle in line and "/proc/" not in line]


def _wait_gone(sshd, needle: str, seconds: float = 5.0) -> list[str]:
    end = time.monotonic() + seconds
    while True:
        left = _remote_processes(sshd, needle)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


# ---------------------------------------------------------------- connect


def test_first_contact_returns_the_host_key_fingerprint(sshd):
    c = _conn(sshd, expected_fingerprint=None)
    try:
        assert c.first_contact
        assert c.connect() == sshd.fingerprint
        assert c.fingerprint == sshd.fingerprint
        assert c.is_connected
    finally:
        c.close()
    assert not c.is_connected


def test_pinned_key_connects(sshd):
    with _conn(sshd) as c:
        assert c.run(shell.cmd("true")).exit_code == 0


def test_host_key_mismatch_names_both_fingerprints(sshd):
    _, _, other_fp = generate_ed25519()
    c = _conn(sshd, expected_fingerprint=other_fp)
    with pytest.raises(HostKeyMismatch) as info:
        c.connect()
    message = str(info.value)
    assert other_fp in message and sshd.fingerprint in message
    assert "re-pin" in message and "explicit" in message
    assert info.value.expected == other_fp and info.value.presented == sshd.fingerprint
    assert not c.is_connected


def test_wrong_port_is_refused_fast(sshd):
    port = _free_port()
    c = Connection(sshd.host, port, sshd.username, sshd.key, None, connect_timeout=10)
    start = time.monotonic()
    with pytest.raises(ConnectionRefused) as info:
        c.connect()
    assert time.monotonic() - start < 10  # refused at once, not retried until a timeout
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "wrong SSH port" in str(info.value)


def test_silent_server_times_out_within_connect_timeout():
    # Accepts TCP but never speaks SSH: the handshake deadline must hold.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    private, _, _ = generate_ed25519()
    try:
        c = Connection("127.0.0.1", port, "nobody", private, None, connect_timeout=2)
        start = time.monotonic()
        with pytest.raises((ConnectTimeout, ProtocolError)) as info:
            c.connect()
        assert time.monotonic() - start < 15  # bounded (without a deadline: forever)
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        listener.close()


def test_blackholed_address_fails_within_timeout():
    private, _, _ = generate_ed25519()
    # TEST-NET-1 (RFC 5737): never routed; either dropped (timeout) or unreachable.
    c = Connection("192.0.2.1", 22, "root", private, None, connect_timeout=2)
    start = time.monotonic()
    with pytest.raises(Unreachable) as info:
        c.connect()
    assert time.monotonic() - start < 15  # bounded, not the OS's ~2 min TCP timeout
    assert "192.0.2.1:22" in str(info.value)


def test_refused_key_is_a_clear_authentication_error(sshd):
    stranger, _, _ = generate_ed25519()
    c = Connection(sshd.host, sshd.port, sshd.username, stranger, sshd.fingerprint)
    start = time.monotonic()
    with pytest.raises(AuthenticationFailed) as info:
        c.connect()
    assert time.monotonic() - start < 15
    assert "refused Keystone's key" in str(info.value)
    assert f"{sshd.host}:{sshd.port}" in str(info.value)


# ---------------------------------------------------------------- run


def test_exit_code_and_output(conn):
    r = conn.run(shell.seq(shell.cmd("printf", "%s\\n", "hello"), shell.cmd("exit", 3)))
    assert r.exit_code == 3 and not r.ok
    assert r.stdout == "hello\n"


def test_secret_reaches_the_server_intact(conn):
    value = "it's $(id) `id` ;id\\ \"q\""
    lines = []
    r = conn.run(shell.cmd("printf", "%s\\n", shell.Secret(value)), on_line=lambda s, l: lines.append(l))
    assert lines == [value] and r.ok


def test_lines_arrive_as_they_are_printed(conn):
    arrivals = []
    script = shell.and_then(
        shell.cmd("echo", "first"), shell.cmd("sleep", "3"), shell.cmd("echo", "second")
    )
    start = time.monotonic()
    r = conn.run(script, on_line=lambda stream, line: arrivals.append((line, time.monotonic() - start)))
    end = time.monotonic() - start
    assert [a[0] for a in arrivals] == ["first", "second"]
    assert arrivals[0][1] < end - 1.5, arrivals  # not delivered at the end
    assert r.ok


def test_stderr_is_kept_apart_with_and_without_a_pty(conn):
    """SPEC 3: under the pty (lines as printed) stderr lines still come back as stderr;
    ``stdout`` keeps the merged text the terminal showed, the exit status is the command's."""
    script = shell.seq(shell.cmd("echo", "out"), shell.cmd("echo", "err", shell.Raw(">&2")))
    seen = []
    r = conn.run(script, on_line=lambda s, l: seen.append((s, l)))
    assert sorted(seen) == [("stderr", "err"), ("stdout", "out")]
    assert r.stderr == "err\n" and sorted(r.stdout.split()) == ["err", "out"]
    failing = shell.seq(shell.cmd("echo", "err2", shell.Raw(">&2")), shell.cmd("exit", 5))
    r = conn.run(failing)
    assert r.exit_code == 5 and r.stderr == "err2\n"
    seen.clear()
    r = conn.run(script, on_line=lambda s, l: seen.append((s, l)), pty=False)
    assert sorted(seen) == [("stderr", "err"), ("stdout", "out")]
    assert r.stderr == "err\n"


def test_stdin_is_delivered_byte_for_byte(conn):
    data = bytes(range(256)) * 64
    r = conn.run(shell.cmd("sha256sum"), stdin=data)
    import hashlib

    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_stdin_is_empty_by_default_so_prompts_do_not_hang(conn):
    r = conn.run(shell.cmd("cat"), timeout=5)
    assert r.ok and r.stdout == ""


def test_timeout_kills_the_remote_process_group(sshd, conn):
    # A child that ignores TERM and HUP needs the KILL after the grace period.
    script = shell.cmd("sh", "-c", "trap '' TERM HUP; sleep 3017 & sleep 3018; wait")
    conn.kill_grace = 1.0
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        conn.run(script, timeout=1)
    assert time.monotonic() - start < 30  # vs. the 3017 s sleep it would otherwise wait
    assert "within 1s" in str(info.value) and "terminated" in str(info.value)
    assert _wait_gone(sshd, "sleep 301") == []
    assert conn.run(shell.cmd("true")).ok  # the connection is still usable


@pytest.mark.parametrize("pty", [False, True])
def test_cancel_terminates_the_command(sshd, conn, pty):
    # with the pty the command runs under the stderr tagger (bash + sed): all one group
    cancel = threading.Event()
    threading.Timer(0.7, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(CommandCancelled):
        conn.run(shell.cmd("sleep", "3019"), cancel=cancel, pty=pty)
    assert time.monotonic() - start < 30  # vs. the 3019 s sleep
    assert _wait_gone(sshd, "sleep 3019") == []
    assert _wait_gone(sshd, "KEYSTONE_ERR_") == []


@pytest.mark.parametrize("pty", [False, True])
def test_a_cancel_before_the_group_is_known_still_terminates_the_command(sshd, conn, pty):
    """The cancel (or timeout) came before the wrapper's first line, which says the process
    group: closing the channel alone left a command without a pty running for good (seen in
    make test on a loaded machine: a 0.7 s cancel beat sshd's start-up). A cancel already set
    when the command starts is that case every time."""
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CommandCancelled) as info:
        conn.run(shell.cmd("sleep", "3021"), cancel=cancel, pty=pty)
    assert "and terminated" in str(info.value)
    assert _wait_gone(sshd, "sleep 3021") == []
    assert conn.run(shell.cmd("true")).ok


def test_on_line_exception_terminates_the_command(sshd, conn):
    def boom(stream, line):
        raise RuntimeError("recorder failed")

    with pytest.raises(RuntimeError):
        conn.run(shell.and_then(shell.cmd("echo", "x"), shell.cmd("sleep", "3021")), on_line=boom)
    assert _wait_gone(sshd, "sleep 3021") == []


def test_connection_lost_mid_command(sshd):
    c = _conn(sshd)
    c.connect()
    lines = []

    def cut():
        # Simulate a network cut: the socket dies under the transport.
        c._transport.sock.shutdown(socket.SHUT_RDWR)

    def on_line(stream, line):
        # Cut once the command has surely started (a fixed delay raced a loaded machine,
        # where the first line could arrive after it).
        lines.append(line)
        if line == "started":
            threading.Timer(0.5, cut).start()

    with pytest.raises(ConnectionLost) as info:
        c.run(
            shell.and_then(shell.cmd("echo", "started"), shell.cmd("sleep", "3020")),
            on_line=on_line,
            timeout=20,
        )
    assert "lost during the step" in str(info.value)
    assert lines == ["started"]
    assert _wait_gone(sshd, "sleep 3020") == []
    c.close()


# ---------------------------------------------------------------- files


def _remote_tmpdir(conn) -> str:
    return conn.run(shell.cmd("mktemp", "-d"), pty=False).check().stdout.strip()


def test_put_file_is_atomic_with_mode(conn):
    base = _remote_tmpdir(conn)
    target_dir = base + "/dir with space $(id)"
    conn.mkdir_p(target_dir + "/nested")
    path = target_dir + "/nested/.env"
    inode = shell.cmd("stat", "-c", "%i %a", path)
    conn.put_file(path, b"OLD=1\n")
    inode_before, mode_before = conn.run(inode, pty=False).check().stdout.split()
    secret = b"APP_KEY=base64:abc$(id)\n" * 1000
    conn.put_file(path, secret, mode=0o600)
    inode_after, mode_after = conn.run(inode, pty=False).check().stdout.split()
    assert mode_after == "600"
    assert inode_after != inode_before  # replaced by rename, not rewritten in place
    assert conn.get_file(path) == secret
    listing = conn.run(shell.cmd("ls", "-A", target_dir + "/nested"), pty=False).check().stdout
    assert listing.split() == [".env"]  # no temp leftovers
    conn.run(shell.cmd("rm", "-rf", end_of_options(), base), pty=False).check()


def test_put_file_into_missing_directory_is_a_clear_error(conn):
    from app.remote import TransferFailed

    with pytest.raises(TransferFailed) as info:
        conn.put_file("/nonexistent-keystone-dir/missing/x", b"x")
    assert "missing" in str(info.value)


# ---------------------------------------------------------------- pool


def test_pool_reuses_one_connection_for_many_steps(sshd):
    with ConnectionPool() as pool:
        for i in range(10):
            c = pool.get(sshd.host, sshd.port, sshd.username, sshd.key, sshd.fingerprint)
            assert c.run(shell.cmd("echo", i)).stdout == f"{i}\n"
        assert pool.handshakes == 1
        assert len(pool) == 1


def test_pool_reconnects_after_loss(sshd):
    with ConnectionPool() as pool:
        c = pool.get(sshd.host, sshd.port, sshd.username, sshd.key, None)
        c.close()
        c2 = pool.get(sshd.host, sshd.port, sshd.username, sshd.key, None)
        assert c2.is_connected and pool.handshakes == 2
        assert c2.fingerprint == sshd.fingerprint
