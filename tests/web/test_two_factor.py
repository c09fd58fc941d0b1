"""Two-factor sign-in: TOTP windows, single-use recovery codes, throttled code attempts,
the organisation requirement, disabling (issue 19)."""
from __future__ import annotations

import re
import time

import pyotp
import pytest
import sqlalchemy as sa

from app import two_factor as tf
from app.models import AuditEvent, Organisation, RecoveryCode, User
from tests.conftest import csrf_token_from

PASSWORD = "correct horse battery"


def _enrol(client, auth, email="owner@example.com"):
    """Sign up, enrol through the pages; (secret, recovery codes)."""
    auth.signup(email=email)
    page = client.get("/account/two-factor")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "<svg" in html and "<script" not in html.split("<main>")[1]
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', html).group(1)
    done = client.post("/account/two-factor/confirm", data={
        "csrf_token": csrf_token_from(html), "code": pyotp.TOTP(secret).now()})
    assert done.status_code == 200
    codes = re.findall(r"<code>([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})</code>",
                       done.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


def _second_step(client, code):
    page = client.get("/login/two-factor").get_data(as_text=True)
    return client.post("/login/two-factor", data={"csrf_token": csrf_token_from(page),
                                                  "code": code})


def _fresh_code(secret: str, user: User | None = None) -> str:
    """A code of a step not used yet (a code is accepted once per 30-second step)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    if user is not None and user.totp_last_step is not None \
            and user.totp_last_step >= int(now // 30):
        return totp.at(now + 30)  # next step: inside the window
    return totp.now()


def test_enrol_then_sign_in_needs_the_code(app, client, auth, db):
    secret, codes = _enrol(client, auth)
    user = db.session.execute(sa.select(User)).scalar_one()
    assert user.two_factor_enabled and user.totp_secret == secret
    # The secret is encrypted at rest and the codes are stored hashed.
    with db.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT totp_secret FROM users")).scalar()
        hashes = conn.execute(sa.text("SELECT code_hash FROM recovery_codes")).scalars().all()
    assert secret not in raw
    assert len(hashes) == 10 and not set(codes) & set(hashes)
    assert {tf.hash_code(c) for c in codes} == set(hashes)
    auth.logout()
    first = auth.login()
    assert first.status_code == 302 and first.headers["Location"] == "/login/two-factor"
    assert client.get("/").status_code == 302            # not signed in by the password alone
    wrong = _second_step(client, "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    assert wrong.status_code == 422 and "not right" in wrong.get_data(as_text=True)
    db.session.refresh(user)
    ok = _second_step(client, _fresh_code(secret, user))
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    actions = db.session.execute(sa.select(AuditEvent.action).order_by(AuditEvent.id)) \
        .scalars().all()
    assert actions == ["two_factor.enrolled", "auth.two_factor_failed", "auth.sign_in"]
    for detail in db.session.execute(sa.select(AuditEvent.detail)).scalars():
        assert secret not in repr(detail) and not any(c in repr(detail) for c in codes)


def test_a_code_is_accepted_within_one_step_either_side_and_only_once(app, db, auth, client):
    secret, _ = _enrol(client, auth)
    user = db.session.execute(sa.select(User)).scalar_one()
    user.totp_last_step = None
    db.session.commit()
    totp = pyotp.TOTP(secret)
    now = 1_900_000_005.0  # a fixed instant, steps computed from it
    assert not tf.check_totp(user, totp.at(now - 60), now=now)   # two steps old
    assert not tf.check_totp(user, totp.at(now + 60), now=now)   # two steps ahead
    assert tf.check_totp(user, totp.at(now - 30), now=now)       # previous step: drift
    assert not tf.check_totp(user, totp.at(now - 30), now=now)   # the same code again
    assert tf.check_totp(user, totp.at(now), now=now)
    assert not tf.check_totp(user, totp.at(now), now=now)        # replay refused
    assert not tf.check_totp(user, totp.at(now - 30), now=now)   # older than the last one
    assert tf.check_totp(user, totp.at(now + 30), now=now)       # next step
    assert not tf.check_totp(user, "12345", now=now) and not tf.check_totp(user, "abcdef", now=now)


def test_a_recovery_code_signs_in_once(app, client, auth, db):
    secret, codes = _enrol(client, auth)
    auth.logout()
    auth.login()
    used = _second_step(client, codes[3].lower().replace("-", " "))  # typed loosely
    assert used.status_code == 302 and client.get("/").status_code == 200
    user = db.session.execute(sa.select(User)).scalar_one()
    assert tf.recovery_codes_left(user) == 9
    auth.logout()
    auth.login()
    again = _second_step(client, codes[3])
    assert again.status_code == 422 and client.get("/").status_code == 302
    assert _second_step(client, codes[4]).status_code == 302
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "two_factor.recovery_used").order_by(AuditEvent.id.desc())
        .limit(1)).scalar_one()
    assert event.detail == {"codes_left": 8} and event.ip == "127.0.0.1"


def test_wrong_codes_are_throttled_per_account(app, client, auth, db):
    from app.security import TWO_FACTOR_PER_ACCOUNT
    per_minute = int(TWO_FACTOR_PER_ACCOUNT.split()[0])
    secret, _ = _enrol(client, auth)
    auth.logout()
    auth.login()
    wrong = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    codes = [_second_step(client, wrong).status_code for _ in range(per_minute)]
    assert codes == [422] * per_minute
    user = db.session.execute(sa.select(User)).scalar_one()
    blocked = _second_step(client, _fresh_code(secret, user))    # even the right code now
    assert blocked.status_code == 429
    assert client.get("/").status_code == 302
    # The bucket is the account's: signing in with the password again does not reset it.
    assert auth.login().headers["Location"] == "/login/two-factor"
    assert _second_step(client, _fresh_code(secret, user)).status_code == 429


def test_code_attempts_of_a_signed_in_user_are_throttled_too(app, client, auth):
    from app.security import TWO_FACTOR_PER_ACCOUNT
    per_minute = int(TWO_FACTOR_PER_ACCOUNT.split()[0])
    auth.signup()
    page = client.get("/account/two-factor").get_data(as_text=True)
    statuses = [client.post("/account/two-factor/confirm", data={
        "csrf_token": csrf_token_from(page), "code": "12345x"}).status_code
        for _ in range(per_minute + 1)]
    assert statuses[:per_minute] == [422] * per_minute and statuses[-1] == 429


def test_the_second_step_expires_and_needs_the_password_first(app, client, auth, db):
    secret, _ = _enrol(client, auth)
    auth.logout()
    assert client.get("/login/two-factor").headers["Location"] == "/login"   # no password yet
    auth.login()
    with client.session_transaction() as sess:
        sess[tf.PENDING]["at"] -= tf.PENDING_SECONDS + 1
        sess.modified = True
    late = client.get("/login/two-factor")
    assert late.status_code == 302 and late.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_disable_needs_a_code(app, client, auth, db):
    secret, codes = _enrol(client, auth)
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "10 unused recovery codes left" in page
    refused = client.post("/account/two-factor/disable", data={
        "csrf_token": csrf_token_from(page), "disable-code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"})
    assert refused.status_code == 422
    user = db.session.execute(sa.select(User)).scalar_one()
    assert user.two_factor_enabled
    off = client.post("/account/two-factor/disable", data={
        "csrf_token": csrf_token_from(page), "disable-code": codes[0]})
    assert off.status_code == 302
    db.session.refresh(user)
    assert not user.two_factor_enabled and user.totp_secret is None
    assert db.session.execute(sa.select(sa.func.count()).select_from(RecoveryCode)).scalar() == 0
    auth.logout()
    assert auth.login().headers["Location"] == "/"   # the password alone again
    assert db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "two_factor.disabled")).scalar_one().detail == \
        {"confirmed_with": "recovery"}


def test_new_recovery_codes_replace_the_old_ones(app, client, auth, db):
    secret, old = _enrol(client, auth)
    page = client.get("/account/two-factor").get_data(as_text=True)
    user = db.session.execute(sa.select(User)).scalar_one()
    made = client.post("/account/two-factor/recovery-codes", data={
        "csrf_token": csrf_token_from(page), "codes-code": _fresh_code(secret, user)})
    assert made.status_code == 200
    new = re.findall(r"<code>([A-Z0-9-]{19})</code>", made.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    assert not tf.use_recovery_code(user, old[0])
    assert tf.use_recovery_code(user, new[0])


def _require(db):
    org = db.session.execute(sa.select(Organisation)).scalar_one()
    org.require_two_factor = True
    db.session.commit()


def test_an_organisation_can_require_two_factor(app, client, auth, db):
    auth.signup()
    page = client.get("/settings/security").get_data(as_text=True)
    turned = client.post("/settings/security", data={"csrf_token": csrf_token_from(page),
                                                     "require": "y"})
    assert turned.status_code == 302
    assert db.session.execute(sa.select(Organisation)).scalar_one().require_two_factor
    # Now every page but enrolment and sign-out sends the member to enrol.
    for path in ("/", "/servers/", "/audit/", "/settings/tokens/"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"] == "/account/two-factor", path
    hx = client.get("/servers/", headers={"HX-Request": "true"})
    assert hx.headers["HX-Redirect"] == "/account/two-factor"
    enrol_page = client.get("/account/two-factor").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_token_from(enrol_page)}) \
        .status_code == 302                                    # signing out still works
    signed = auth.login()
    assert signed.status_code == 302 and signed.headers["Location"] == "/account/two-factor"
    html = client.get("/account/two-factor").get_data(as_text=True)
    assert "requires two-factor sign-in" in html
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', html).group(1)
    assert client.post("/account/two-factor/confirm", data={
        "csrf_token": csrf_token_from(html), "code": pyotp.TOTP(secret).now()}).status_code == 200
    assert client.get("/").status_code == 200                 # enrolled: free again
    # While required, it cannot be turned off.
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "cannot be turned off" in page
    assert db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "organisation.require_two_factor")).scalar_one().detail == \
        {"required": True}


def test_api_tokens_of_a_member_who_must_enrol_are_refused(app, client, auth, db):
    from app.api import tokens as tk
    auth.signup()
    user = db.session.execute(sa.select(User)).scalar_one()
    _row, token = tk.create_token(user, "ci", ["read"], 30)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/servers", headers=headers).status_code == 200
    _require(db)
    refused = client.get("/api/v1/servers", headers=headers)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "two_factor_required"


def test_only_owners_and_admins_change_the_requirement(app, client, auth, db):
    from app.models import Membership
    from app.models.enums import MembershipRole
    auth.signup()
    membership = db.session.execute(sa.select(Membership)).scalar_one()
    membership.role = MembershipRole.DEPLOYER
    db.session.commit()
    assert client.get("/settings/security").status_code == 403
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403


@pytest.mark.parametrize("code", ["", "1" * 41, "12 34 56\x00"])
def test_malformed_codes_are_refused_politely(app, client, auth, code):
    _enrol(client, auth)
    auth.logout()
    auth.login()
    assert _second_step(client, code).status_code == 422
