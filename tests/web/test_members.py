"""Teams on the real app: an invitation mailed through the organisation's email channel to
a real SMTP server (aiosmtpd), accepted from the link in the mail (sign-up even when open
sign-up is off), a role change that takes effect on the member's open session, removal that
ends it at the next request; revoked, used and expired links; the last owner; several
organisations and the switcher."""
from __future__ import annotations

import datetime as dt
import re
import socket

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import g

from app.extensions import db
from app.jobs import send_invitation
from app.members import hash_token
from app.models import AuditEvent, Invitation, Membership, User
from app.models.enums import MembershipRole
from app.notifications.channels import create_channel
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org


class Inbox:
    messages: list = []

    async def handle_DATA(self, server, session, envelope):
        Inbox.messages.append(envelope.content.decode())
        return "250 OK"


@pytest.fixture()
def smtp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Inbox.messages = []
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


@pytest.fixture()
def graph(app):
    app.config["OPEN_SIGNUP"] = False  # an invitation lets the invitee sign up all the same
    return build_org()


def _get(client, path):
    """A GET whose page carries this client's own CSRF token: the tests keep one application
    context across requests, and Flask-WTF caches the token of the first session on ``g``."""
    g.pop("csrf_token", None)
    return client.get(path)


def _csrf(client, path="/") -> str:
    return csrf_token_from(_get(client, path).get_data(as_text=True))


def _membership(email: str):
    return db.session.execute(sa.select(Membership).join(User).where(
        User.email == email)).scalar_one_or_none()


def _actions() -> list[str]:
    return db.session.execute(sa.select(AuditEvent.action).order_by(AuditEvent.id)).scalars().all()


def test_invite_accept_change_role_remove(app, graph, smtp_port):
    create_channel(graph.org.id, "mail", "email", [], host="127.0.0.1", port=smtp_port,
                   security="none", from_address="keystone@example.com",
                   to_addresses="ops@example.com")
    owner = app.test_client()
    sign_in(owner, graph.user)
    token = _csrf(owner, "/settings/members/")
    resp = owner.post("/settings/members/invite", data={
        "csrf_token": token, "email": "Dev@Example.com", "role": "deployer"})
    assert resp.status_code == 201, resp.text
    assert "Invitation sent to dev@example.com" in resp.text
    row = db.session.execute(sa.select(Invitation).where(
        Invitation.email == "dev@example.com")).scalar_one()
    assert row.mail_link is not None  # waits for the job, encrypted
    # The job (what the worker runs) sends it through the real SMTP server.
    assert send_invitation(row.id) == "sent"
    db.session.refresh(row)
    assert row.mail_link is None and row.mail_status == "sent"
    [mail] = Inbox.messages
    assert "To: dev@example.com" in mail and "as deployer" in mail
    link = re.search(r"http://localhost(/invitations/[A-Za-z0-9_-]{43})", mail).group(1)
    assert row.token_hash == hash_token(link.rsplit("/", 1)[1])  # only the hash is kept
    assert link.rsplit("/", 1)[1] not in repr(
        db.session.execute(sa.text("SELECT * FROM invitations")).all())

    # The invitee signs up from the link, although open sign-up is off.
    assert app.test_client().get("/signup").status_code == 403
    dev = app.test_client()
    page = _get(dev, link)
    assert page.status_code == 200 and "Create your account" in page.text
    resp = dev.post(link, data={"csrf_token": csrf_token_from(page.text), "name": "Dev",
                                "password": "another long password",
                                "confirm": "another long password"})
    assert resp.status_code == 302, resp.text
    assert _membership("dev@example.com").role == MembershipRole.DEPLOYER
    assert dev.get("/").status_code == 200
    # Single use: the same link is dead now.
    assert app.test_client().get(link).status_code == 404

    # The deployer may not reveal; the owner makes them admin, and the open session may.
    env, var = graph.environment.id, graph.variable.id
    dev_csrf = _csrf(dev)
    reveal = f"/environments/{env}/variables/{var}/reveal"
    assert dev.post(reveal, data={"csrf_token": dev_csrf}).status_code == 403
    membership = _membership("dev@example.com")
    resp = owner.post(f"/settings/members/{membership.id}/role",
                      data={"csrf_token": token, "role": "admin"})
    assert resp.status_code == 200 and "dev@example.com is now admin" in resp.text
    assert dev.post(reveal, data={"csrf_token": dev_csrf}).status_code == 200

    # Removal ends the open session's access at the next request.
    resp = owner.post(f"/settings/members/{membership.id}/remove", data={"csrf_token": token})
    assert resp.status_code == 200 and "dev@example.com was removed" in resp.text
    assert _membership("dev@example.com") is None
    assert dev.get(f"/environments/{env}").status_code == 403
    assert dev.post(reveal, data={"csrf_token": dev_csrf}).status_code == 403
    landing = dev.get("/")
    assert landing.status_code == 302 and landing.location.endswith("/organisations/new")
    # (sign-ins and API tokens are in the audit log too: app.audit)
    member_actions = [a for a in _actions() if a.split(".")[0] in ("invitation", "member",
                                                                    "variable")]
    assert member_actions == ["invitation.created", "member.added", "member.role_changed",
                              "variable.reveal", "member.removed"]


def test_an_existing_account_signs_in_then_joins(app, graph):
    other = build_org(email="ops@example.com", organisation="Other")
    owner = app.test_client()
    sign_in(owner, graph.user)
    resp = owner.post("/settings/members/invite", data={
        "csrf_token": _csrf(owner, "/settings/members/"), "email": "ops@example.com",
        "role": "viewer"})
    # No email channel: the inviter gets the link to pass on, once.
    link = re.search(r'value="http://localhost(/invitations/[^"]+)"', resp.text).group(1)
    ops = app.test_client()
    page = _get(ops, link)
    assert "Sign in to accept" in page.text
    sign_in(ops, other.user)
    page = _get(ops, link)
    assert ops.post(link, data={"csrf_token": csrf_token_from(page.text)}).status_code == 302
    # Now in two organisations, working in the invited one; the switcher goes back.
    assert _membership_count(other.user) == 2
    home = _get(ops, "/").text
    assert graph.org.name in home and "Switch to Other" in home
    resp = ops.post("/organisations/switch", data={"csrf_token": csrf_token_from(home),
                                                   "organisation_id": other.org.id})
    assert resp.status_code == 302
    assert ops.get(f"/environments/{other.environment.id}").status_code == 200
    assert ops.get(f"/environments/{graph.environment.id}").status_code == 404
    # A viewer in the first organisation: switching back, reads only.
    ops.post("/organisations/switch", data={"csrf_token": csrf_token_from(home),
                                            "organisation_id": graph.org.id})
    assert ops.get(f"/environments/{graph.environment.id}").status_code == 200
    assert ops.post(f"/environments/{graph.environment.id}/deploy",
                    data={"csrf_token": csrf_token_from(home)}).status_code == 403
    # Not a member: no switching there.
    stranger = build_org(email="x@example.com", organisation="Stranger")
    assert ops.post("/organisations/switch", data={"csrf_token": csrf_token_from(home),
                                                   "organisation_id": stranger.org.id}
                    ).status_code == 404


def _membership_count(user) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(Membership).where(
        Membership.user_id == user.id)).scalar_one()


def test_revoked_expired_and_wrong_account_links(app, graph):
    owner = app.test_client()
    sign_in(owner, graph.user)
    token = _csrf(owner, "/settings/members/")
    links = []
    for email in ("first@example.com", "second@example.com"):
        resp = owner.post("/settings/members/invite", data={
            "csrf_token": token, "email": email, "role": "viewer"})
        links.append(re.search(r'value="http://localhost(/invitations/[^"]+)"',
                               resp.text).group(1))
    a = db.session.execute(sa.select(Invitation).where(Invitation.email == "first@example.com")
                           ).scalar_one()
    assert owner.post(f"/settings/members/invitations/{a.id}/revoke",
                      data={"csrf_token": token}).status_code == 200
    assert app.test_client().get(links[0]).status_code == 404
    b = db.session.execute(sa.select(Invitation).where(Invitation.email == "second@example.com")
                           ).scalar_one()
    b.expires_at = dt.datetime(2000, 1, 1)
    db.session.commit()
    assert app.test_client().get(links[1]).status_code == 404
    # A link for someone else cannot be accepted by the signed-in owner.
    resp = owner.post("/settings/members/invite", data={
        "csrf_token": token, "email": "c@example.com", "role": "admin"})
    link = re.search(r'value="http://localhost(/invitations/[^"]+)"', resp.text).group(1)
    assert owner.get(link).status_code == 403
    assert owner.post(link, data={"csrf_token": token}).status_code == 403
    assert _membership("c@example.com") is None
    assert "invitation.revoked" in _actions()


def test_the_last_owner_cannot_leave_or_be_demoted_and_admins_cannot_touch_owners(app, graph):
    owner = app.test_client()
    sign_in(owner, graph.user)
    token = _csrf(owner, "/settings/members/")
    me = _membership(graph.user.email)
    resp = owner.post(f"/settings/members/{me.id}/role", data={"csrf_token": token,
                                                               "role": "admin"})
    assert resp.status_code == 422 and "last owner" in resp.text
    resp = owner.post("/settings/members/leave", data={"csrf_token": token})
    assert resp.status_code == 422 and "last owner" in resp.text
    assert _membership(graph.user.email).role == MembershipRole.OWNER
    # An admin cannot invite an owner, demote or remove one.
    from app.accounts import new_user
    admin_user = new_user(email="adm@example.com", password="correct horse battery")
    db.session.add(Membership(organisation_id=graph.org.id, user=admin_user,
                              role=MembershipRole.ADMIN))
    db.session.commit()
    admin = app.test_client()
    sign_in(admin, admin_user)
    t = _csrf(admin, "/settings/members/")
    assert admin.post("/settings/members/invite", data={
        "csrf_token": t, "email": "boss@example.com", "role": "owner"}).status_code == 422
    assert admin.post(f"/settings/members/{me.id}/role", data={
        "csrf_token": t, "role": "viewer"}).status_code == 422
    assert admin.post(f"/settings/members/{me.id}/remove",
                      data={"csrf_token": t}).status_code == 422
    # The owner makes a second owner; then the first may leave.
    adm = _membership("adm@example.com")
    assert owner.post(f"/settings/members/{adm.id}/role", data={
        "csrf_token": token, "role": "owner"}).status_code == 200
    assert owner.post("/settings/members/leave", data={"csrf_token": token}).status_code == 302
    assert _membership(graph.user.email) is None


def test_create_switch_rename_and_delete_an_organisation(app, graph):
    client = app.test_client()
    sign_in(client, graph.user)
    token = _csrf(client)
    resp = client.post("/organisations/new", data={"csrf_token": token, "name": "Side project"})
    assert resp.status_code == 302
    assert "Side project" in client.get("/").text
    assert client.get(f"/environments/{graph.environment.id}").status_code == 404
    resp = client.post("/settings/organisation", data={"csrf_token": token,
                                                       "name": "Side project 2"})
    assert resp.status_code == 302
    resp = client.post("/settings/organisation/delete", data={"csrf_token": token,
                                                              "confirm": "wrong"})
    assert resp.status_code == 422
    resp = client.post("/settings/organisation/delete", data={"csrf_token": token,
                                                              "confirm": "Side project 2"})
    assert resp.status_code == 302
    # Back in the first organisation, whose servers keep it from being deleted.
    assert client.get(f"/environments/{graph.environment.id}").status_code == 200
    resp = client.post("/settings/organisation/delete", data={"csrf_token": token,
                                                              "confirm": graph.org.name})
    assert resp.status_code == 422 and "server(s) first" in resp.text
