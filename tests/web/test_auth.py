import sqlalchemy as sa

from app.models import Membership, MembershipRole, Organisation, User


def count(db, model):
    return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def test_signup_creates_organisation_and_owner_and_signs_in(client, auth, db):
    resp = auth.signup()
    assert resp.status_code == 302
    user = db.session.execute(sa.select(User)).scalar_one()
    assert user.email == "owner@example.com"
    assert user.password_hash != "correct horse battery"
    membership = db.session.execute(sa.select(Membership)).scalar_one()
    assert membership.role == MembershipRole.OWNER
    assert membership.organisation.name == "Acme"
    page = client.get("/").get_data(as_text=True)
    assert "Acme" in page and "No servers yet" in page


def test_signup_with_existing_email_is_refused_and_writes_nothing(client, auth, db):
    auth.signup()
    auth.logout()
    resp = auth.signup(organisation="Other")
    assert resp.status_code == 422
    assert "already exists" in resp.get_data(as_text=True)
    assert count(db, Organisation) == 1 and count(db, User) == 1


def test_short_password_is_refused_with_a_message(client, auth, db):
    resp = auth.signup(password="short")
    assert resp.status_code == 422
    assert "at least 10 characters" in resp.get_data(as_text=True)
    assert count(db, User) == 0 and count(db, Organisation) == 0


def test_missing_csrf_token_is_refused_and_writes_nothing(client, db):
    resp = client.post("/signup", data={"organisation": "Acme", "email": "a@example.com",
                                        "password": "correct horse battery",
                                        "confirm": "correct horse battery"})
    assert resp.status_code in (400, 422)
    assert "CSRF" in resp.get_data(as_text=True) or "expired" in resp.get_data(as_text=True)
    assert count(db, User) == 0


def test_htmx_request_without_csrf_header_is_refused(client, auth):
    auth.signup()
    resp = client.post("/logout", headers={"HX-Request": "true"})
    assert resp.status_code == 400


def test_login_logout_and_wrong_password(client, auth):
    auth.signup()
    auth.logout()
    assert client.get("/").status_code == 302
    resp = auth.login(password="wrong password!")
    assert resp.status_code == 422 and "wrong" in resp.get_data(as_text=True)
    assert auth.login().status_code == 302
    assert client.get("/").status_code == 200


def test_session_cookie_flags(client, auth):
    resp = auth.signup()
    cookie = resp.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_dashboard_requires_login(client):
    resp = client.get("/")
    assert resp.status_code == 302 and "/signup" in resp.headers["Location"]
