"""CSRF: every state-changing route is refused without a valid token, whoever is
signed in, with the rules enumerated from app.url_map at run time."""
from __future__ import annotations

import re

from tests.conftest import sign_in
from tests.factories import build_org
from tests.security.test_isolation import _database_digest

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Routes a browser never posts to, CSRF-exempt by design, each with its own credential and
# its own test: the deploy webhook's HMAC signature (tests/web/test_deploy_hooks.py).
SIGNED_NOT_SESSION = {"hooks.receive"}


def _rules(app):
    for rule in app.url_map.iter_rules():
        methods = rule.methods & STATE_CHANGING
        if methods and not rule.endpoint.startswith("static") \
                and rule.endpoint not in SIGNED_NOT_SESSION:
            yield rule, methods


def test_the_signed_routes_refuse_an_unsigned_request_even_with_a_session(app, client):
    owner = build_org()
    sign_in(client, owner.user)
    from app.hooks import service as hooks
    hook, _ = hooks.enable(owner.environment)
    before = _database_digest()
    resp = client.post(f"/hooks/deploy/{hook.token}", data={"name": "x"})
    assert resp.status_code == 401
    assert _database_digest() == before


def test_every_state_changing_route_needs_the_token(app, client):
    owner = build_org()  # the signed-in user's own ids: only the token is missing
    ids = owner.ids()
    sign_in(client, owner.user)
    good = re.search(r'name="csrf-token" content="([^"]+)"',
                     client.get("/").get_data(as_text=True)).group(1)
    before = _database_digest()
    checked = 0
    for rule, methods in _rules(app):
        values = {a: ids.get(a, "x") for a in rule.arguments}
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        for method in sorted(methods):
            for label, kwargs in (
                    ("no token", {"data": {"name": "x"}}),
                    ("wrong token", {"data": {"csrf_token": good[:-4] + "AAAA"},
                                     "headers": {"X-CSRFToken": "forged"}}),
                    ("htmx without header", {"data": {}, "headers": {"HX-Request": "true"}}),
                    ("token in the query", {"query_string": {"csrf_token": good}})):
                resp = client.open(url, method=method, **kwargs)
                assert resp.status_code == 400, f"{method} {url} ({label}): {resp.status_code}"
                checked += 1
    assert _database_digest() == before, "a request without a valid token changed something"
    assert checked >= 4 * 20


def test_signed_out_forms_need_the_token_too(app, client):
    for url in ("/login", "/signup"):
        resp = client.post(url, data={"email": "a@example.com", "password": "x" * 12})
        assert resp.status_code == 400
