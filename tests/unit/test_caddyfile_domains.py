"""Several domains per environment and the www-to-apex redirect in the Caddyfile (issue 13, 8)."""
import pytest

from app.drivers.caddy.caddyfile import (CaddyfileError, Route, Upstream, check_caddyfile,
                                         render_caddyfile)

UP = [Upstream("web-12-blue.internal", 8080), Upstream("web-12-green.internal", 8080)]


def site(text: str, address: str) -> str:
    """The block of one site address, from its opening line to its closing brace."""
    start = text.index(f"\n{address} {{\n")
    return text[start + 1:text.index("\n}\n", start) + 3]


def test_two_domains_of_one_environment_are_two_sites_with_the_same_slots():
    text = render_caddyfile([Route(["example.com"], UP, tls="off", name="shop_production"),
                             Route(["shop.example.org"], UP, tls="off",
                                   name="shop_production_2")])
    for host in ("example.com", "shop.example.org"):
        block = site(text, f"http://{host}")
        assert "reverse_proxy web-12-blue.internal:8080 web-12-green.internal:8080" in block
    check_caddyfile(text)


@pytest.mark.parametrize("tls, address, scheme", [("off", "http://www.example.com", "http"),
                                                  ("auto", "www.example.com", "https")])
def test_www_redirects_permanently_to_the_apex_keeping_the_path(tls, address, scheme):
    route = Route.from_config({"hostnames": ["example.com"], "redirect_from": ["WWW.example.com"],
                               "tls": tls, "upstreams": [u.address() for u in UP]}, "r")
    text = render_caddyfile([route])
    block = site(text, address)
    assert block == f"{address} {{\n\tredir {scheme}://example.com{{uri}} permanent\n}}\n"
    assert "reverse_proxy" not in block
    check_caddyfile(text)


def test_internal_tls_redirect_site_gets_internal_tls_too():
    text = render_caddyfile([Route(["example.com"], UP, tls="internal",
                                   redirect_from=["www.example.com"])])
    assert "www.example.com {\n\ttls internal\n\tredir https://example.com{uri} permanent" in text


@pytest.mark.parametrize("bad", ["www.example.com {\nrespond x\n}", "www.example.com/x",
                                 "*.example.com", "https://www.example.com", "www.exa mple.com",
                                 "www.example.com\n", "{uri}.example.com", ""])
def test_redirect_hostnames_go_through_the_allowlist(bad):
    with pytest.raises(CaddyfileError):
        render_caddyfile([Route(["example.com"], UP, redirect_from=[bad])])


def test_a_redirect_never_duplicates_a_routed_domain():
    with pytest.raises(CaddyfileError, match="twice"):
        render_caddyfile([Route(["example.com"], UP, redirect_from=["example.com"])])
    with pytest.raises(CaddyfileError, match="routed twice"):
        render_caddyfile([Route(["example.com"], UP, name="a", redirect_from=["www.example.com"]),
                          Route(["www.example.com"], UP, name="b")])


def test_no_redirect_to_a_wildcard():
    with pytest.raises(CaddyfileError, match="wildcard"):
        render_caddyfile([Route(["*.example.com"], UP, redirect_from=["www.example.com"])])


def test_redirect_from_must_be_a_list():
    with pytest.raises(CaddyfileError, match="list"):
        Route.from_config({"hostnames": ["example.com"], "redirect_from": "www.example.com"})


def test_hostname_allowlist_is_a_full_match():
    from app.drivers.caddy.caddyfile import validate_hostname
    with pytest.raises(CaddyfileError):
        validate_hostname("example.com\n")
