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
from app.providers.hetzner_fake import FakeHetzner

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


def test_invalid_hetzner_token_is_a_clear_inline_error(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    resp = _post(client, "/servers/providers/hetzner/new", {"name": "hetzner", "token": "bad-token-5f5f"},
                 csrf, htmx=True)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "<html" not in html                      # only the form component is swapped
    assert "refused the API token" in html and "Read &amp; Write token" in html
    assert db.session.execute(sa.select(Provider)).first() is None
    assert "bad-token-5f5f" not in html     # a password field is never echoed back


def test_rate_limit_and_quota_reach_the_user(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    resp = _post(client, "/servers/providers/hetzner/new", {"name": "hetzner", "token": TOKEN}, csrf)
    provider = db.session.execute(sa.select(Provider)).scalar_one()
    assert resp.status_code == 302 and f"/servers/providers/{provider.id}/servers/new" in resp.location
    assert provider.type == ProviderType.HETZNER and provider.api_token == TOKEN

    hetzner.rate_limited = True
    page = client.get(f"/servers/providers/{provider.id}/servers/new").get_data(as_text=True)
    assert "rate limit is reached" in page and "Wait a few minutes" in page
    hetzner.rate_limited = False

    hetzner.server_limit = 0
    form = {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "fsn1",
            "network": ""}
    html = _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf,
                 htmx=True).get_data(as_text=True)
    assert "resource limit is reached" in html and "raise the limit" in html
    assert db.session.execute(sa.select(Server)).first() is None


def test_create_hetzner_server_uploads_key_once_and_starts_provisioning(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    _post(client, "/servers/providers/hetzner/new", {"name": "hetzner", "token": TOKEN}, csrf)
    provider = db.session.execute(sa.select(Provider)).scalar_one()
    page = client.get(f"/servers/providers/{provider.id}/servers/new").get_data(as_text=True)
    for text in ("CX22", "Debian 12", "Falkenstein (fsn1)", "keystone-private"):
        assert text in page
    form = {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "nbg1",
            "network": "7001"}
    resp = _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf)
    server = db.session.execute(sa.select(Server)).scalar_one()
    assert resp.status_code == 302 and resp.location.endswith(f"/servers/{server.id}")
    assert server.status == ServerStatus.CREATING
    assert server.provider_server_id and server.public_ip.startswith("203.0.113.")
    assert server.private_ip == "10.0.1.2"
    created = hetzner.servers[int(server.provider_server_id)]
    assert created["labels"]["managed-by"] == "keystone"
    key = hetzner.ssh_keys[int(created["ssh_keys"][0])]
    assert key["public_key"] == _org().management_key_public
    op = db.session.execute(sa.select(Operation)).scalar_one()
    assert op.kind == OperationKind.SERVER_PROVISION and op.target_id == server.id
    assert op.lock_keys == [f"server:{server.id}"]
    # A second server reuses the uploaded key.
    form["name"] = "web-2"
    _post(client, f"/servers/providers/{provider.id}/servers/new", form, csrf)
    assert len(hetzner.ssh_keys) == 1 and len(hetzner.servers) == 2
    page = client.get(f"/servers/{server.id}").get_data(as_text=True)
    assert "web-1" in page and server.public_ip in page and "creating" in page


def test_deleting_a_hetzner_server_deletes_it_at_hetzner(client, auth, hetzner):
    auth.signup()
    csrf = auth.csrf()
    _post(client, "/servers/providers/hetzner/new", {"name": "hetzner", "token": TOKEN}, csrf)
    provider = db.session.execute(sa.select(Provider)).scalar_one()
    _post(client, f"/servers/providers/{provider.id}/servers/new",
          {"name": "web-1", "server_type": "cx22", "image": "debian-12", "location": "fsn1",
           "network": ""}, csrf)
    server = db.session.execute(sa.select(Server)).scalar_one()
    assert len(hetzner.servers) == 1
    resp = _post(client, f"/servers/{server.id}/delete", {}, csrf)
    assert resp.status_code == 302
    assert hetzner.servers == {}
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
    port = _closed_port()
    html = _post(client, "/servers/custom/new", {**base, "private_key": key, "port": str(port)},
                 csrf, htmx=True).get_data(as_text=True)
    assert f"could not read an SSH host key from 127.0.0.1:{port}" in html
    html = _post(client, "/servers/custom/new", {**base, "private_key": key, "host": "bad host;id",
                                                 "name": "Bad Name"}, csrf).get_data(as_text=True)
    assert "Enter an IP address or a host name" in html
    assert "lower-case letters" in html
    html = _post(client, "/servers/custom/new", {**base, "private_key": key, "port": "70000"},
                 csrf).get_data(as_text=True)
    assert re.search(r"between 1 and 65535", html)
    assert db.session.execute(sa.select(Server)).first() is None
    assert "BEGIN OPENSSH" not in html.split("<textarea")[0]


def test_host_key_confirmation_and_recorded_re_pin(client, auth, monkeypatch):
    """The page flow around the probe (the real probe runs in the integration tier)."""
    from app.models import AuditEvent
    from app.providers import custom
    presented = {"fp": "SHA256:" + "a" * 43}
    monkeypatch.setattr(custom, "probe_host_key",
                        lambda host, port, timeout=10: custom.ProbeResult(presented["fp"]))
    auth.signup()
    csrf = auth.csrf()
    org = _org()
    server = Server(organisation_id=org.id, name="box", public_ip="192.0.2.10", ssh_port=22,
                    bootstrap_user="root", bootstrap_private_key="k")
    db.session.add(server)
    db.session.commit()
    page = client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)
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
    op = db.session.execute(sa.select(Operation)).scalar_one()       # provisioning started
    assert op.kind == OperationKind.SERVER_PROVISION
    # Re-pin: shows both, records who and what.
    server.provisioned_at = server.created_at
    db.session.commit()
    old = presented["fp"]
    presented["fp"] = "SHA256:" + "c" * 43
    page = client.get(f"/servers/{server.id}/host-key").get_data(as_text=True)
    assert old in page and presented["fp"] in page and "Trust the new key" in page
    _post(client, f"/servers/{server.id}/host-key", {"fingerprint": presented["fp"]}, csrf)
    db.session.refresh(server)
    assert server.host_key_fingerprint == presented["fp"]
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "server.host_key_repinned")).scalar_one()
    assert event.detail == {"previous": old, "new": presented["fp"]}
    assert db.session.execute(sa.select(sa.func.count()).select_from(Operation)).scalar() == 1


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
