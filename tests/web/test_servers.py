"""Servers pages: management key, Hetzner flow against the local fake API (errors
included, as the user reads them), custom server form errors, host-key pages."""
from __future__ import annotations

import re
import socket

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Operation, Organisation, Provider, Server
from app.models.enums import OperationKind, ProviderType, ServerStatus
from app.jobs import run_operation
from app.providers.hetzner_fake import FakeHetzner
from tests.opsupport import started_operation

TOKEN = "hetzner-test-token-0123456789"


@pytest.fixture()
def hetzner(app):
    fake = FakeHetzner(tokens={TOKEN}).start()
    app.config["HETZNER_API_ENDPOINT"] = fake.endpoint
    app.config["HETZNER_POLL_INTERVAL"] = 0.01
    yield fake
    fake.stop()


def _post(client, url, data, csrf, htmx=False):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(url, data={"csrf_token": csrf, **data}, headers=headers)


def _org():
    return db.session.execute(sa.select(Organisation)).scalars().first()


def test_servers_page_creates_and_shows_the_management_key(client, auth):
    auth.signup()
    page = client.get("/servers/").get_data(as_text=True)
    org = _org()
    assert org.management_key_public.startswith("ssh-ed25519 ")
    assert org.management_key_fingerprint.startswith("SHA256:")
    assert org.management_key_public in page
    assert "PRIVATE KEY" not in page
    # Encrypted at rest: the raw column holds no PEM.
    raw = db.session.execute(sa.text("SELECT management_key_private FROM organisations")).scalar()
    assert "PRIVATE KEY" not in raw
    # Created once: a second visit keeps the same key.
    client.get("/servers/")
    db.session.refresh(org)
    assert page.count(org.management_key_public) == 1


def _connect_hetzner(client, csrf, token=TOKEN, expect="succeeded") -> Provider:
    """Connect a Hetzner project: the view saves the token and starts a provider_sync
    operation (ids only), run in-process here against the fake API."""
    resp = _post(client, "/servers/providers/hetzner/new", {"name": "hetzner", "token": token},
                 csrf, htmx=True)
    provider = db.session.execute(sa.select(Provider)).scalar_one()
    assert resp.status_code == 204
    assert resp.headers["HX-Redirect"] == f"/servers/providers/{provider.id}/servers/new"
    op = started_operation(OperationKind.PROVIDER_SYNC, "provider", provider.id)
    assert run_operation(op.id) == expect
    db.session.expire_all()
    return provider


def test_invalid_hetzner_token_is_a_clear_inline_error(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    provider = _connect_hetzner(client, csrf, token="bad-token-5f5f", expect="failed")
    html = client.get(f"/servers/providers/{provider.id}/servers/new",
                      headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in html                      # only the component is swapped
    assert "refused the API token" in html and "Read &amp; Write token" in html
    assert "Create and provision" not in html and "Try again" in html
    assert provider.config["token_ok"] is False
    assert "bad-token-5f5f" not in html     # a password field is never echoed back
    assert "bad-token-5f5f" not in client.get(f"/operations/").get_data(as_text=True)


def test_rate_limit_and_quota_reach_the_user(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    provider = _connect_hetzner(client, csrf)
    assert provider.type == ProviderType.HETZNER and provider.api_token == TOKEN

    hetzner.rate_limited = True
    resp = _post(client, f"/servers/providers/{provider.id}/sync", {}, csrf)
    assert resp.status_code == 302
    op = started_operation(OperationKind.PROVIDER_SYNC, "provider", provider.id)
    assert run_operation(op.id) == "failed"
    page = client.get(f"/servers/providers/{provider.id}/servers/new").get_data(as_text=True)
    assert "rate limit is reached" in page and "Wait a few minutes" in page
    hetzner.rate_limited = False

    # Hetzner refuses the server inside the operation (the request never calls the API):
    # its first step fails with the message, and the server's page shows it.
    hetzner.server_limit = 0
    form = {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "fsn1",
            "network": ""}
    resp = _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf, htmx=True)
    server = db.session.execute(sa.select(Server)).scalar_one()
    assert resp.headers["HX-Redirect"] == f"/servers/{server.id}"
    op = started_operation(OperationKind.SERVER_PROVISION, "server", server.id)
    assert run_operation(op.id) == "failed"
    db.session.expire_all()
    assert "resource limit is reached" in op.error and "raise the limit" in op.error
    assert op.steps[0].name == "Create the server at Hetzner"
    assert server.status == ServerStatus.FAILED and not hetzner.servers
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "resource limit is reached" in page


def test_create_hetzner_server_uploads_key_once_and_starts_provisioning(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    provider = _connect_hetzner(client, csrf)
    page = client.get(f"/servers/providers/{provider.id}/servers/new").get_data(as_text=True)
    for text in ("CX22", "Debian 12", "Falkenstein (fsn1)", "keystone-private"):
        assert text in page
    form = {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "nbg1",
            "network": "7001"}
    resp = _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf)
    server = db.session.execute(sa.select(Server)).scalar_one()
    assert resp.status_code == 302 and resp.location.endswith(f"/servers/{server.id}")
    # The request only recorded what to create and started the operation (ids only).
    assert server.status == ServerStatus.CREATING and server.provider_server_id is None
    assert not hetzner.servers and not hetzner.ssh_keys
    op = started_operation(OperationKind.SERVER_PROVISION, "server", server.id)
    assert op.lock_keys == [f"server:{server.id}"]
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "web-1" in page and "creating" in page and f"operation #{op.id}" in page
    _create_in_worker(op)
    db.session.expire_all()
    assert server.provider_server_id and server.public_ip.startswith("203.0.113.")
    assert server.private_ip == "10.0.1.2"
    created = hetzner.servers[int(server.provider_server_id)]
    assert created["labels"]["managed-by"] == "keystone"
    key = hetzner.ssh_keys[int(created["ssh_keys"][0])]
    assert key["public_key"] == _org().management_key_public
    # A second server reuses the uploaded key.
    form["name"] = "web-2"
    _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf)
    second = db.session.execute(sa.select(Server).where(Server.name == "web-2")).scalar_one()
    _create_in_worker(started_operation(OperationKind.SERVER_PROVISION, "server", second.id))
    assert len(hetzner.ssh_keys) == 1 and len(hetzner.servers) == 2
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "web-1" in page and server.public_ip in page


def _create_in_worker(op):
    """Run the provisioning operation in-process up to its first SSH command: the Hetzner
    steps talk to the fake API; the recorded SSH connection answers every command with
    exit 1, so the operation stops at "Connect over SSH" (no server is provisioned)."""
    import re as _re

    from tests.opsupport import fake_servers
    with fake_servers() as fake:
        fake.script(_re.compile("."), exit_code=1)
        assert run_operation(op.id) == "failed"
    db.session.expire_all()
    steps = [(s.name, s.status.value) for s in op.steps]
    assert [name for name, _ in steps] == ["Create the server at Hetzner",
                                           "Wait for the server at Hetzner",
                                           "Connect over SSH"], steps
    # The fake reports the new server running at once: nothing to wait for (skipped).
    assert [status for _, status in steps] == ["succeeded", "skipped", "failed"], steps


def test_deleting_a_hetzner_server_deletes_it_at_hetzner(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    provider = _connect_hetzner(client, csrf)
    _post(client, f"/servers/providers/{provider.id}/servers/new",
          {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "fsn1",
           "network": ""}, csrf)
    server = db.session.execute(sa.select(Server)).scalar_one()
    _create_in_worker(started_operation(OperationKind.SERVER_PROVISION, "server", server.id))
    assert len(hetzner.servers) == 1
    resp = _post(client, f"/servers/{server.id}/delete", {}, csrf)
    op = started_operation(OperationKind.SERVER_DELETE, "server", server.id)
    assert resp.status_code == 302 and resp.location.endswith(f"/operations/{op.id}")
    db.session.refresh(server)
    assert server.status == ServerStatus.DELETING and len(hetzner.servers) == 1
    assert run_operation(op.id) == "succeeded"
    assert hetzner.servers == {}
    db.session.expire_all()
    assert db.session.execute(sa.select(Server)).first() is None


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_custom_server_form_says_which_input_is_wrong(client, auth):
    auth.signup()
    csrf = auth.csrf()
    base = {"name": "box", "host": "127.0.0.1", "port": "22", "user": "root",
            "private_key": "not a key"}
    html = _post(client, "/servers/custom/new", base, csrf, htmx=True).get_data(as_text=True)
    assert "This private key cannot be read" in html and "<html" not in html
    from app.remote import generate_ed25519
    key = generate_ed25519()[0]
    html = _post(client, "/servers/custom/new", {**base, "private_key": key, "host": "bad host;id",
                                                 "name": "Bad Name"}, csrf).get_data(as_text=True)
    assert "Enter an IP address or a host name" in html
    assert "lower-case letters" in html
    html = _post(client, "/servers/custom/new", {**base, "private_key": key, "port": "70000"},
                 csrf).get_data(as_text=True)
    assert re.search(r"between 1 and 65535", html)
    assert db.session.execute(sa.select(Server)).first() is None
    assert "BEGIN OPENSSH" not in html.split("<textarea")[0]


def test_an_unreachable_custom_server_is_reported_by_the_scan_operation(client, auth):
    """The form starts a host_key_scan (no SSH in the request); its failure reaches the page."""
    from app.remote import generate_ed25519
    auth.signup()
    csrf = auth.csrf()
    port = _closed_port()
    resp = _post(client, "/servers/custom/new", {
        "name": "box", "host": "127.0.0.1", "port": str(port), "user": "root",
        "private_key": generate_ed25519()[0]}, csrf, htmx=True)
    server = db.session.execute(sa.select(Server)).scalar_one()
    assert resp.headers["HX-Redirect"] == f"/servers/{server.id}/host-key"
    op = started_operation(OperationKind.HOST_KEY_SCAN, "server", server.id)
    page = client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)
    assert "Reading the host key" in page and f"/operations/{op.id}" in page
    assert f'hx-get="/servers/{server.id}/host-key"' in page          # polls while it runs
    assert run_operation(op.id) == "failed"
    page = client.get(f"/servers/{server.id}/host-key", headers={"HX-Request": "true"}
                      ).get_data(as_text=True)
    assert "<html" not in page and "hx-trigger" not in page
    assert f"could not read an SSH host key from 127.0.0.1:{port}" in page
    assert "Read the host key the server presents" in page and "trust it" not in page
    db.session.refresh(server)
    assert server.host_key_fingerprint is None and server.status == ServerStatus.NEW


def test_host_key_confirmation_and_recorded_re_pin(client, auth, monkeypatch):
    """The page flow around the scan operation (the real probe runs in the integration tier)."""
    from app.models import AuditEvent
    from app.providers import custom
    from app.providers import handlers as scan_handlers
    presented = {"fp": "SHA256:" + "a" * 43}
    monkeypatch.setattr(scan_handlers, "probe_host_key",
                        lambda host, port, timeout=10: custom.ProbeResult(presented["fp"]))
    auth.signup()
    csrf = auth.csrf()
    org = _org()
    server = Server(organisation_id=org.id, name="box", public_ip="192.0.2.10", ssh_port=22,
                    bootstrap_user="root", bootstrap_private_key="k")
    db.session.add(server)
    db.session.commit()

    def scan():
        resp = _post(client, f"/servers/{server.id}/host-key/scan", {}, csrf)
        assert resp.status_code == 302 and resp.location.endswith(f"/servers/{server.id}/host-key")
        assert run_operation(started_operation(OperationKind.HOST_KEY_SCAN, "server",
                                               server.id).id) == "succeeded"
        db.session.expire_all()
        return client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)

    page = client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)
    assert "Read the host key the server presents" in page and "trust it" not in page
    page = scan()
    assert presented["fp"] in page and "trust it and provision" in page
    # The server presents another key between showing and confirming: refused.
    resp = _post(client, f"/servers/{server.id}/host-key", {"fingerprint": "SHA256:" + "b" * 43},
                 csrf)
    assert "presents a different key" in resp.get_data(as_text=True)
    db.session.refresh(server)
    assert server.host_key_fingerprint is None
    resp = _post(client, f"/servers/{server.id}/host-key", {"fingerprint": presented["fp"]}, csrf)
    assert resp.status_code == 302
    db.session.refresh(server)
    assert server.host_key_fingerprint == presented["fp"]
    provisions = sa.select(Operation).where(Operation.kind == OperationKind.SERVER_PROVISION)
    op = db.session.execute(provisions).scalar_one()       # provisioning started
    assert op.target_id == server.id
    # Re-pin: shows both, records who and what.
    server.provisioned_at = server.created_at
    db.session.commit()
    old = presented["fp"]
    presented["fp"] = "SHA256:" + "c" * 43
    page = scan()
    assert old in page and presented["fp"] in page and "Trust the new key" in page
    _post(client, f"/servers/{server.id}/host-key", {"fingerprint": presented["fp"]}, csrf)
    db.session.refresh(server)
    assert server.host_key_fingerprint == presented["fp"]
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "server.host_key_repinned")).scalar_one()
    assert event.detail == {"previous": old, "new": presented["fp"]}
    assert len(db.session.execute(provisions).scalars().all()) == 1


def test_one_action_provisions_every_server_not_provisioned_yet(app, client, auth):
    auth.signup()
    org = _org()
    fp = "SHA256:" + "A" * 43
    for name, status in (("sandbox-1", ServerStatus.NEW), ("sandbox-2", ServerStatus.NEW),
                         ("old", ServerStatus.ACTIVE)):
        db.session.add(Server(organisation=org, name=name, public_ip="127.0.0.1", ssh_port=2201,
                              host_key_fingerprint=fp, status=status))
    db.session.commit()
    from flask import current_app, render_template
    servers = db.session.execute(sa.select(Server).order_by(Server.name)).scalars().all()
    with current_app.test_request_context():
        step = render_template("onboarding/steps/provision.html", servers=servers)
    assert "Provision all 2 servers (sandbox-1, sandbox-2)" in step and step.count("<button") == 1
    resp = _post(client, "/servers/provision-all", {}, auth.csrf())
    assert resp.status_code == 302
    ops = db.session.execute(sa.select(Operation).order_by(Operation.id)).scalars().all()
    names = {db.session.get(Server, op.target_id).name for op in ops}
    assert names == {"sandbox-1", "sandbox-2"}
    assert all(op.kind == OperationKind.SERVER_PROVISION for op in ops)
    page = client.get(resp.location).get_data(as_text=True)
    assert f"operation #{ops[0].id}" in page and f"operation #{ops[1].id}" in page
    # Nothing left to do: a second press starts nothing.
    _post(client, "/servers/provision-all", {}, auth.csrf())
    assert db.session.execute(sa.select(sa.func.count(Operation.id))).scalar() == 2


def test_the_public_fallback_is_an_explicit_opt_in_with_a_warning(client, auth):
    """SPEC 14: a server without a private network is refused as a cross-server peer until
    its owner allows the public fallback on its page; the page warns while it is on."""
    auth.signup()
    org = _org()
    server = Server(organisation=org, name="lonely", public_ip="198.51.100.7")
    db.session.add(server)
    db.session.commit()
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "data-public-fallback-off" in page and "data-public-fallback " not in page
    assert "Allow the public-network fallback" in page
    csrf = auth.csrf()
    resp = _post(client, f"/servers/{server.id}/networking", {"public_fallback": "y"}, csrf)
    assert resp.status_code == 302
    db.session.refresh(server)
    assert server.public_fallback is True
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "data-public-fallback " in page and "public IPs only" in page
    from app.endpoints import cross_server_address
    from app.models.enums import EndpointScope
    assert cross_server_address(server) == (EndpointScope.PUBLIC, "198.51.100.7")
    from app.models import AuditEvent
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "server.public_fallback")).scalar_one()
    assert event.detail == {"name": "lonely", "public_fallback": True}
    # Unticked: off again, and the refusal is back with its reason.
    _post(client, f"/servers/{server.id}/networking", {}, csrf)
    db.session.refresh(server)
    assert server.public_fallback is False
    from app.endpoints import Unreachable
    with pytest.raises(Unreachable, match="has no private IP"):
        cross_server_address(server)
    # CSRF is required.
    assert client.post(f"/servers/{server.id}/networking",
                       data={"public_fallback": "y"}).status_code == 400
