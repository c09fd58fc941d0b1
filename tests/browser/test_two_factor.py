"""Two-factor sign-in in a real browser (issue 19): enrol in TOTP, sign out, sign in with a
code, sign out, sign in with a recovery code, and the same recovery code is refused the
second time. The TOTP codes are computed here with pyotp from the key the page shows as
text (what a person types into an authenticator app when they cannot scan). No sandbox:
only the web tier is needed."""
from __future__ import annotations

import re
import time
import uuid

import pyotp
import pytest

from tests.browser.test_signup import signup

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def _sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/login$"))


def _password(page, base, email):
    page.goto(base + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/login/two-factor")


def _next_step_code(totp: pyotp.TOTP) -> str:
    """The code of the next 30-second step: inside the server's window (one step either
    side) and newer than the step enrolment used, which the server will not accept twice."""
    return totp.at(time.time() + 30)


def test_enrol_then_sign_in_with_a_code_and_with_a_recovery_code_once(page, live_server,
                                                                       screenshot):
    base = live_server["url"]
    email = signup(page, base, email=f"twofa-{uuid.uuid4().hex[:8]}@example.com")
    page.wait_for_url(base + "/onboarding/")

    # Enrol: the QR code is inline SVG (allowed by the CSP), the key is shown as text.
    page.goto(base + "/account/two-factor")
    assert page.get_by_role("heading", name="Set up two-factor sign-in").is_visible()
    assert page.locator("figure.qr svg").is_visible()
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    totp = pyotp.TOTP(secret)
    screenshot(page, "two-factor-enrol")
    page.get_by_label("Code").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor").click()
    assert page.get_by_role("heading", name="Two-factor sign-in is on").is_visible()
    codes = [c.strip() for c in page.locator(".recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and all(re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3}", c)
                                    for c in codes)
    page.get_by_role("link", name="I have saved them").click()
    page.wait_for_url(base + "/")

    # Sign out; the password alone is not enough, the app's code is.
    _sign_out(page)
    _password(page, base, email)
    page.get_by_label("Code").fill(_next_step_code(totp))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(base + "/")
    assert page.get_by_role("button", name="Sign out").is_visible()

    # Sign out; a recovery code signs in once.
    _sign_out(page)
    _password(page, base, email)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(base + "/")
    assert page.get_by_text("Signed in with a recovery code: 9 left").is_visible()

    # The owner's team pages: members, and the audit log holding these sign-ins.
    assert page.goto(base + "/settings/members/").status == 200
    assert page.get_by_text(email).first.is_visible()
    screenshot(page, "members")
    assert page.goto(base + "/audit/").status == 200
    assert page.locator("table").get_by_text("two_factor.recovery_used").first.is_visible()
    screenshot(page, "audit-log")

    # The same recovery code a second time: refused, still signed out.
    _sign_out(page)
    _password(page, base, email)
    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    assert page.get_by_text("That code is not right (or was used already).").is_visible()
    assert page.url == base + "/login/two-factor"
    page.goto(base + "/")                                   # not signed in: sent away
    assert not page.url.startswith(base + "/?") and page.url != base + "/"
    assert page.get_by_role("button", name="Sign out").count() == 0
