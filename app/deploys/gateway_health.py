"""What a Caddy gateway's own log says about its upstreams' active health (PURE).

Keystone does not guess when Caddy has moved traffic: it reads it. Caddy's
admin API does not expose active health-check state (caddyserver/caddy#6135),
but its active health checker logs every transition to healthy (``host is
up``) and every failed check (``status code out of tolerances``, ``HTTP
request failed``, ...), each a JSON line with the upstream address in
``host`` and a Unix timestamp in ``ts``. So:

* a new replica is in rotation on a gateway once that gateway logged ``host
  is up`` for the slot's address after Keystone armed it;
* an old replica is out of rotation once the gateway logged at least
  ``fails`` failed checks for its address after Keystone drained it (Caddy
  marks an upstream down after that many consecutive failures).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

HEALTH_LOGGER = "http.handlers.reverse_proxy.health_checker.active"
UP_MESSAGE = "host is up"
NO_UPSTREAMS = "no upstreams available"


@dataclass
class HostHealth:
    """Active health-check events of one upstream address, in log order."""

    up: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)

    def up_after(self, since: float) -> bool:
        return any(ts >= since for ts in self.up)

    def failures_after(self, since: float) -> int:
        return sum(1 for ts in self.failed if ts >= since)


def health_events(log_text: str) -> dict[str, HostHealth]:
    """``{upstream address: HostHealth}`` from a gateway's log (other lines are ignored)."""
    out: dict[str, HostHealth] = {}
    for line in log_text.splitlines():
        line = line.strip()
        if not line.startswith("{") or HEALTH_LOGGER not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") != HEALTH_LOGGER:
            continue
        host, ts = entry.get("host"), entry.get("ts")
        if not isinstance(host, str) or not isinstance(ts, (int, float)):
            continue
        events = out.setdefault(host, HostHealth())
        if entry.get("msg") == UP_MESSAGE:
            events.up.append(float(ts))
        else:
            events.failed.append(float(ts))
    return out


def no_upstream_lines(log_text: str) -> list[str]:
    """Lines where the gateway had no healthy upstream for a request (a 503 to a client)."""
    return [ln for ln in log_text.splitlines() if NO_UPSTREAMS in ln]


def parse_stamp(text: str) -> float | None:
    """The ``date +%s.%N`` line a stamping command printed first."""
    for line in text.splitlines():
        line = line.strip()
        try:
            return float(line)
        except ValueError:
            continue
    return None
