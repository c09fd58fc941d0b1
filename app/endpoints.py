"""Endpoints (SPEC 14): where a service is reached, and from where.

The routing preference of SPEC 14, in one place:

1. same server: the deterministic alias on the shared Docker network
   (``docker_network`` endpoint);
2. another server: the service server's private IP and the published port
   (``private_network`` endpoint, only when the service is exposed on it);
3. a server without a private network: its public IP (``public`` endpoint), ONLY when
   the server's ``public_fallback`` opt-in is on (set on the server's page, shown there
   with a warning). The port is then opened to the organisation's other servers' public
   IPs, never to everyone (app.services_ops.steps.open_firewall).

A deploy writes the :class:`~app.models.Endpoint` rows (:func:`upsert_service_endpoints`,
:func:`upsert_slot_endpoint`); attachments' managed variables (``DB_HOST``/``DB_PORT``,
``REDIS_HOST``/``REDIS_PORT``) and the gateways' cross-server upstreams read them back
(:func:`consumer_endpoint`, :func:`slot_endpoint_address`). The periodic health check
(app.health) keeps each row's ``health_status`` in line with its replica.

Before a service's first deploy there is no row yet: the endpoint it *will* have is
computed by the same function the deploy writes with (:func:`planned_endpoints`), so an
attachment made before the deploy names the same host and port.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from app.extensions import db
from app.models import Endpoint, Server
from app.models.enums import EndpointScope, HealthStatus

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service, ServiceReplica

__all__ = ["Unreachable", "EndpointSpec", "cross_server_address", "planned_endpoints",
           "upsert_service_endpoints", "consumer_endpoint", "peer_sources",
           "upsert_slot_endpoint", "slot_endpoint_address", "set_replica_endpoint_health",
           "retire_endpoints_of_gone_replicas",
           "PRIORITY"]

PRIORITY = {EndpointScope.DOCKER_NETWORK: 10, EndpointScope.PRIVATE_NETWORK: 20,
            EndpointScope.PUBLIC: 30}


class Unreachable(ValueError):
    """No endpoint another server may use; the message says why and what to change."""


@dataclass(frozen=True)
class EndpointSpec:
    scope: EndpointScope
    hostname: str
    ip_address: str | None
    port: int
    priority: int


def _ipv4(value: str | None) -> str | None:
    try:
        address = ipaddress.ip_address(str(value or ""))
    except ValueError:
        return None
    return str(address) if address.version == 4 else None


def cross_server_address(server: Server) -> tuple[EndpointScope, str]:
    """The address the organisation's other servers use to reach ``server``: its private IP;
    without one, its public IP if (and only if) the server allows the public fallback.
    Raises :class:`Unreachable` with the reason otherwise."""
    private = _ipv4(server.private_ip)
    if private:
        return EndpointScope.PRIVATE_NETWORK, private
    if not server.public_fallback:
        raise Unreachable(f"{server.name} has no private IP: other servers cannot reach it. "
                          "Attach it to a private network, or allow the public-network "
                          "fallback on its page (the port is then opened to the "
                          "organisation's servers' public IPs only)")
    public = _ipv4(server.public_ip)
    if not public:
        raise Unreachable(f"{server.name} has neither a private IP nor a public IPv4 address: "
                          "other servers cannot reach it")
    return EndpointScope.PUBLIC, public


def peer_sources(server: Server, scope: EndpointScope) -> list[str]:
    """Who may connect to a port ``server`` publishes in ``scope``: the organisation's
    servers' private addresses (private network), or the OTHER servers' public addresses
    (public fallback; never everyone)."""
    column = Server.private_ip if scope == EndpointScope.PRIVATE_NETWORK else Server.public_ip
    query = sa.select(column).where(Server.organisation_id == server.organisation_id,
                                    column.is_not(None))
    if scope == EndpointScope.PUBLIC:
        query = query.where(Server.id != server.id)
    addresses = {a for a in (_ipv4(v) for v in db.session.execute(query).scalars()) if a}
    return sorted(addresses, key=ipaddress.ip_address)


# --------------------------------------------------------------------------- services

def planned_endpoints(service: "Service", port: int | None,
                      published_port: int | None = None) -> list[EndpointSpec]:
    """The endpoints a deploy of ``service`` (Postgres, Valkey, Caddy) records: its alias on
    the Docker network, and, when it is exposed to other servers, its cross-server address
    (private, or public by the server's opt-in). A server that cannot be reached gets no
    cross-server endpoint (the consumer's lookup says why)."""
    if port is None:
        return []
    from app.drivers.base import service_alias
    out = [EndpointSpec(EndpointScope.DOCKER_NETWORK, service_alias(service), None, int(port),
                        PRIORITY[EndpointScope.DOCKER_NETWORK])]
    server = service.server
    if (service.config or {}).get("expose_private") and server is not None:
        try:
            scope, ip = cross_server_address(server)
        except Unreachable:
            return out
        out.append(EndpointSpec(scope, ip, ip, int(published_port or port), PRIORITY[scope]))
    return out


def upsert_service_endpoints(service: "Service", replica: "ServiceReplica", port: int | None,
                             published_port: int | None = None) -> None:
    """Write ``service``'s endpoints after a deploy (healthy: the deploy waited for it);
    rows no longer wanted go."""
    wanted = planned_endpoints(service, port, published_port)
    if not wanted:
        return
    existing = {(e.scope, e.hostname): e for e in service.endpoints}
    for spec in wanted:
        ep = existing.pop((spec.scope, spec.hostname), None)
        if ep is None:
            ep = Endpoint(service=service, scope=spec.scope, hostname=spec.hostname)
            db.session.add(ep)
        ep.service_replica_id = replica.id
        ep.ip_address, ep.port, ep.priority = spec.ip_address, spec.port, spec.priority
        ep.health_status = HealthStatus.HEALTHY
    for ep in existing.values():
        db.session.delete(ep)


def consumer_endpoint(service: "Service", consumer_server_id: int | None) -> tuple[str, int]:
    """``(host, port)`` by which something on ``consumer_server_id`` reaches ``service``.

    Read from the service's Endpoint rows (the planned ones before its first deploy): the
    Docker-network endpoint on the same server (or while the consumer's server is not known
    yet), otherwise the best cross-server endpoint. Raises :class:`Unreachable` with the
    reason when there is none."""
    from app.drivers import get_driver
    rows = sorted(service.endpoints, key=lambda e: (e.priority, e.id or 0))
    specs = [EndpointSpec(e.scope, e.hostname, e.ip_address, e.port, e.priority) for e in rows]
    planned = planned_endpoints(service, get_driver(service).internal_port())
    if not any(s.scope == EndpointScope.DOCKER_NETWORK for s in specs):
        specs = planned
    elif not any(s.scope != EndpointScope.DOCKER_NETWORK for s in specs):
        # Exposed since its last deploy: the address the deploy that publishes it writes.
        specs += [s for s in planned if s.scope != EndpointScope.DOCKER_NETWORK]
    if not specs:
        raise Unreachable(f"{service.name} has no endpoint (it listens on no port)")
    same = consumer_server_id is None or service.server_id is None \
        or consumer_server_id == service.server_id
    if same:
        local = next(s for s in specs if s.scope == EndpointScope.DOCKER_NETWORK)
        return local.hostname, local.port
    remote = [s for s in specs if s.scope != EndpointScope.DOCKER_NETWORK]
    server = service.server
    if not remote:
        if not (service.config or {}).get("expose_private"):
            raise Unreachable(
                f"{service.name} runs on {server.name}, another server than this environment: "
                "turn on 'reachable from the private network' for it first")
        cross_server_address(server)  # raises with the reason
        raise Unreachable(f"{service.name} on {server.name} cannot be reached from other "
                          "servers")
    best = remote[0]
    consumer = db.session.get(Server, consumer_server_id)
    if best.scope == EndpointScope.PRIVATE_NETWORK and consumer is not None \
            and not _ipv4(consumer.private_ip):
        raise Unreachable(f"{consumer.name} has no private IP: it cannot reach {service.name} "
                          f"on {server.name}'s private network")
    return best.hostname, best.port


# --------------------------------------------------------------------------- Laravel slots

def upsert_slot_endpoint(service: "Service", replica: "ServiceReplica", server: Server,
                         port: int) -> EndpointSpec:
    """The cross-server endpoint of a Laravel slot on ``server`` (the fixed published port
    the other servers' gateways dial). One row per (service, address, port): the slot's
    newest replica owns it. Raises :class:`Unreachable` when the server cannot be reached."""
    scope, ip = cross_server_address(server)
    spec = EndpointSpec(scope, ip, ip, int(port), PRIORITY[scope])
    rows = db.session.execute(sa.select(Endpoint).where(
        Endpoint.service_id == service.id, Endpoint.port == int(port),
        Endpoint.scope != EndpointScope.DOCKER_NETWORK)).scalars().all()
    ep = next((e for e in rows if e.ip_address == ip), None)
    for stale in rows:
        if stale is not ep and stale.replica is not None \
                and stale.replica.server_id == server.id:
            db.session.delete(stale)  # the server's address or its scope changed
    if ep is None:
        ep = Endpoint(service_id=service.id, scope=scope, hostname=ip)
        db.session.add(ep)
    ep.service_replica_id = replica.id
    ep.scope, ep.hostname, ep.ip_address = scope, ip, ip
    ep.port, ep.priority = spec.port, spec.priority
    ep.health_status = HealthStatus.STARTING
    return spec


def slot_endpoint_address(service_id: int, server: Server, port: int) -> str:
    """``ip:port`` a gateway on another server dials for a slot: the recorded endpoint of
    that slot on ``server``; before its first replica there, the address it will get."""
    from app.models import ServiceReplica
    row = db.session.execute(
        sa.select(Endpoint).join(ServiceReplica, Endpoint.service_replica_id == ServiceReplica.id)
        .where(Endpoint.service_id == service_id, Endpoint.port == int(port),
               Endpoint.scope != EndpointScope.DOCKER_NETWORK,
               ServiceReplica.server_id == server.id)
        .order_by(Endpoint.priority, Endpoint.id.desc())).scalars().first()
    if row is not None:
        return f"{row.ip_address or row.hostname}:{row.port}"
    _, ip = cross_server_address(server)
    return f"{ip}:{int(port)}"


# --------------------------------------------------------------------------- health

def set_replica_endpoint_health(replica_id: int, health: str | HealthStatus) -> int:
    """The periodic check's verdict on a replica, copied to the endpoints it serves."""
    res = db.session.execute(sa.update(Endpoint).where(
        Endpoint.service_replica_id == replica_id).values(
        health_status=HealthStatus(health)).execution_options(synchronize_session=False))
    return res.rowcount or 0


def retire_endpoints_of_gone_replicas() -> int:
    """Endpoints whose replica Keystone stopped or removed (an old slot after a deploy):
    their health is no longer known (the check watches running replicas only)."""
    from app.models import ServiceReplica
    from app.models.enums import ReplicaStatus
    gone = sa.select(ServiceReplica.id).where(
        ServiceReplica.status.in_((ReplicaStatus.REMOVED, ReplicaStatus.STOPPED)))
    res = db.session.execute(sa.update(Endpoint).where(
        Endpoint.service_replica_id.in_(gone),
        Endpoint.health_status != HealthStatus.UNKNOWN).values(
        health_status=HealthStatus.UNKNOWN).execution_options(synchronize_session=False))
    return res.rowcount or 0
