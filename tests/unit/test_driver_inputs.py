"""Injection corpus: domains, env keys and env values that must be refused or carried intact."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from app.drivers.caddy.caddyfile import (CaddyfileError, GatewayOptions, Route, Upstream,
                                         check_caddyfile, render_caddyfile, validate_hostname)
from app.drivers.envfile import (EnvKeyError, env_file_safe, render_env_file,
                                 split_environment, validate_env_key)

BAD_DOMAINS = [
    "a.com {\nrespond x\n}",
    "a.com {",
    "a.com\nrespond x",
    "a.com respond",
    "a.com,b.com",
    "a.com:8080",
    "https://a.com",
    "a.com/path",
    "{$HOME}.com",
    "a.com#x",
    "a..com",
    "-a.com",
    "a-.com",
    "a_b.com",
    "",
    " ",
    "a" * 64 + ".com",
    ("a" * 60 + ".") * 5 + "com",
    "exämple.com",
    "127.0.0.1",
    "a.com;id",
    "a.com\x00",
    "*.*.a.com",
    "a.*.com",
    "a.com\"",
    "import x",
]


@pytest.mark.parametrize("domain", BAD_DOMAINS)
def test_bad_domains_are_rejected_with_a_message(domain):
    with pytest.raises(CaddyfileError) as exc:
        validate_hostname(domain)
    assert "domain" in str(exc.value)


def test_the_issue_example_names_the_problem():
    with pytest.raises(CaddyfileError, match="whitespace or a line break"):
        validate_hostname("a.com {\nrespond x\n}")


@pytest.mark.parametrize("domain,expected", [
    ("Shop.Example.com", "shop.example.com"), ("shop.example.com.", "shop.example.com"),
    ("*.example.com", "*.example.com"), ("xn--exmple-cua.com", "xn--exmple-cua.com"),
    ("localhost", "localhost"), ("a-b.c-d.internal", "a-b.c-d.internal"),
])
def test_good_domains(domain, expected):
    assert validate_hostname(domain) == expected


@pytest.mark.parametrize("domain", BAD_DOMAINS[:6])
def test_bad_domains_never_reach_a_caddyfile(domain):
    with pytest.raises(CaddyfileError):
        render_caddyfile([Route(hostnames=[domain], upstreams=[Upstream("web", 8080)])])


@pytest.mark.parametrize("host,port", [("web {", 80), ("web", "80 {"), ("web", 0),
                                       ("web", 70000), ("web\n", 80), ("web", True)])
def test_bad_upstreams(host, port):
    with pytest.raises(CaddyfileError):
        render_caddyfile([Route(hostnames=["a.test"], upstreams=[Upstream(host, port)])])


def test_duplicate_domain_across_routes_is_refused():
    with pytest.raises(CaddyfileError, match="routed twice"):
        render_caddyfile([Route(["a.test"], name="one"), Route(["A.test"], name="two")])


def test_rendered_caddyfile_with_ipv6_and_options_passes_real_caddy():
    text = render_caddyfile([Route(["a.test"], [Upstream("::1", 8080), Upstream("10.0.0.3", 2)],
                                   tls="off")], GatewayOptions(grace_period="3s"))
    assert "[::1]:8080" in text
    check_caddyfile(text)


def test_check_caddyfile_reports_caddy_errors():
    with pytest.raises(CaddyfileError, match="caddy rejected"):
        check_caddyfile("a.test {\n\tbogus_directive x\n}\n")


@pytest.mark.parametrize("key,fragment", [
    ("A;id", "contains ';'"),
    ("A B", "contains a space"),
    ("1A", "starts with a digit"),
    ("", "empty"),
    ("A-B", "contains '-'"),
    ("A\nB", "line break"),
    ("$(id)", "contains '$'"),
    ("Ä", "contains 'Ä'"),
    ("A" * 200, "too long"),
])
def test_bad_env_keys(key, fragment):
    with pytest.raises(EnvKeyError) as exc:
        validate_env_key(key)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("key", ["A", "_A", "APP_KEY", "a1", "DB_PASSWORD_2"])
def test_good_env_keys(key):
    assert validate_env_key(key) == key


TRICKY_VALUES = {
    "NEWLINES": "line1\nline2\n\nline4",
    "CMDSUB": "$(id)",
    "BRACED": "${HOME}",
    "BARE": "$HOME and $$ and $",
    "DQ": 'say "hi"',
    "SQ": "it's",
    "BACKSLASH": "a\\b\\\\c\\n",
    "TRAILING_BS": "ends with \\",
    "MIXED": "'\"\\$`!#;&|<> \t*?[~",
    "HASH": "value # not a comment",
    "CR": "a\rb",
    "SPACES": "  padded  ",
    "EMPTY": "",
    "UNICODE": "grüße ✓",
    "EQUALS": "a=b=c",
    "BACKTICK": "`id`",
}


def test_split_sends_only_portable_values_to_the_env_file():
    file_part, compose_part = split_environment(TRICKY_VALUES)
    for key, value in TRICKY_VALUES.items():
        assert (key in file_part) == env_file_safe(value)
        assert (key in compose_part) != (key in file_part)
    assert {"CMDSUB", "BRACED", "BARE", "TRAILING_BS", "MIXED"} <= set(compose_part)


def _v1_python():
    """System python with docker-compose v1's own env-file reader (Debian's package)."""
    if not os.path.exists("/usr/lib/python3/dist-packages/compose/config/environment.py"):
        return None
    return "/usr/bin/python3"


@pytest.mark.skipif(_v1_python() is None, reason="docker-compose v1 not installed")
def test_env_file_round_trips_through_compose_v1_parser(tmp_path):
    file_part, _ = split_environment(TRICKY_VALUES)
    path = tmp_path / "env"
    path.write_text(render_env_file(file_part, header="test"))
    script = ("import json,sys; from compose.config.environment import env_vars_from_file;"
              "print(json.dumps(env_vars_from_file(sys.argv[1])))")
    out = subprocess.run([_v1_python(), "-c", script, str(path)], capture_output=True,
                         text=True, check=True, env={"HOME": "/nonexistent", "PATH": "/usr/bin"})
    assert json.loads(out.stdout) == file_part


def test_route_tuning_from_slice_config_is_rendered_and_accepted_by_caddy():
    route = Route.from_config({"hostnames": ["shop.test"], "tls": "off",
                               "upstreams": ["web-5-blue.internal:8080", "10.0.0.3:20001"],
                               "health_path": "/.keystone/ready",
                               "health": {"interval": "250ms", "timeout": "1s", "fails": 1,
                                          "passes": 1},
                               "dial_timeout": "1s", "lb_try_duration": "5s",
                               "lb_try_interval": "250ms", "service_id": 5}, "shop")
    text = render_caddyfile([route])
    for line in ("health_uri /.keystone/ready", "health_interval 250ms", "health_timeout 1s",
                 "health_fails 1", "health_passes 1", "dial_timeout 1s"):
        assert line in text
    check_caddyfile(text)


@pytest.mark.parametrize("health", [{"interval": "1s\n}"}, {"fails": "1 {"}, {"passes": 0},
                                    {"timeout": "forever"}])
def test_bad_route_health_tuning(health):
    with pytest.raises(CaddyfileError):
        render_caddyfile([Route.from_config({"hostnames": ["a.test"], "upstreams": ["w:80"],
                                             "health_path": "/up", "health": health}, "r")])


def _ws_route(**path_route):
    pr = {"name": "websocket", "paths": ["/app/*", "/apps/*"],
          "upstreams": ["websocket-9-blue.internal:8080"], **path_route}
    return Route.from_config({"hostnames": ["shop.test"], "tls": "off",
                              "upstreams": ["web-5-blue.internal:8080"],
                              "health_path": "/.keystone/ready", "path_routes": [pr]}, "shop")


def test_websocket_paths_adapt_to_a_path_matched_subroute_before_the_catch_all():
    import json
    adapted = json.loads(check_caddyfile(render_caddyfile([_ws_route()])))
    server = next(iter(adapted["apps"]["http"]["servers"].values()))
    site = next(r for r in server["routes"] if {"host": ["shop.test"]} in r.get("match", []))
    text = json.dumps(site)
    # the path-matched handle comes first, with its own upstreams and health check
    first, last = text.index('"/app/*"'), text.index("web-5-blue.internal:8080")
    assert text.index("websocket-9-blue.internal:8080") < last and first < last
    assert '"/apps/*"' in text and text.count('"uri": "/.keystone/ready"') == 2


def test_a_path_route_can_have_its_own_health_path():
    """Reverb answers /up, not Keystone's ready path: the websocket handle checks /up."""
    import json
    adapted = json.loads(check_caddyfile(render_caddyfile([_ws_route(health_path="/up")])))
    text = json.dumps(adapted)
    assert text.count('"uri": "/up"') == 1 and text.count('"uri": "/.keystone/ready"') == 1
    for bad in ("/up\n", "up", "/up {", "/$x", 5):
        with pytest.raises(CaddyfileError):
            render_caddyfile([_ws_route(health_path=bad)])


@pytest.mark.parametrize("path", ["/app/* /x", "/app/{path}", "app/*", "/a/../b", "/a//b",
                                  "/app/*\n", "/app*", "/ap p", "/app/*}", "/{$HOME}", "",
                                  "/app/\"x\"", "/app/#", None, 3])
def test_bad_websocket_paths_never_reach_a_caddyfile(path):
    with pytest.raises(CaddyfileError):
        render_caddyfile([_ws_route(paths=["/app/*", path])])


@pytest.mark.parametrize("name", ["Websocket", "ws socket", "ws{", "", "1ws", "w" * 40, None,
                                  "ws\n"])
def test_bad_path_route_names_are_refused(name):
    with pytest.raises(CaddyfileError):
        render_caddyfile([_ws_route(name=name)])


def test_path_route_needs_paths_and_valid_upstreams():
    with pytest.raises(CaddyfileError, match="no paths"):
        render_caddyfile([_ws_route(paths=[])])
    with pytest.raises(CaddyfileError):
        render_caddyfile([_ws_route(upstreams=["bad host:80"])])
    with pytest.raises(CaddyfileError):
        Route.from_config({"hostnames": ["a.test"], "path_routes": ["/app/*"]}, "r")


@pytest.mark.parametrize("value", ["/up\n", "/up\nrespond x"])
def test_health_path_with_a_trailing_newline_is_refused(value):
    with pytest.raises(CaddyfileError):
        render_caddyfile([Route(["a.test"], [Upstream("w", 80)], health_path=value)])
