"""Sessions: where a login may send the browser, logout replay, idle/absolute lifetime,
throttling."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

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


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_login_never_redirects_off_site(client, auth, target):
    auth.signup()
    auth.logout()
    resp = _login_with_next(client, auth, target)
    assert resp.status_code == 302, resp.status_code
    location = resp.headers["Location"]
    parts = urlsplit(location)
    assert not parts.netloc and not parts.scheme, location
    assert location.startswith("/") and not location.startswith("//")
    assert "\\" not in location


@pytest.mark.parametrize("target", ["/servers/", "/operations?kind=deploy", "/servers/new#x"])
def test_login_follows_a_same_site_next(client, auth, target):
    auth.signup()
    auth.logout()
    resp = _login_with_next(client, auth, target.replace("?", "%3F").replace("#", "%23"))
    assert resp.status_code == 302
    assert resp.headers["Location"] == target
