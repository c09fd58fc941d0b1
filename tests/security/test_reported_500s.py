"""The inputs that gave a 500 (issue 15, defect 5): each now gets a clear answer and
nothing is stored."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import Application, Server
from tests.web.test_servers import _connect_hetzner, _post, hetzner  # noqa: F401  (fixture)

HUGE = "9" * 22


def test_ids_beyond_64_bits_in_paths_and_queries(app, client, auth):
    auth.signup()
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not any(
                isinstance(rule._converters.get(a), type(app.url_map.converters["int"]))
                for a in rule.arguments):
            continue
        values = {a: HUGE if a.endswith("_id") else "x" for a in rule.arguments}
        try:
            url = rule.build(values, append_unknown=False)[1]
        except Exception:
            import re
            url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule.rule)
        assert client.get(url).status_code == 404, url
    for url in (f"/servers/{HUGE}", f"/servers/{2**63}", f"/operations/{HUGE}"):
        assert client.get(url).status_code == 404, url
    for query in (f"page={HUGE}", "page=-1", "page=abc", "page=%C2%B2", f"target=server:{HUGE}",
                  "target=server:%C2%B2", f"target={HUGE}", "target=:", f"page={2**63 - 1}"):
        resp = client.get(f"/operations?{query}")
        assert resp.status_code in (200, 404), (query, resp.status_code)


def test_a_non_ascii_private_key_is_a_message(client, auth):
    auth.signup()
    csrf = auth.csrf()
    for key in ("-----BEGIN OPENSSH PRIVATE KEY-----\nabcé\n-----END OPENSSH PRIVATE KEY-----",
                "ключ", "\u00a0" * 10, "-----BEGIN RSA PRIVATE KEY-----\n\u2603\n"):
        resp = _post(client, "/servers/custom/new", {"name": "box", "host": "127.0.0.1",
                                                     "port": "22", "user": "root",
                                                     "private_key": key}, csrf, htmx=True)
        assert resp.status_code in (200, 422)
        html = resp.get_data(as_text=True)
        assert "This private key cannot be read" in html or "This field is required" in html
    assert db.session.execute(sa.select(Server)).first() is None


def test_a_whitespace_only_hetzner_network_is_refused(client, auth, hetzner):  # noqa: F811
    auth.signup()
    csrf = auth.csrf()
    provider = _connect_hetzner(client, csrf)   # the lists come from the provider_sync operation
    for network in (" ", "\t", "\n", " 7001", "7001 "):
        resp = _post(client, f"/servers/providers/{provider.id}/servers/new",
                     {"name": "web-1", "server_type": "cx22", "image": "debian-12",
                      "location": "nbg1", "network": network}, csrf)
        assert resp.status_code in (200, 422), (network, resp.status_code)
        assert "Not a valid choice" in resp.get_data(as_text=True)
    assert db.session.execute(sa.select(Server)).first() is None
    assert hetzner.servers == {}



def test_an_application_name_ending_in_a_newline_is_refused(client, auth):
    auth.signup()
    csrf = auth.csrf()
    for name in ("shop\n", "shop\r\n", "shop\x00", "\nshop"):
        resp = client.post("/applications/new", data={
            "csrf_token": csrf, "name": name, "repository_url": "git@github.com:acme/shop.git",
            "repository_type": "auto", "default_branch": "main"})
        assert resp.status_code in (200, 400, 422), (name, resp.status_code)
        assert "lower-case letters" in resp.get_data(as_text=True)
    assert db.session.execute(sa.select(Application)).first() is None
