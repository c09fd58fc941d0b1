import uuid

import pytest

pytestmark = pytest.mark.browser


def signup(page, base, email=None):
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    page.goto(base + "/signup")
    page.get_by_label("Organisation name").fill("Acme")
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_label("Repeat password").fill("correct horse battery")
    page.get_by_role("button", name="Create account").click()
    return email


def test_sign_up_lands_on_a_dashboard_that_says_what_to_do_next(page, live_server, screenshot):
    page.goto(live_server["url"] + "/signup")
    screenshot(page, "signup")
    signup(page, live_server["url"])
    page.wait_for_url(live_server["url"] + "/onboarding/")    # sign-up leads into the wizard
    assert page.get_by_role("heading", name="Get started").is_visible()
    page.goto(live_server["url"] + "/")
    assert page.get_by_role("heading", name="Acme").is_visible()
    assert page.get_by_text("No servers yet").is_visible()
    screenshot(page, "dashboard")


def test_short_password_shows_an_inline_error(page, live_server):
    page.goto(live_server["url"] + "/signup")
    page.get_by_label("Organisation name").fill("Acme")
    page.get_by_label("Email").fill("short@example.com")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Repeat password").fill("short")
    page.get_by_role("button", name="Create account").click()
    assert page.get_by_text("Use at least 10 characters.").is_visible()


def test_dashboard_is_usable_at_phone_width(browser, live_server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    signup(page, live_server["url"])
    page.wait_for_url(live_server["url"] + "/onboarding/")
    for path in ("/onboarding/", "/"):
        page.goto(live_server["url"] + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"{path} scrolls sideways at phone width ({width}px)"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"page scrolls sideways at phone width ({width}px)"
    context.close()
