"""A server's capacity against the resource limits of what runs on it (issue 20.2).

The service owns its limits (``Service.default_cpu_limit``, ``default_memory_limit_mb``:
issue 21.7, SPEC 2): every replica is created with them, so a server commits
``limit x replicas per server`` of each service placed on it. The capacity is the server's
``facts["capacity"]`` (cores from ``nproc``, memory from /proc/meminfo), recorded by the
metrics collector (app.metrics.capacity_facts). Over-commit is allowed (Docker's limits are
ceilings, not reservations) but shown: the resources page warns when the committed CPUs or
memory exceed the server's.

:func:`server_load` is pure; :func:`loads_for` reads the database.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Commitment:
    """One service on one server: its replicas there and each replica's limits."""

    service: str
    replicas: int
    cpus: float | None
    memory_mb: int | None


@dataclass(frozen=True)
class ServerLoad:
    server_id: int
    server: str
    cores: int | None
    memory_mb: int | None
    rows: tuple[Commitment, ...]
    cpus_committed: float = 0.0
    memory_committed_mb: int = 0
    unlimited: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def server_load(server_id: int, server: str, capacity: dict | None,
                rows: list[Commitment]) -> ServerLoad:
    """Sum ``limit x replicas`` per resource and compare with ``capacity`` (PURE)."""
    capacity = capacity or {}
    cores = capacity.get("cores")
    memory = capacity.get("mem_total_mb")
    cpus = round(sum(r.cpus * r.replicas for r in rows if r.cpus is not None), 2)
    mem = int(sum(r.memory_mb * r.replicas for r in rows if r.memory_mb is not None))
    unlimited = tuple(r.service for r in rows if r.cpus is None or r.memory_mb is None)
    warnings = []
    if cores and cpus > cores:
        warnings.append(f"{server}: CPU limits add up to {cpus:g} of {cores} cores "
                        f"({100 * cpus / cores:.0f} %): replicas compete for CPU under load")
    if memory and mem > memory:
        warnings.append(f"{server}: memory limits add up to {mem} of {memory} MiB "
                        f"({100 * mem / memory:.0f} %): the kernel's OOM killer may stop "
                        "containers below their limit")
    if not capacity.get("cores"):
        warnings.append(f"{server}: capacity not measured yet (the metrics collector "
                        "records it within a minute of the worker running)")
    return ServerLoad(server_id, server, cores, memory, tuple(rows), cpus, mem, unlimited,
                      tuple(warnings))


def loads_for(server_ids: list[int], *, override: dict | None = None) -> list[ServerLoad]:
    """The load of each server in ``server_ids`` from the database.

    ``override`` (service id -> (cpus, memory_mb, replicas)) shows a form's values before
    they are saved."""
    import sqlalchemy as sa

    from app.deploys.planning import service_replicas
    from app.deploys.service import service_server_ids
    from app.extensions import db
    from app.models import Server, Service
    from app.models.enums import ServiceCategory

    override = override or {}
    servers = db.session.execute(sa.select(Server).where(Server.id.in_(server_ids or [-1]))
                                 .order_by(Server.id)).scalars().all()
    if not servers:
        return []
    org = servers[0].organisation_id
    services = db.session.execute(sa.select(Service).where(Service.organisation_id == org)
                                  .order_by(Service.id)).scalars().all()
    out = []
    for server in servers:
        rows = []
        for svc in services:
            if server.id not in service_server_ids(svc):
                continue
            cpus, mem, replicas = svc.default_cpu_limit, svc.default_memory_limit_mb, (
                service_replicas(svc.process_roles, svc.desired_replicas)
                if svc.category == ServiceCategory.APPLICATION else 1)
            if svc.id in override:
                cpus, mem, replicas = override[svc.id]
            rows.append(Commitment(svc.name, replicas, cpus, mem))
        out.append(server_load(server.id, server.name,
                               (server.facts or {}).get("capacity"), rows))
    return out
