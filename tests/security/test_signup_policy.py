"""Sign-up: the first account owns the instance; then it is closed unless
KEYSTONE_OPEN_SIGNUP=1."""
from __future__ import annotations

import sqlalchemy as sa

from app.models import Organisation, User
from tests.conftest import csrf_token_from


def _count(db, model):
    return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def test_signup_closes_after_the_first_account(app, client, auth, db):
    app.config["OPEN_SIGNUP"] = False
    token = csrf_token_from(client.get("/signup").get_data(as_text=True))
    assert auth.signup().status_code == 302  # the first account: the owner
    auth.logout()
    assert client.get("/").headers["Location"].endswith("/login")
    assert "Create an organisation" not in client.get("/login").get_data(as_text=True)
    resp = client.get("/signup")
    assert resp.status_code == 403 and "Sign-up is closed" in resp.get_data(as_text=True)
    resp = client.post("/signup", data={
        "csrf_token": token, "organisation": "Intruder", "name": "x",
        "email": "intruder@example.com", "password": "correct horse battery",
        "confirm": "correct horse battery"})
    assert resp.status_code == 403
    assert _count(db, User) == 1 and _count(db, Organisation) == 1


def test_open_signup_lets_more_organisations_in(app, client, auth, db):
    app.config["OPEN_SIGNUP"] = True
    auth.signup()
    auth.logout()
    assert auth.signup(email="second@example.com", organisation="Second").status_code == 302
    assert _count(db, User) == 2


def test_the_setting_is_read_from_the_environment(monkeypatch, tmp_path):
    from app.config import Config
    monkeypatch.delenv("KEYSTONE_OPEN_SIGNUP", raising=False)
    assert Config(tmp_path).OPEN_SIGNUP is False
    monkeypatch.setenv("KEYSTONE_OPEN_SIGNUP", "1")
    assert Config(tmp_path).OPEN_SIGNUP is True
