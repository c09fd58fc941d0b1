"""Response headers (CSP without inline script/style, framing, sniffing, referrer, HSTS),
templates without inline script or style, ProxyFix only when configured."""
from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import make_app

TEMPLATES = Path(__file__).resolve().parents[2] / "app" / "templates"


def _csp(resp) -> dict[str, str]:
    policy = resp.headers["Content-Security-Policy"]
    return {d.split()[0]: d.partition(" ")[2] for d in (x.strip() for x in policy.split(";")) if d}


def test_every_page_sends_the_security_headers(client, auth):
    for resp in (client.get("/login"), client.get("/static/js/app.js"), client.get("/nowhere")):
        csp = _csp(resp)
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'" and csp["default-src"] == "'self'"
        assert "unsafe" not in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in resp.headers
        assert "Server" not in resp.headers
    auth.signup()
    assert "Content-Security-Policy" in client.get("/").headers


def test_hsts_only_over_https(tmp_path, migrated_db_template, redis_url):
    app = make_app(tmp_path, migrated_db_template, redis_url, HTTPS=True)
    with app.app_context():
        resp = app.test_client().get("/login")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


def test_templates_carry_no_inline_script_style_or_handler():
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for match in re.finditer(r"<script\b[^>]*>", text):
            if "src=" not in match.group(0):
                offenders.append(f"{path.name}: inline <script>")
        if re.search(r"<style\b", text):
            offenders.append(f"{path.name}: <style>")
        if re.search(r"\sstyle\s*=", text):
            offenders.append(f"{path.name}: style attribute")
        for handler in re.findall(r"\s(on[a-z]+)\s*=", text):
            offenders.append(f"{path.name}: {handler} handler")
        if "javascript:" in text.lower():
            offenders.append(f"{path.name}: javascript: URL")
    assert offenders == []


def test_htmx_is_configured_for_the_csp(client):
    page = client.get("/login").get_data(as_text=True)
    assert '"includeIndicatorStyles": false' in page and '"allowEval": false' in page


def test_forwarded_headers_are_ignored_unless_proxies_are_trusted(tmp_path, migrated_db_template,
                                                                  redis_url):
    from flask import request
    seen = []
    for trusted, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        (tmp_path / str(trusted)).mkdir()
        app = make_app(tmp_path / str(trusted), migrated_db_template, redis_url,
                       TRUSTED_PROXIES=trusted)
        app.add_url_rule("/_addr", "addr", lambda: request.remote_addr + " " + request.scheme)
        with app.app_context():
            body = app.test_client().get("/_addr", headers={
                "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}).get_data(as_text=True)
        seen.append(body)
        assert body.split()[0] == expected
    assert seen[1].endswith("https") and seen[0].endswith("http")


def test_gunicorn_does_not_name_itself():
    import app.gunicorn_conf  # noqa: F401
    from gunicorn.http import wsgi
    assert "gunicorn" not in wsgi.SERVER
