"""Sessions: where a login may send the browser, logout replay, idle/absolute lifetime,
throttling."""
from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import csrf_token_from

HOSTILE_NEXT = [
    "/%09/evil.example", "//evil.example", "/\\evil.example", "/%0a/x", "/%0d%0aSet-Cookie:x=1",
    "%2F%2Fevil.example", "/%2F/evil.example", "https://evil.example/", "http:evil.example",
    "javascript:alert(1)", "/%5Cevil.example", "\\\\evil.example", "/%20/evil.example",
    "/%00/x", "/%e2%80%a8/x", "/%7f/x", "///evil.example", "/\t/x",
    "  //evil.example", "/" + "a" * 5000,
]


def _login_with_next(client, auth, target: str):
    page = client.get("/login").get_data(as_text=True)
    return client.post(f"/login?next={target}", data={
        "csrf_token": csrf_token_from(page), "email": "owner@example.com",
        "password": "correct horse battery"})


def test_login_never_redirects_off_site(client, auth):
    auth.signup()
    for target in HOSTILE_NEXT:
        auth.logout()
        resp = _login_with_next(client, auth, target)
        assert resp.status_code == 302, (target, resp.status_code)
        location = resp.headers["Location"]
        parts = urlsplit(location)
        assert not parts.netloc and not parts.scheme, (target, location)
        assert location.startswith("/") and not location.startswith("//"), (target, location)
        assert "\\" not in location, (target, location)


def test_login_follows_a_same_site_next(client, auth):
    auth.signup()
    for target in ["/servers/", "/operations?kind=deploy", "/servers/new#x"]:
        auth.logout()
        resp = _login_with_next(client, auth, target.replace("?", "%3F").replace("#", "%23"))
        assert resp.status_code == 302
        assert resp.headers["Location"] == target


def _cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_a_cookie_saved_before_logout_is_dead_after_it(app, client, auth):
    auth.signup()
    token = auth.csrf()
    saved = _cookie(client)
    auth.logout()
    replay = app.test_client()
    replay.set_cookie("session", saved)
    resp = replay.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].split("?")[0] in ("/login", "/signup")
    before = client.application.test_client()  # a POST with the old cookie and its token
    before.set_cookie("session", saved)
    resp = before.post("/servers/custom/new", data={"csrf_token": token, "name": "x"})
    assert resp.status_code in (302, 400, 401)
    assert resp.status_code != 200
    from app.models import Server
    from app.extensions import db
    assert db.session.query(Server).count() == 0


def test_logout_ends_every_session_of_the_user(app, client, auth):
    auth.signup()
    other = app.test_client()
    with app.app_context():  # its own g: the CSRF token of the page it fetched
        assert type(auth)(other).login().status_code == 302
        assert other.get("/").status_code == 200
    auth.logout()
    assert other.get("/").status_code == 302


def test_a_password_change_ends_sessions(app, client, auth, db):
    from app.models import User
    auth.signup()
    assert client.get("/").status_code == 200
    user = db.session.query(User).one()
    user.set_password("another long password")
    db.session.commit()
    assert client.get("/").status_code == 302


def test_a_session_without_generation_is_refused(app, client, auth, db):
    from app.models import User
    auth.signup()
    user = db.session.query(User).one()
    with client.session_transaction() as sess:
        sess["_user_id"] = str(user.id)  # the pre-generation form of the id
    assert client.get("/").status_code == 302


def _age_session(client, key: str, seconds: int) -> None:
    with client.session_transaction() as sess:
        sess[key] = sess[key] - seconds


def test_idle_sessions_end(app, client, auth):
    from app.security import LAST_SEEN_AT
    auth.signup()
    assert client.get("/").status_code == 200
    _age_session(client, LAST_SEEN_AT, app.config["SESSION_IDLE_MINUTES"] * 60 - 30)
    assert client.get("/").status_code == 200  # still inside the idle window
    _age_session(client, LAST_SEEN_AT, app.config["SESSION_IDLE_MINUTES"] * 60 + 30)
    assert client.get("/").status_code == 302


def test_sessions_end_after_the_absolute_lifetime_even_when_active(app, client, auth):
    from app.security import SIGNED_IN_AT
    auth.signup()
    _age_session(client, SIGNED_IN_AT, app.config["SESSION_MAX_HOURS"] * 3600 + 1)
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].split("?")[0] in ("/login", "/signup")


def _post_login(client, email: str, password: str):
    page = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"csrf_token": csrf_token_from(page), "email": email,
                                       "password": password})


def test_failed_sign_ins_to_one_account_are_throttled(app, client, auth):
    from app.security import LOGIN_PER_ACCOUNT
    per_minute = int(LOGIN_PER_ACCOUNT.split()[0])
    auth.signup()
    auth.logout()
    for _ in range(per_minute):
        assert _post_login(client, "owner@example.com", "wrong password!").status_code == 422
    resp = _post_login(client, "Owner@Example.com ", "correct horse battery")
    assert resp.status_code == 429
    assert "Too many attempts" in resp.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not signed in


def test_sign_ins_from_one_address_are_throttled_across_accounts(app, client):
    from app.security import LOGIN_PER_ADDRESS
    per_minute = int(LOGIN_PER_ADDRESS.split()[0])
    codes = [_post_login(client, f"nobody{n}@example.com", "some password").status_code
             for n in range(per_minute + 1)]
    assert codes[:per_minute] == [422] * per_minute and codes[-1] == 429


def test_successful_sign_ins_do_not_use_up_the_limit(app, client, auth):
    from app.security import LOGIN_PER_ACCOUNT
    auth.signup()
    for _ in range(int(LOGIN_PER_ACCOUNT.split()[0]) + 2):
        auth.logout()
        assert auth.login().status_code == 302


def test_signups_from_one_address_are_throttled(app, client, auth, db):
    from app.models import User
    from app.security import SIGNUP_PER_ACCOUNT
    app.config["OPEN_SIGNUP"] = True
    codes = [auth.signup(email="same@example.com", password="short").status_code
             for _ in range(int(SIGNUP_PER_ACCOUNT.split()[0]) + 1)]
    assert codes[-1] == 429 and set(codes[:-1]) == {422}
    assert db.session.query(User).count() == 0


def test_an_unknown_email_costs_a_password_hash_too(app, client, auth, monkeypatch):
    """No timing oracle: the hash runs whether or not the account exists."""
    import app.models.organisation as users
    import app.security as security
    calls = []
    real = security.check_password_hash

    def counting(hash_, password):
        calls.append(hash_.split("$")[0])
        return real(hash_, password)
    monkeypatch.setattr(security, "check_password_hash", counting)
    monkeypatch.setattr(users, "check_password_hash", counting)
    auth.signup()
    auth.logout()
    _post_login(client, "owner@example.com", "wrong password!")
    _post_login(client, "nobody@example.com", "wrong password!")
    assert len(calls) == 2 and calls[0] == calls[1]  # the same scrypt method both times
