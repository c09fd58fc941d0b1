"""Fixed blue/green slots per web (and websocket) service per server (docs/cutover.md).

Why fixed slots: every Caddy config change closes idle client keep-alive
connections, so an ordinary deploy must change no gateway config at all. The
Caddyfile lists both slots of every server once; Caddy's active health check
(``/.keystone/ready`` every 250 ms) decides which of them gets traffic. A slot
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
PORT_LIMIT = 40000
"""Replica 1 of a slot: ``PORT_BASE + 2 * service id + slot`` (service ids below 10000)."""
EXTRA_PORT_BASE = 40000
EXTRA_PORT_LIMIT = 60000
"""Replicas 2..MAX_REPLICAS of a slot: ``MAX_REPLICAS - 1`` ports per slot from here."""
MAX_REPLICAS = 8
"""Replicas of one service per server (``Service.desired_replicas``, issue 20.2)."""

# Caddy's view of the slots; the gateway renders these for every route of a web service.
# The ready path is answered from marker files by the replica's web server, never by PHP,
# so a saturated app does not fail it; still, a slot is marked down only after
# HEALTH_FAILS failed checks, each allowed HEALTH_TIMEOUT (sized for a loaded server).
HEALTH_INTERVAL_MS = 250
HEALTH_TIMEOUT = "5s"
HEALTH_FAILS = 2
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


def _check_index(index: int) -> int:
    index = int(index)
    if not 0 <= index < MAX_REPLICAS:
        raise ValueError(f"replica index {index} is outside 0..{MAX_REPLICAS - 1}")
    return index


def _suffix(index: int) -> str:
    """'' for a slot's first replica (the names of one-replica Keystone), ``-r2`` .. for more."""
    return "" if _check_index(index) == 0 else f"-r{index + 1}"


def slot_alias(service_name: str, service_id: int, slot: str, index: int = 0) -> str:
    """``web-12-blue.internal``: the same-server address of a slot's first replica (ids keep
    orgs apart); ``web-12-blue-r2.internal`` for its second, and so on. One alias per
    replica, so the gateway lists (and health-checks) each replica as its own upstream."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    return f"{slug(service_name, 30)}-{int(service_id)}-{slot}{_suffix(index)}.internal"


def slot_port(service_id: int, slot: str, index: int = 0) -> int:
    """The fixed private-network port of a slot's replica, unique per Keystone: two per
    service for the first replicas (as before replicas existed), ``MAX_REPLICAS - 1`` per
    slot in a range of their own for the others."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}")
    if _check_index(index) == 0:
        port = PORT_BASE + 2 * int(service_id) + SLOTS.index(slot)
        limit = PORT_LIMIT
    else:
        port = EXTRA_PORT_BASE + (2 * int(service_id) + SLOTS.index(slot)) * (MAX_REPLICAS - 1) \
            + index - 1
        limit = EXTRA_PORT_LIMIT
    if port >= limit:
        raise ValueError(f"service id {service_id} is beyond the slot port range")
    return port


def container_name(service_name: str, service_id: int, slot: str, operation_id: int,
                   index: int = 0) -> str:
    """A unique container name per deploy: ``ks-web-12-green-op57`` (``-r2`` for the slot's
    second replica)."""
    return (f"ks-{slug(service_name, 30)}-{int(service_id)}-{slot}-op{int(operation_id)}"
            f"{_suffix(index)}")


def project_name(service_id: int, slot: str, operation_id: int, index: int = 0) -> str:
    """A unique Compose project per deploy, so two generations never share one."""
    return f"ks-svc-{int(service_id)}-{slot}-op{int(operation_id)}{_suffix(index)}"


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
    index: int = 0


def upstreams(service_name: str, service_id: int, gateway_server_id: int,
              servers: Iterable[tuple[int, str | None]], replicas: int = 1,
              remote_address: Callable[[int, int], str] | None = None) -> list[Upstream]:
    """Every slot of every server of a web service, as seen from one gateway's server.

    ``servers`` is ``(server_id, private_ip)`` for each server the service runs
    on. The gateway's own server is reached through the Docker aliases; other
    servers through their private IP and the slot's fixed port. A server with
    no private IP cannot be reached from elsewhere and raises. ``remote_address``
    (server id, slot port) -> ``ip:port``, when given, names another server's slot
    instead: the deploy passes the slot's Endpoint (app.endpoints), which is also how
    the public fallback a server explicitly allows (SPEC 14) reaches the gateways.
    ``replicas`` per slot (``Service.desired_replicas``): each replica is an upstream of
    its own.
    """
    count = max(1, min(int(replicas), MAX_REPLICAS))
    out: list[Upstream] = []
    for server_id, private_ip in sorted(servers, key=lambda s: (s[0] != gateway_server_id, s[0])):
        for slot in SLOTS:
            for index in range(count):
                if server_id == gateway_server_id:
                    out.append(Upstream(
                        f"{slot_alias(service_name, service_id, slot, index)}:{APP_PORT}",
                        server_id, slot, True, index))
                    continue
                port = slot_port(service_id, slot, index)
                if remote_address is not None:
                    address = remote_address(server_id, port)
                else:
                    if not private_ip:
                        raise ValueError(f"server {server_id} has no private IP: other servers "
                                         "cannot reach its replicas")
                    address = f"{private_ip}:{port}"
                out.append(Upstream(address, server_id, slot, False, index))
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
