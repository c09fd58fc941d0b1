"""Provisioning for real, on the sandbox's BARE server (Debian, sshd, root key and
password, no Docker): through the web flow (custom server, host-key confirmation),
the real operations engine and real SSH. Then the Hetzner flow against the local
fake API, ending on the same real server; then bad input that must fail fast and
say which.

The bare server belongs to this module: provisioning hardens it for the rest of
the sandbox's life (a reused sandbox starts already provisioned, which the
first run tolerates: it then changes only what differs, e.g. a new org's key).
"""
from __future__ import annotations

import socket
import time

import paramiko
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Operation, Organisation, Provider, Server
from app.models.enums import OperationKind, OperationStatus, ServerStatus, StepStatus
from app.providers.hetzner_fake import FakeHetzner

pytestmark = pytest.mark.integration


def _run(op_id: int) -> Operation:
    from app.operations.runner import execute_operation
    execute_operation(op_id)
    db.session.expire_all()
    return db.session.get(Operation, op_id)


def _explain(op: Operation) -> str:
    lines = [f"operation {op.id} {op.status}: {op.error}"]
    for step in op.steps:
        lines.append(f"--- {step.name} [{step.status}]\n{step.logs[-2500:]}\n{step.error_logs}")
    return "\n".join(lines)


def _latest_op(server_id: int) -> Operation:
    return db.session.execute(sa.select(Operation).where(Operation.target_id == server_id)
                              .order_by(Operation.id.desc())).scalars().first()


def _password_login(host: str, port: int, user: str, password: str) -> str:
    sock = socket.create_connection((host, port), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        try:
            transport.auth_password(user, password)
        except paramiko.BadAuthenticationType as exc:
            return "refused: server allows only " + ",".join(exc.allowed_types)
        except paramiko.AuthenticationException:
            return "refused"
        return "accepted" if transport.is_authenticated() else "refused"
    finally:
        transport.close()


def test_provision_bare_server_twice_then_hetzner_flow(app, client, auth, sandbox):
    bare = sandbox.bare
    assert bare is not None, "the sandbox has no bare server"
    auth.signup()
    csrf = auth.csrf()

    # -- custom server: the form reads the host key without logging in ------------
    resp = client.post("/servers/custom/new", data={
        "csrf_token": csrf, "name": "bare", "host": bare.host, "port": str(bare.ssh_port),
        "user": "root", "private_key": bare.root_key_path.read_text()})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    server = db.session.execute(sa.select(Server)).scalar_one()
    scan = _latest_op(server.id)                                   # the view only starts it
    assert scan.kind == OperationKind.HOST_KEY_SCAN and scan.status == OperationStatus.PENDING
    scan = _run(scan.id)
    assert scan.status == OperationStatus.SUCCEEDED, _explain(scan)
    page = client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)
    assert bare.host_key_fingerprint in page                       # shown BEFORE trusting it
    assert server.host_key_fingerprint is None
    assert _latest_op(server.id).id == scan.id                     # nothing else ran yet
    resp = client.post(f"/servers/{server.id}/host-key",
                       data={"csrf_token": csrf, "fingerprint": bare.host_key_fingerprint})
    assert resp.status_code == 302
    db.session.expire_all()
    assert server.host_key_fingerprint == bare.host_key_fingerprint
    first = _latest_op(server.id)
    assert first is not None and first.status == OperationStatus.PENDING

    # -- first run: for real (apt from Debian's mirror inside the container) -------
    started = time.monotonic()
    first = _run(first.id)
    assert first.status == OperationStatus.SUCCEEDED, _explain(first)
    print(f"first provisioning: {time.monotonic() - started:.1f}s")
    server = db.session.get(Server, server.id)
    assert server.status == ServerStatus.ACTIVE
    assert server.docker_version and server.compose_version
    assert server.docker_source == "distribution"     # download.docker.com is unreachable here
    assert server.bootstrap_private_key is None and server.bootstrap_user is None
    assert server.provisioned_at is not None
    verify = next(s for s in first.steps if s.name == "Verify")
    assert "work for keystone" in verify.logs and "UFW active" in verify.logs

    # -- second run: changes nothing and says so, step by step --------------------
    resp = client.post(f"/servers/{server.id}/provision", data={"csrf_token": csrf})
    assert resp.status_code == 302
    second = _run(_latest_op(server.id).id)
    assert second.id != first.id
    assert second.status == OperationStatus.SUCCEEDED, _explain(second)
    assert second.result["changed"] is False, _explain(second)
    assert second.result["summary"].startswith("No changes")
    assert len(second.steps) >= 12
    for step in second.steps:
        assert step.status == StepStatus.SKIPPED and step.changed is False, \
            f"{step.name} changed on the second run:\n{step.logs}"
        assert "unchanged: " in step.logs, step.name
    # The second run logged in as root with the management key (the bootstrap key is gone).
    assert "as root" in second.steps[0].logs

    # -- password logins are refused for root and keystone ------------------------
    for user, password in (("root", bare.root_password), ("keystone", bare.root_password)):
        outcome = _password_login(bare.host, bare.ssh_port, user, password)
        assert outcome.startswith("refused"), f"{user}: {outcome}"
        assert "password" not in outcome.split("only ")[-1]

    # -- the keystone user runs docker with the management key ---------------------
    from app.remote import Connection
    from app.shell import cmd
    org = db.session.execute(sa.select(Organisation)).scalar_one()
    with Connection(bare.host, bare.ssh_port, "keystone", org.management_key_private,
                    bare.host_key_fingerprint) as conn:
        res = conn.run(cmd("docker", "ps"), timeout=60)
        assert res.ok and "CONTAINER ID" in res.stdout, res.stdout
        assert conn.run(cmd("sudo", "-n", "/usr/sbin/ufw", "status"), timeout=30).ok
        assert not conn.run(cmd("sudo", "-n", "/usr/bin/apt-get", "update"), timeout=30).ok
        for d in ("services", "gateway", "operations"):
            assert conn.run(cmd("test", "-d", f"/home/keystone/{d}", "-a", "-w",
                                f"/home/keystone/{d}"), timeout=30).ok, d
        assert not conn.run(cmd("sh", "-c", "ls ~/.ssh | grep -v authorized_keys"),
                            timeout=30).stdout.strip(), "only authorized_keys in ~keystone/.ssh"

    # -- the server page shows what happened -------------------------------------
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    for text in (server.docker_version, server.compose_version, bare.host_key_fingerprint,
                 f"operation #{second.id}", "No changes", "active"):
        assert text in page, text

    # -- Hetzner: the fake API hands out the bare server's address --------------
    fake = FakeHetzner(tokens={"hz-token"}, public_ips=[bare.host], boot_polls=2).start()
    try:
        app.config["HETZNER_API_ENDPOINT"] = fake.endpoint
        app.config["HETZNER_POLL_INTERVAL"] = 0.05
        client.post("/servers/providers/hetzner/new",
                    data={"csrf_token": csrf, "name": "hetzner", "token": "hz-token"})
        provider = db.session.execute(sa.select(Provider)).scalar_one()
        sync = db.session.execute(sa.select(Operation).where(     # the token and the form's lists
            Operation.kind == OperationKind.PROVIDER_SYNC, Operation.target_id == provider.id)
        ).scalar_one()
        sync = _run(sync.id)
        assert sync.status == OperationStatus.SUCCEEDED, _explain(sync)
        resp = client.post(f"/servers/providers/{provider.id}/servers/new", data={
            "csrf_token": csrf, "name": "cloud-1", "server_type": "cx22", "image": "debian-12",
            "location": "fsn1", "network": "7001"})
        assert resp.status_code == 302, resp.get_data(as_text=True)
        cloud = db.session.execute(sa.select(Server).where(Server.name == "cloud-1")).scalar_one()
        assert cloud.status == ServerStatus.CREATING and cloud.host_key_fingerprint is None
        assert cloud.provider_server_id is None and not fake.servers
        # The fake cannot model a port: point the server at the bare server's published one.
        cloud.ssh_port = bare.ssh_port
        db.session.commit()
        op = _run(_latest_op(cloud.id).id)
        assert op.status == OperationStatus.SUCCEEDED, _explain(op)
        cloud = db.session.get(Server, cloud.id)
        assert cloud.status == ServerStatus.ACTIVE
        assert cloud.public_ip == bare.host and cloud.private_ip == "10.0.1.2"
        assert cloud.host_key_fingerprint == bare.host_key_fingerprint    # pinned on first contact
        # Hetzner creates the server inside the operation, never in the request.
        assert [s.name for s in op.steps[:2]] == ["Create the server at Hetzner",
                                                  "Wait for the server at Hetzner"]
        key = next(iter(fake.ssh_keys.values()))
        assert key["public_key"] == org.management_key_public
    finally:
        fake.stop()


def _custom_server(org: Organisation, name: str, host: str, port: int, key: str,
                   fingerprint: str) -> Server:
    server = Server(organisation_id=org.id, name=name, public_ip=host, ssh_port=port,
                    bootstrap_user="root", bootstrap_private_key=key,
                    host_key_fingerprint=fingerprint)
    db.session.add(server)
    db.session.commit()
    return server


def _provision(server: Server) -> tuple[Operation, float]:
    from app.models.enums import OperationKind
    from app.operations import start_operation
    op = start_operation(OperationKind.SERVER_PROVISION, target_type="server",
                         target_id=server.id, organisation_id=server.organisation_id,
                         lock_keys=[f"server:{server.id}"], enqueue=False)
    started = time.monotonic()
    op = _run(op.id)
    return op, time.monotonic() - started


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("case", ["unreachable", "wrong-port", "key-refused", "host-key-changed"])
def test_bad_input_fails_within_30s_and_says_which(app, sandbox, case):
    from app.accounts import create_account
    from app.remote import generate_ed25519
    bare = sandbox.bare
    org = create_account(organisation="Bad", email=f"{case}@example.com",
                         password="correct horse battery").organisation
    stranger_key = generate_ed25519()[0]
    host, port, key, pin = bare.host, bare.ssh_port, bare.root_key_path.read_text(), \
        bare.host_key_fingerprint
    if case == "unreachable":
        host, port = "10.255.255.1", 22
    elif case == "wrong-port":
        port = _closed_port()
    elif case == "key-refused":
        key = stranger_key
    elif case == "host-key-changed":
        pin = "SHA256:" + "A" * 43
    server = _custom_server(org, case, host, port, key, pin)
    op, seconds = _provision(server)
    assert op.status == OperationStatus.FAILED
    assert seconds < 60, f"{case} took {seconds:.1f}s"  # bounded by the 10 s connect timeout
    error = op.error or ""
    expected = {
        "unreachable": ["10.255.255.1:22"],
        "wrong-port": [f"refused the connection: nothing listens on port {port}"],
        "key-refused": ["refused Keystone's key for user 'root'"],
        "host-key-changed": ["does not match the pinned key", bare.host_key_fingerprint],
    }[case]
    for text in expected:
        assert text in error, f"{case}: {error}"
    if case == "unreachable":
        # Black-holed here usually means a timeout; some networks' gateways answer RST.
        assert any(w in error for w in ("no answer", "Could not reach", "handshake",
                                        "refused the connection")), error
    db.session.expire_all()
    assert db.session.get(Server, server.id).status == ServerStatus.UNREACHABLE
    assert "PRIVATE KEY" not in error and "PRIVATE KEY" not in "".join(s.logs for s in op.steps)
