"""Fixed blue/green slots per web (and websocket) service per server (docs/cutover.md).

Why fixed slots: every Caddy config change closes idle client keep-alive
connections, so an ordinary deploy must change no gateway config at all. The
Caddyfile lists both slots of every server once; Caddy's active health check
(``/.keystone/ready`` every 500 ms) decides which of them gets traffic. A slot
is:

* on the same server, a Docker network alias on the ``keystone`` network
  (an empty slot does not resolve, so it is simply down), and
* for other servers, a fixed port on the server's private IP, published only
  when the web service spans more than one server.

Everything here is pure: names and numbers from ids.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

KEYSTONE_SERVICES_ROOT = "/home/keystone/services"

SLOTS = ("blue", "green")
APP_PORT = 8080
"""The port the managed Laravel image listens on inside the container."""
READY_PATH = "/.keystone/ready"
DRAIN_MARKER = "/tmp/keystone-drain"
# Touched by Keystone once its own health checks of a new replica passed: until then the
# replica's ready path answers 503 and no gateway sends it a request (docs/cutover.md).
ARMED_MARKER = "/tmp/keystone-armed"
SCHEDULER_FLAG = "/tmp/keystone-scheduler"
SCHEDULER_BUSY = "/tmp/keystone-scheduler.running"
# Laravel Reverb speaks the Pusher protocol: websocket upgrades on /app/{key} and the HTTP
# API (POST /apps/{id}/events, ...) on /apps/*. A route of an environment with a websocket
# service sends these paths to the websocket service's slots, everything else to web.
WEBSOCKET_MATCHER = "websocket"
WEBSOCKET_PATHS = ("/app/*", "/apps/*")
PORT_BASE = 20000
PORT_LIMIT = 60000

# Caddy's view of the slots; the gateway renders these for every route of a web service.
# The ready path is answered from marker files by the replica's web server, never by PHP,
# so a saturated app does not fail it; still, a slot is marked down only after
# HEALTH_FAILS failed checks, each allowed HEALTH_TIMEOUT (sized for a loaded server).
HEALTH_INTERVAL_MS = 500
HEALTH_TIMEOUT = "5s"
HEALTH_FAILS = 3
HEALTH_PASSES = 1
LB_TRY_DURATION = "5s"
LB_TRY_INTERVAL = "250ms"
DIAL_TIMEOUT = "1s"


def slug(name: str, max_len: int = 40) -> str:
    """A DNS-label-safe form of a name ("My App" -> "my-app"), as app.drivers.base.slug."""
    s = re.sub(r"[^a-z0-9]+", "-", (name or "").lower()).strip("-")[:max_len].strip("-")
    return s or "service"


def other_slot(slot: str | None) -> str:
    """The free slot next to ``slot`` (blue when nothing runs yet)."""
    if slot not in SLOTS:
        return SLOTS[0]
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


def slot_alias(service_name: str, service_id: int, slot: str) -> str:
    """``web-12-blue.internal``: the same-server address of a slot (ids keep orgs apart)."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return f"{slug(service_name, 30)}-{int(service_id)}-{slot}.internal"


def slot_port(service_id: int, slot: str) -> int:
    """The fixed private-network port of a slot: two per service, unique per Keystone."""
    port = PORT_BASE + 2 * int(service_id) + SLOTS.index(slot)
    if port >= PORT_LIMIT:
        raise ValueError(f"service id {service_id} is beyond the slot port range")
    return port


def container_name(service_name: str, service_id: int, slot: str, operation_id: int) -> str:
    """A unique container name per deploy: ``ks-web-12-green-op57``."""
    return f"ks-{slug(service_name, 30)}-{int(service_id)}-{slot}-op{int(operation_id)}"


def project_name(service_id: int, slot: str, operation_id: int) -> str:
    """A unique Compose project per deploy, so two generations never share one."""
    return f"ks-svc-{int(service_id)}-{slot}-op{int(operation_id)}"


def replica_dir(service_id: int, slot: str) -> str:
    """Where a slot's compose project lives: ``/home/keystone/services/<id>/<slot>``."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return f"{KEYSTONE_SERVICES_ROOT}/{int(service_id)}/{slot}"


@dataclass(frozen=True)
class Upstream:
    """One upstream of a route on one gateway: an address Caddy dials."""

    address: str  # host:port
    server_id: int
    slot: str
    same_server: bool


def upstreams(service_name: str, service_id: int, gateway_server_id: int,
              servers: Iterable[tuple[int, str | None]],
              remote_address: Callable[[int, int], str] | None = None) -> list[Upstream]:
    """Every slot of every server of a web service, as seen from one gateway's server.

    ``servers`` is ``(server_id, private_ip)`` for each server the service runs
    on. The gateway's own server is reached through the Docker aliases; other
    servers through their private IP and the slot's fixed port. A server with
    no private IP cannot be reached from elsewhere and raises. ``remote_address``
    (server id, slot port) -> ``ip:port``, when given, names another server's slot
    instead: the deploy passes the slot's Endpoint (app.endpoints), which is also how
    the public fallback a server explicitly allows (SPEC 14) reaches the gateways.
    """
    out: list[Upstream] = []
    for server_id, private_ip in sorted(servers, key=lambda s: (s[0] != gateway_server_id, s[0])):
        for slot in SLOTS:
            if server_id == gateway_server_id:
                out.append(Upstream(f"{slot_alias(service_name, service_id, slot)}:{APP_PORT}",
                                    server_id, slot, True))
            elif remote_address is not None:
                out.append(Upstream(remote_address(server_id, slot_port(service_id, slot)),
                                    server_id, slot, False))
            else:
                if not private_ip:
                    raise ValueError(f"server {server_id} has no private IP: other servers "
                                     "cannot reach its replicas")
                out.append(Upstream(f"{private_ip}:{slot_port(service_id, slot)}",
                                    server_id, slot, False))
    return out


def reverse_proxy_options() -> dict[str, str]:
    """The ``reverse_proxy`` sub-directives that make slots work without config changes."""
    return {
        "lb_policy": "round_robin",
        "lb_try_duration": LB_TRY_DURATION,
        "lb_try_interval": LB_TRY_INTERVAL,
        "health_uri": READY_PATH,
        "health_interval": f"{HEALTH_INTERVAL_MS}ms",
        "health_timeout": HEALTH_TIMEOUT,
        "health_fails": str(HEALTH_FAILS),
        "health_passes": str(HEALTH_PASSES),
        "dial_timeout": DIAL_TIMEOUT,
    }
