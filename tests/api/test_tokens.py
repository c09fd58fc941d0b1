"""Personal access tokens: stored hashed, shown once, scoped, expiring, revocable, per
user and organisation; the settings page that makes them; CSRF and the rate limit."""
from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from app.api import tokens as tk
from app.extensions import db
from app.models import ApiToken, AuditEvent, Membership
from app.models.base import utcnow
from app.models.enums import MembershipRole
from tests.conftest import csrf_token_from, make_app, sign_in
from tests.factories import SECRET_SENTINELS, build_org


def _create_on_page(client, **fields):
    page = client.get("/settings/tokens/")
    assert page.status_code == 200
    data = {"csrf_token": csrf_token_from(page.get_data(as_text=True)), "name": "ci",
            "expires": "30", **fields}
    return client.post("/settings/tokens/", data=data)


def _token_in(html: str) -> str | None:
    match = re.search(r'value="(kst_[A-Za-z0-9_-]{43})"', html)
    return match.group(1) if match else None


def test_a_token_is_shown_once_and_stored_as_a_hash(app, client, org):
    sign_in(client, org.user)
    resp = _create_on_page(client, name="laptop", scope_read="y", scope_deploy="y")
    assert resp.status_code == 201
    assert resp.headers["Cache-Control"] == "no-store"
    token = _token_in(resp.get_data(as_text=True))
    assert token
    row = db.session.execute(sa.select(ApiToken).where(ApiToken.name == "laptop")).scalar_one()
    assert row.token_hash == tk.hash_token(token) and row.prefix == token[:12]
    assert row.scopes == ["read", "deploy"] and row.user_id == org.user.id
    assert row.expires_at - utcnow() > dt.timedelta(days=29)
    # Nowhere in the database in the clear, and never on the page again.
    for table in db.metadata.sorted_tables:
        for values in db.session.execute(sa.select(table)):
            assert token not in repr(tuple(values)), table.name
    again = client.get("/settings/tokens/").get_data(as_text=True)
    assert token not in again and row.prefix in again
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json["effective_scopes"] == ["read", "deploy"]
    assert me.json["organisation"]["id"] == org.org.id


def test_the_page_refuses_bad_tokens_with_messages(app, client, org):
    sign_in(client, org.user)
    count = db.session.execute(sa.select(sa.func.count(ApiToken.id))).scalar_one()
    for fields, message in (({"name": "x"}, "Choose at least one scope"),
                            ({"name": "", "scope_read": "y"}, "This field is required"),
                            ({"name": "bad\x00name", "scope_read": "y"}, "control characters"),
                            ({"name": "ok", "scope_read": "y", "expires": "12"},
                             "Not a valid choice")):
        resp = _create_on_page(client, **fields)
        assert resp.status_code == 422, fields
        assert message in resp.get_data(as_text=True), fields
    assert db.session.execute(sa.select(sa.func.count(ApiToken.id))).scalar_one() == count


def test_htmx_creation_and_revocation_swap_the_component(app, client, org):
    sign_in(client, org.user)
    page = client.get("/settings/tokens/").get_data(as_text=True)
    csrf = csrf_token_from(page)
    resp = client.post("/settings/tokens/", data={"csrf_token": csrf, "name": "ci-2",
                                                  "scope_read": "y", "expires": "never"},
                       headers={"HX-Request": "true"})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'id="tokens"' in html
    token = _token_in(html)
    row = db.session.execute(sa.select(ApiToken).where(ApiToken.name == "ci-2")).scalar_one()
    assert row.expires_at is None
    resp = client.post(f"/settings/tokens/{row.id}/revoke", data={"csrf_token": csrf},
                       headers={"HX-Request": "true"})
    assert resp.status_code == 200 and "revoked" in resp.get_data(as_text=True)
    db.session.refresh(row)
    assert row.revoked_at is not None
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401


def test_a_user_cannot_revoke_another_users_token(app, client, org):
    other = build_org(email="other@example.com", organisation="Other")
    sign_in(client, org.user)
    csrf = csrf_token_from(client.get("/settings/tokens/").get_data(as_text=True))
    resp = client.post(f"/settings/tokens/{other.api_token.id}/revoke", data={"csrf_token": csrf})
    assert resp.status_code == 404
    db.session.refresh(other.api_token)
    assert other.api_token.revoked_at is None


def test_unknown_expired_revoked_and_malformed_tokens_are_401(app, client, org):
    assert client.get("/api/v1/me").status_code == 401
    for header in ("Bearer", "Bearer nope", "Basic " + org.token, org.token,
                   "Bearer " + org.token[:-1] + ("A" if org.token[-1] != "A" else "B"),
                   "Bearer " + org.token + "x"):
        resp = client.get("/api/v1/applications", headers={"Authorization": header})
        assert resp.status_code == 401, header
        assert resp.json["error"]["code"] == "unauthorized"
    org.api_token.expires_at = utcnow() - dt.timedelta(seconds=1)
    db.session.commit()
    assert client.get("/api/v1/me", headers=org.bearer).status_code == 401
    org.api_token.expires_at = None
    db.session.commit()
    assert client.get("/api/v1/me", headers=org.bearer).status_code == 200
    tk.revoke(org.api_token)
    assert client.get("/api/v1/me", headers=org.bearer).status_code == 401


def test_a_token_stops_with_its_user(app, client, org):
    org.user.is_active_flag = False
    db.session.commit()
    assert client.get("/api/v1/me", headers=org.bearer).status_code == 401


def test_last_use_is_recorded(app, client, org):
    assert org.api_token.last_used_at is None
    assert client.get("/api/v1/me", headers=org.bearer).status_code == 200
    db.session.refresh(org.api_token)
    assert org.api_token.last_used_at is not None
    assert org.api_token.last_used_address == "127.0.0.1"
    page_user = org.user
    sign_in(client, page_user)
    assert "127.0.0.1" in client.get("/settings/tokens/").get_data(as_text=True)


def test_scopes_nest_and_are_enforced(app, client, org):
    read, read_token = tk.create_token(org.user, "read-only", ["read"], 7)
    deploy, deploy_token = tk.create_token(org.user, "deployer", ["deploy"], 7)
    env, var = org.environment.id, org.variable.id
    as_read = {"Authorization": f"Bearer {read_token}"}
    as_deploy = {"Authorization": f"Bearer {deploy_token}"}
    assert client.get(f"/api/v1/environments/{env}", headers=as_deploy).status_code == 200
    refused = client.post(f"/api/v1/environments/{env}/deploys", headers=as_read, json={})
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "insufficient_scope"
    assert client.post(f"/api/v1/environments/{env}/rollback", headers=as_read,
                       json={}).status_code == 403
    reveal = f"/api/v1/environments/{env}/variables/{var}/reveal"
    assert client.post(reveal, headers=as_deploy).status_code == 403
    assert client.post(reveal, headers=as_read).status_code == 403
    assert db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "variable.reveal")).first() is None


def test_secret_values_need_admin_and_an_explicit_recorded_reveal(app, client, org):
    env, var = org.environment.id, org.variable.id
    listed = client.get(f"/api/v1/environments/{env}/variables", headers=org.bearer)
    item = next(v for v in listed.json["items"] if v["id"] == var)
    assert item["secret"] is True and item["value"] is None
    assert SECRET_SENTINELS["env_value"] not in listed.get_data(as_text=True)
    revealed = client.post(f"/api/v1/environments/{env}/variables/{var}/reveal",
                           headers=org.bearer)
    assert revealed.status_code == 200
    assert revealed.json["value"] == SECRET_SENTINELS["env_value"] and revealed.json["revealed"]
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "variable.reveal")).scalar_one()
    assert (event.action, event.target_id, event.user_id) == ("variable.reveal", var, org.user.id)
    assert event.detail["via"] == "api" and event.detail["token_id"] == org.api_token.id
    assert SECRET_SENTINELS["env_value"] not in repr(event.detail)


def test_admin_scope_follows_the_users_role(app, client, org):
    membership = db.session.execute(sa.select(Membership).where(
        Membership.user_id == org.user.id)).scalar_one()
    membership.role = MembershipRole.DEPLOYER
    db.session.commit()
    # The admin token of a deployer reads and deploys, but reveals nothing.
    me = client.get("/api/v1/me", headers=org.bearer)
    assert me.json["effective_scopes"] == ["read", "deploy"]
    assert client.post(f"/api/v1/environments/{org.environment.id}/variables/"
                       f"{org.variable.id}/reveal", headers=org.bearer).status_code == 403
    try:
        tk.create_token(org.user, "x", ["admin"], 7)
    except tk.TokenError as exc:
        assert "admin" in str(exc)
    else:
        raise AssertionError("a deployer created an admin token")
    sign_in(client, org.user)
    assert "scope_admin" not in client.get("/settings/tokens/").get_data(as_text=True)


def test_a_token_reaches_only_its_organisation(app, client, org):
    other = build_org(email="other@example.com", organisation="Other")
    for url in (f"/api/v1/applications/{other.application.id}",
                f"/api/v1/environments/{other.environment.id}",
                f"/api/v1/operations/{other.operation.id}/log",
                f"/api/v1/servers/{other.server.id}", f"/api/v1/services/{other.web.id}"):
        resp = client.get(url, headers=org.bearer)
        assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found", url
    listed = client.get("/api/v1/applications", headers=org.bearer).json
    assert [a["id"] for a in listed["items"]] == [org.application.id]


def test_csrf_is_skipped_only_for_token_requests(app, client, org):
    """A signed-in browser's cookie is not a credential here: without a token a POST needs
    the CSRF token (and then still answers 401); with a token none is needed."""
    sign_in(client, org.user)
    url = f"/api/v1/environments/{org.environment.id}/deploys"
    resp = client.post(url, json={})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "csrf_failed"
    csrf = csrf_token_from(client.get("/").get_data(as_text=True))
    resp = client.post(url, json={}, headers={"X-CSRFToken": csrf})
    assert resp.status_code == 401
    resp = client.post(url, json={}, headers=org.bearer)
    assert resp.status_code == 202


def test_the_rate_limit_is_per_token(tmp_path, migrated_db_template, redis_url):
    app = make_app(tmp_path, migrated_db_template, redis_url, API_RATE_LIMIT="3 per minute")
    with app.app_context():
        first, second = build_org(), build_org(email="two@example.com", organisation="Two")
        client = app.test_client()
        for _ in range(3):
            assert client.get("/api/v1/me", headers=first.bearer).status_code == 200
        limited = client.get("/api/v1/applications", headers=first.bearer)
        assert limited.status_code == 429
        assert limited.json["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        # Another token from the same address has its own allowance.
        assert client.get("/api/v1/me", headers=second.bearer).status_code == 200
        db.session.remove()
        db.engine.dispose()
