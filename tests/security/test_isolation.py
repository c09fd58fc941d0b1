"""Cross-organisation isolation: every rule in app.url_map that takes an id answers 404
to a user of another organisation, for GET and POST alike, and changes nothing.

The rules are enumerated at run time, so a new route is covered the day it is added;
the live-log (SSE) streams are routes like any other and are covered too.
"""
from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa

from app.extensions import db
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org


def _object_rules(app):
    for rule in app.url_map.iter_rules():
        id_args = [a for a in rule.arguments if a.endswith("_id")]
        if id_args:
            yield rule, id_args


def _database_digest() -> str:
    """A digest of every row of every table: equal digests, nothing changed."""
    h = hashlib.sha256()
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(sa.select(table).order_by(*table.primary_key.columns)):
            h.update(repr(tuple(row)).encode())
    return h.hexdigest()


def _url(rule, values) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)


def test_every_object_url_of_another_organisation_is_404(app, client):
    victim = build_org()  # org A: its ids are the targets
    ids = victim.ids()
    intruder = build_org(email="intruder@example.com", organisation="Org B")
    sign_in(client, intruder.user)
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    client.get("/api/v1/me", headers=intruder.bearer)  # records the token's last use now
    before = _database_digest()
    checked, streams = 0, 0
    for rule, id_args in _object_rules(app):
        unknown = [a for a in id_args if a not in ids]
        assert not unknown, f"{rule.rule}: add {unknown} to OrgGraph.ids() so isolation is tested"
        values = {a: ids[a] for a in id_args}
        for other_arg in rule.arguments - set(id_args):
            values[other_arg] = "x"
        url = _url(rule, values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            # The intruder's own API token too: /api/v1 reads no cookie, only tokens.
            resp = client.open(url, method=method, headers={"X-CSRFToken": token,
                                                            **intruder.bearer},
                               data={"csrf_token": token})
            assert resp.status_code == 404, f"{method} {url} answered {resp.status_code}"
            assert resp.mimetype != "text/event-stream", f"{url} opened a stream"
            checked += 1
        streams += "stream" in rule.rule or "events" in rule.rule
    assert _database_digest() == before, "a refused request changed the database"
    # Every id-taking route was exercised: the count grows with the url map.
    assert checked >= sum(len(r.methods - {"HEAD", "OPTIONS"}) for r, _ in _object_rules(app))
    assert checked > 40 and streams >= 1


def test_the_owner_reaches_the_same_urls(app, client):
    """The 404s above are isolation, not broken URLs: the owner's GETs are not 404."""
    owner = build_org()
    ids = owner.ids()
    sign_in(client, owner.user)
    reached = 0
    for rule, id_args in _object_rules(app):
        if "GET" not in rule.methods or rule.arguments - set(id_args):
            continue
        url = _url(rule, {a: ids[a] for a in id_args})
        resp = client.get(url, headers={"Accept": "text/html", **owner.bearer}, buffered=False)
        try:
            if resp.status_code != 404:
                reached += 1
        finally:
            resp.close()
    assert reached >= 10


def test_scoped_loader_answers_404_across_organisations(app, auth):
    from flask_login import login_user
    from werkzeug.exceptions import NotFound

    from app.models import Environment, OperationStep, Server, ServiceSlice
    from app.scoping import get_for_org_or_404

    b = build_org()
    a = build_org(email="a@example.com", organisation="Org A")
    with app.test_request_context():
        login_user(a.user)
        assert get_for_org_or_404(Server, a.server.id) is a.server
        assert get_for_org_or_404(OperationStep, a.step.id) is a.step
        for model, obj in [(Server, b.server), (Environment, b.environment),
                           (ServiceSlice, b.slice), (OperationStep, b.step)]:
            try:
                get_for_org_or_404(model, obj.id)
            except NotFound:
                continue
            raise AssertionError(f"{model.__name__} of another organisation was returned")
        for bad in ("1 or 1=1", "9" * 30, "-1", "١", None, 2**64):
            try:
                get_for_org_or_404(Server, bad)
            except NotFound:
                continue
            raise AssertionError(bad)
