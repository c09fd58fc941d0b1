"""Roles: every rule of ``app.url_map`` (pages, HTMX components, live streams and the
/api/v1 endpoints alike) x the four roles answers as the permission matrix says.

* The matrix itself is compared with the issue's (written out again here, by hand).
* Every endpoint must declare a permission (app.policy.requires / the API's ``route``): an
  app with an undeclared route is refused at start, and the walk below finds none.
* Sensitive endpoints are pinned to the permission they must declare, so moving "reveal" to
  ``read`` fails here even though the walk would still agree with itself.
* Walk: a denied request answers 403 (before any object is looked up, so a denied role
  learns nothing about ids either); an allowed one answers anything but 403. Viewers and
  deployers never receive a secret value in any answer.
"""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from app import policy
from app.api import tokens as tk
from app.extensions import db
from app.models import Membership, User
from app.models.enums import MembershipRole
from tests.conftest import csrf_token_from, sign_in
from tests.factories import SECRET_SENTINELS, build_org

ROLES = ("owner", "admin", "deployer", "viewer")
ALL = set(ROLES)
STAFF = {"owner", "admin"}
# The issue's matrix: owner everything (billing-like settings, deleting the organisation);
# admin servers, providers, registries, members, reveal secrets; deployer deploy, roll back,
# run commands, edit variables, no secrets; viewer read only, no secrets.
EXPECTED = {
    "read": ALL,
    "deploy": {"owner", "admin", "deployer"},
    "variables.edit": {"owner", "admin", "deployer"},
    "secrets.reveal": STAFF,
    "servers.manage": STAFF,
    "registries.manage": STAFF,
    "resources.manage": STAFF,
    "notifications.manage": STAFF,
    "members.manage": STAFF,
    "audit.read": STAFF,
    "security.manage": STAFF,
    "org.manage": {"owner"},
}

# Endpoints whose permission is part of the contract.
PINNED = {
    "environments.reveal_variable": "secrets.reveal",
    "environments.dotenv_export_revealed": "secrets.reveal",
    "backups.download": "secrets.reveal",
    "api.reveal_variable": "secrets.reveal",
    "environments.set_variable": "variables.edit",
    "environments.edit_variable": "variables.edit",
    "environments.dotenv_save": "variables.edit",
    "api.set_variable": "variables.edit",
    "deploys.deploy": "deploy",
    "deploys.rollback": "deploy",
    "environments.run_command": "deploy",
    "api.start_deploy": "deploy",
    "api.rollback": "deploy",
    "servers.delete": "servers.manage",
    "servers.new_custom": "servers.manage",
    "servers.new_hetzner": "servers.manage",
    "registries.new": "registries.manage",
    "members.invite": "members.manage",
    "members.change_role": "members.manage",
    "members.remove": "members.manage",
    "members.revoke": "members.manage",
    "members.accept": "public",
    "members.rename_organisation": "org.manage",
    "members.delete_organisation": "org.manage",
    "auth.login": "public",
    "auth.two_factor": "public",
    "audit_log.index": "audit.read",
    "audit_log.export": "audit.read",
    "two_factor.organisation_setting": "security.manage",
    "two_factor.index": "signed_in",
    "hooks.receive": "public",
}
# Run last: they end the session or the membership the walk depends on.
LAST = ("members.delete_organisation", "members.leave", "auth.logout")


def test_the_matrix_is_the_issue_s():
    assert {p: {r.value for r in roles} for p, roles in policy.MATRIX.items()} == EXPECTED


def test_every_endpoint_declares_a_permission(app):
    assert policy.undeclared(app) == []
    for endpoint, permission in PINNED.items():
        assert policy.permission_of(app, endpoint) == permission, endpoint


def test_a_route_without_a_policy_is_refused(app):
    app.add_url_rule("/no-policy-here", "no_policy_here", lambda: "open")
    assert "no_policy_here" in policy.undeclared(app)
    with pytest.raises(RuntimeError, match="no_policy_here"):
        policy.check_declared(app)


def _rules(app):
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    return sorted(rules, key=lambda r: (r.endpoint in LAST, LAST.index(r.endpoint)
                                        if r.endpoint in LAST else 0, r.rule))


def _url(rule, ids) -> str:
    values = {a: ids.get(a, "x") for a in rule.arguments}
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)


def _member(graph, role: str) -> User:
    if role == "owner":
        return graph.user
    from app.accounts import new_user
    user = new_user(email=f"{role}@example.com", password="correct horse battery")
    db.session.add(Membership(organisation_id=graph.org.id, user=user,
                              role=MembershipRole(role)))
    db.session.commit()
    return user


@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_as_the_matrix_says(app, client, role):
    graph = build_org()
    ids = graph.ids()
    user = _member(graph, role)
    _row, api_token = tk.create_token(user, "walk", list(tk.allowed_scopes(user)), None)
    bearer = {"Authorization": f"Bearer {api_token}"}
    sign_in(client, user)
    csrf = csrf_token_from(client.get("/").get_data(as_text=True))
    sees_no_secrets = role in ("deployer", "viewer")
    checked = denied = 0
    for rule in _rules(app):
        permission = policy.permission_of(app, rule.endpoint)
        assert permission is not None, f"{rule.endpoint} declares no permission"
        allowed = permission in (policy.PUBLIC, policy.SIGNED_IN) or role in EXPECTED[permission]
        url = _url(rule, ids)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            kwargs = {"headers": {"X-CSRFToken": csrf, "Accept": "text/html"}}
            if rule.endpoint.startswith("api."):
                kwargs["headers"].update(bearer)
            if method != "GET":
                kwargs["data"] = {"csrf_token": csrf}
            resp = client.open(url, method=method, buffered=False, **kwargs)
            try:
                where = f"{role}: {method} {url} ({rule.endpoint}, needs {permission})"
                if allowed:
                    assert resp.status_code != 403, f"{where} answered 403"
                else:
                    assert resp.status_code == 403, f"{where} answered {resp.status_code}"
                    denied += 1
                if sees_no_secrets and resp.mimetype != "text/event-stream":
                    body = resp.get_data(as_text=True)
                    leaked = [k for k, v in SECRET_SENTINELS.items() if v in body]
                    assert not leaked, f"{where} showed {leaked}"
            finally:
                resp.close()
            checked += 1
    assert checked > 100
    # (owner 0, admin 2, deployer 62, viewer 79 of 144 when written; the floor guards
    # against a walk that silently stops refusing)
    expected_denied = {"owner": 0, "admin": 2, "deployer": 55, "viewer": 70}[role]
    assert denied >= expected_denied, f"{role}: only {denied} requests refused"
    if role == "owner":
        assert denied == 0


def test_pages_offer_only_what_the_role_may_do(app):
    graph = build_org()
    env = graph.environment.id
    reveal = f"/variables/{graph.variable.id}/reveal"
    deploy, set_var = f"/environments/{env}/deploy\"", f"/environments/{env}/variables\""
    pages = {}
    for role in ROLES:
        client = app.test_client()
        sign_in(client, _member(graph, role))
        pages[role] = (client.get(f"/environments/{env}").get_data(as_text=True),
                       client.get("/settings/members/").get_data(as_text=True))
    viewer, viewer_members = pages["viewer"]
    assert reveal not in viewer and deploy not in viewer and set_var not in viewer
    assert "Send invitation" not in viewer_members and "viewer@example.com" in viewer_members
    deployer, _ = pages["deployer"]
    assert reveal not in deployer and deploy in deployer and set_var in deployer
    for role in ("owner", "admin"):
        page, members = pages[role]
        assert reveal in page and deploy in page and "Send invitation" in members


def test_tokens_follow_the_role(app):
    graph = build_org()
    assert tk.allowed_scopes(_member(graph, "viewer")) == ("read",)
    assert tk.allowed_scopes(_member(graph, "deployer")) == ("read", "deploy")
    assert tk.allowed_scopes(_member(graph, "admin")) == ("read", "deploy", "admin")
    rows = db.session.execute(sa.select(Membership.role).where(
        Membership.organisation_id == graph.org.id)).scalars().all()
    assert sorted(r.value for r in rows) == ["admin", "deployer", "owner", "viewer"]
