"""HTTPS settings in the Caddyfile (issue 22): ACME CA, email, HSTS, challenge forwarding.

Every value reaching the Caddyfile goes through an allowlist; the rendered text is checked
by the real caddy binary (adapt --validate)."""
from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from app.certificates import CERT_MARK, LOG_MARK, parse_probe, probe_command
from app.drivers.caddy.caddyfile import (CaddyfileError, GatewayOptions, Route, Upstream,
                                         check_caddyfile, render_caddyfile)
from app.drivers.caddy.tls import AcmeSettings, clean_root_pem


def _pem(cn="test root", days=30) -> str:
    return subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "/dev/null",
         "-subj", f"/CN={cn}", "-days", str(days)], capture_output=True, text=True,
        check=True).stdout


def _route(**kw):
    return Route(hostnames=kw.pop("hostnames", ["shop.test"]),
                 upstreams=[Upstream("10.0.0.5", 8080)], name="r1", **kw)


def test_acme_ca_root_and_email_are_global_options_and_caddy_accepts_them():
    pem = _pem()
    text = render_caddyfile([_route()], GatewayOptions(
        email="ops@example.com", acme_ca="https://10.1.2.4:14000/dir", acme_ca_root=True))
    assert "\temail ops@example.com\n" in text
    assert "\tacme_ca https://10.1.2.4:14000/dir\n" in text
    assert "\tacme_ca_root /etc/caddy/acme_ca_root.pem\n" in text
    tls = json.loads(check_caddyfile(text, acme_ca_root_pem=pem))["apps"]["tls"]
    issuer = tls["automation"]["policies"][0]["issuers"][0]
    assert issuer["ca"] == "https://10.1.2.4:14000/dir" and issuer["email"] == "ops@example.com"


def test_without_a_ca_the_production_path_has_no_acme_options():
    text = render_caddyfile([_route()], GatewayOptions(email="ops@example.com"))
    assert "acme_ca" not in text and "tls {" not in text


@pytest.mark.parametrize("bad", ["http://ca.example/dir", "https://ca.example/dir\n}",
                                 "https://ca.example/d ir", "https://ca.example/{env.X}",
                                 "ftp://x", "https://ca.example/dir;rm"])
def test_acme_ca_goes_through_the_allowlist(bad):
    with pytest.raises(CaddyfileError):
        render_caddyfile([_route()], GatewayOptions(acme_ca=bad))
    with pytest.raises(CaddyfileError):
        AcmeSettings.from_values(ca=bad)


@pytest.mark.parametrize("bad", ["ops@example.com\n}", "ops", "a b@example.com",
                                 "ops@example.com {", "{env.EMAIL}@x.com"])
def test_acme_email_goes_through_the_allowlist(bad):
    with pytest.raises(CaddyfileError):
        AcmeSettings.from_values(email=bad)


def test_the_ca_root_is_parsed_and_written_back_as_clean_pem():
    pem = _pem()
    assert clean_root_pem("junk before\n" + pem + "}\nmore junk") == pem
    with pytest.raises(CaddyfileError):
        clean_root_pem("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(CaddyfileError):
        clean_root_pem("hello")


def test_hsts_is_opt_in_per_route_and_needs_https():
    assert "Strict-Transport-Security" not in render_caddyfile([_route()])
    text = render_caddyfile([_route(hsts=True)])
    assert '\theader Strict-Transport-Security "max-age=31536000"\n' in text
    check_caddyfile(text)
    with pytest.raises(CaddyfileError):
        render_caddyfile([_route(hsts=True, tls="off")])
    with pytest.raises(CaddyfileError):
        Route.from_config({"hostnames": ["a.test"], "hsts": "yes"}, "r")


def test_several_gateways_forward_unknown_challenges_round_the_ring_and_only_http01():
    text = render_caddyfile([_route(challenge_peers=["10.0.0.12", "10.0.0.13"])])
    assert "disable_tlsalpn_challenge" in text
    assert "http://shop.test {" in text
    assert "@hop0 not header X-Keystone-Acme-Hop *" in text
    assert "@hop1 header X-Keystone-Acme-Hop 1" in text
    assert "reverse_proxy @hop0 10.0.0.12:80" in text and "reverse_proxy @hop1 10.0.0.12:80" in text
    assert "header_up X-Keystone-Acme-Hop 2" in text and "@hop2" not in text
    assert "redir https://{host}{uri} permanent" in text
    cfg = json.loads(check_caddyfile(text))
    policy = cfg["apps"]["tls"]["automation"]["policies"][0]
    assert policy["issuers"][0]["challenges"]["tls-alpn"]["disabled"] is True
    with pytest.raises(CaddyfileError):
        render_caddyfile([_route(challenge_peers=["10.0.0.12:80 {"])])


def test_one_gateway_renders_no_forwarding():
    text = render_caddyfile([_route()])
    assert "acme-challenge" not in text and "http://shop.test" not in text


def test_probe_is_quoted_and_refuses_odd_container_names():
    line = str(probe_command("keystone_service_5_gateway-1"))
    assert line.startswith("docker exec keystone_service_5_gateway-1 sh -c '")
    with pytest.raises(ValueError):
        probe_command("x; rm -rf /")


def test_parse_probe_reads_certificates_and_the_tls_log():
    pem = _pem("Pebble Intermediate CA 123abc", days=90)
    ts = 1796240000.5
    text = (f"{CERT_MARK}/data/caddy/certificates/10.1.2.4-14000-dir/shop.test/shop.test.crt\n"
            f"{pem}{LOG_MARK}\n"
            + json.dumps({"level": "info", "ts": ts, "logger": "tls.obtain",
                          "msg": "obtaining certificate", "identifier": "shop.test"}) + "\n"
            + json.dumps({"level": "error", "ts": ts + 5, "logger": "tls.obtain",
                          "msg": "could not get certificate from issuer",
                          "identifier": "other.test", "error": "HTTP 400 urn:..."}) + "\n"
            + 'not json {"logger":"tls.obtain"\n')
    probe = parse_probe(text)
    shop = probe.certs["shop.test"]
    assert shop.issuer == "Pebble Intermediate CA 123abc" and shop.ca_dir == "10.1.2.4-14000-dir"
    assert shop.not_after - shop.not_before == dt.timedelta(days=90)
    assert shop.last_attempt_at == dt.datetime(2026, 12, 2, 19, 33, 20, 500000) and not shop.last_error
    other = probe.certs["other.test"]
    assert other.not_after is None and "HTTP 400" in other.last_error


def test_renewal_timing_is_validated_and_accepted_by_caddy():
    text = render_caddyfile([_route()], GatewayOptions(renewal_window_ratio=0.9999999,
                                                       renew_interval="5s"))
    assert "\trenewal_window_ratio 0.9999999\n" in text and "\trenew_interval 5s\n" in text
    tls = json.loads(check_caddyfile(text))["apps"]["tls"]["automation"]
    assert tls["renew_interval"] == 5_000_000_000
    for bad in (0, 1, 1.5, "0.5", True):
        with pytest.raises(CaddyfileError):
            render_caddyfile([_route()], GatewayOptions(renewal_window_ratio=bad))
    with pytest.raises(CaddyfileError):
        AcmeSettings.from_values(renew_interval="5s\n}")
