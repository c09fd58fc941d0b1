"""The deploy planner: desired state + facts -> an ordered plan. PURE (no I/O, no ORM).

The handler builds a :class:`EnvironmentSnapshot` from the database, the
planner decides, the handler runs the phases in order (pyinfra's "plan from
facts and emit explicit no-ops"; Kamal's builders return, one layer runs).

Rules (SPEC 17, 18, 8):

* Only ``with_environment`` services are deployed, and only those whose
  artifact (image digest), revision or configuration changed. Dependency
  services (databases, caches) are checked, never redeployed. A deploy where
  nothing changed says so and touches nothing.
* Migrations run ONCE per deploy, in a one-off container of the new artifact,
  by the first changed service whose ``migration_mode`` is ``auto`` (web before
  worker), before the switch (``pre_switch``, default) or after it.
* New replicas go to the free slot of each server; old ones are drained and
  stopped only after every new replica of the service is healthy and the
  gateway has seen it.
* The scheduler (``single`` mode) is released on the old runner and the
  deploy waits for a running ``schedule:run`` to finish BEFORE it is claimed on
  the new replica: never two runners, not even during a cutover.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from app.deploys.slots import MAX_REPLICAS, SLOTS, other_slot
from app.drivers.laravel.settings import LaravelSettings, SettingsError

WITH_ENVIRONMENT = "with_environment"
ROLE_ORDER = {"web": 0, "websocket": 1, "worker": 2}

# The health check and the stop grace period are owned by the Laravel driver's typed
# settings (app.drivers.laravel.settings): their defaults live there, once.
DEFAULT_DRAIN_SECONDS = 2.0


class PlanError(ValueError):
    """The desired state cannot be deployed as it is; the message says why."""


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class ReplicaFact:
    id: int
    server_id: int
    container_name: str
    slot: str | None
    image_digest: str | None
    status: str  # ReplicaStatus value
    health: str = "unknown"
    revision: int | None = None
    config_hash: str | None = None
    index: int = 0  # its place in the slot: 0 for the first replica, 1 for the second, ...

    @property
    def live(self) -> bool:
        return self.status in ("starting", "running", "draining")


@dataclass(frozen=True)
class ServiceFact:
    id: int
    name: str
    deploy_policy: str
    roles: tuple[str, ...]
    desired_revision: int
    config_hash: str
    server_ids: tuple[int, ...]
    replicas: tuple[ReplicaFact, ...] = ()
    config: Mapping = field(default_factory=dict)
    category: str = "application"
    desired_replicas: int = 1

    @property
    def replicas_per_server(self) -> int:
        """How many replicas each server runs (issue 20.2): ``desired_replicas`` for web and
        worker services; a websocket (Reverb) service keeps one, its connections live in
        one process."""
        return replica_count(self.primary_role, self.desired_replicas)

    @property
    def live_replicas(self) -> tuple[ReplicaFact, ...]:
        return tuple(r for r in self.replicas if r.live)

    @property
    def is_web(self) -> bool:
        return "web" in self.roles

    @property
    def primary_role(self) -> str:
        return primary_role(self.roles)


def primary_role(roles) -> str:
    """The role a service is deployed as: web before websocket before worker."""
    for role in sorted(roles or (), key=lambda r: ROLE_ORDER.get(r, 9)):
        return role
    return "web"


def service_replicas(roles, desired: int | None) -> int:
    """Replicas per server of a service with ``roles`` and ``desired_replicas``."""
    return replica_count(primary_role(roles or ("web",)), desired)


@dataclass(frozen=True)
class SchedulerFact:
    enabled: bool = True
    mode: str = "single"  # or "every_replica"
    target_service_id: int | None = None
    runner_replica_id: int | None = None


@dataclass(frozen=True)
class EnvironmentSnapshot:
    environment_id: int
    services: tuple[ServiceFact, ...]
    scheduler: SchedulerFact = SchedulerFact()
    dependencies: tuple[str, ...] = ()  # names of attached dependency services (checked only)


# --------------------------------------------------------------------------- outputs

@dataclass(frozen=True)
class Placement:
    """One new replica: in ``slot`` on ``server_id``, replacing ``old`` (maybe none)."""

    server_id: int
    slot: str
    old: tuple[ReplicaFact, ...] = ()
    count: int = 1  # new replicas in the slot (indices 0 .. count - 1)


@dataclass(frozen=True)
class ServiceChange:
    service_id: int
    name: str
    role: str
    reasons: tuple[str, ...]
    placements: tuple[Placement, ...]
    health: Mapping
    drain_seconds: float
    stop_timeout: int

    @property
    def old_replicas(self) -> tuple[ReplicaFact, ...]:
        return tuple(r for p in self.placements for r in p.old)


@dataclass(frozen=True)
class Migration:
    service_id: int
    command: str
    timing: str
    server_id: int


@dataclass(frozen=True)
class Phase:
    """One ordered phase of the deploy; ``kind`` is what the handler dispatches on."""

    kind: str
    service_id: int | None = None
    detail: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class DeployPlan:
    digest: str
    changes: tuple[ServiceChange, ...]
    unchanged: tuple[tuple[str, str], ...]  # (service name, why it is left alone)
    migration: Migration | None
    phases: tuple[Phase, ...]

    @property
    def noop(self) -> bool:
        return not self.changes and not any(p.kind.startswith("scheduler") for p in self.phases)

    def change_for(self, service_id: int) -> ServiceChange | None:
        return next((c for c in self.changes if c.service_id == service_id), None)

    def summary(self) -> str:
        if self.noop:
            return "Nothing changed: every service already runs this artifact and configuration."
        parts = [f"{c.name} ({', '.join(c.reasons)})" for c in self.changes]
        return "Deploying " + "; ".join(parts) if parts else "Moving the scheduler only."


# --------------------------------------------------------------------------- helpers

SCALED_ROLES = ("web", "worker")


def replica_count(role: str, desired: int | None) -> int:
    """Replicas per server of a service whose primary role is ``role``, within 1..MAX."""
    if role not in SCALED_ROLES:
        return 1
    try:
        return max(1, min(int(desired or 1), MAX_REPLICAS))
    except (TypeError, ValueError):
        return 1


def config_hash(config: Mapping, roles: Iterable[str], environment: Mapping[str, str],
                extra: Mapping | None = None) -> str:
    """A short stable hash of what a replica's runtime depends on besides the image.

    The environment values are mixed in (so a changed variable redeploys) but
    never stored: only this digest of everything together is.
    """
    payload = json.dumps({"config": _runtime_config(config), "roles": sorted(roles),
                          "env": sorted(environment.items()), "extra": extra or {}},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Keys of Service.config that do not change what a replica runs.
_NON_RUNTIME_KEYS = frozenset({"migration_mode", "migration_timing", "migration_command",
                               "slot_ports", "notes"})


def _runtime_config(config: Mapping) -> dict:
    return {k: v for k, v in (config or {}).items() if k not in _NON_RUNTIME_KEYS}


def migration_settings(config: Mapping, where: str = "service") -> tuple[str, str, str]:
    """(mode, timing, command) with SPEC 18's defaults: auto, pre_switch, migrate --force
    (the typed settings', app.drivers.laravel.settings)."""
    m = _settings(config, where).migration
    return m.mode, m.timing, m.command


def _settings(config: Mapping, where: str) -> LaravelSettings:
    try:
        return LaravelSettings.from_config(config, where)
    except SettingsError as exc:
        raise PlanError(str(exc)) from None


def health_settings(config: Mapping, where: str = "service") -> dict:
    """Health check of new replicas: path, interval, timeout, retries (the typed settings')."""
    return _settings(config, where).health.as_dict()


def drain_seconds(config: Mapping) -> float:
    value = (config or {}).get("drain_seconds", DEFAULT_DRAIN_SECONDS)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PlanError("drain_seconds: must be a number") from None
    if not 0 <= value <= 600:
        raise PlanError("drain_seconds: must be between 0 and 600")
    return value


def stop_timeout(role: str, config: Mapping, drain: float, where: str = "service") -> int:
    """Seconds between SIGTERM and SIGKILL: the role's grace (the typed settings'), and at
    least the drain window."""
    grace = _settings(config, where).stop.grace(role)
    return max(int(grace), int(drain + 0.999), 1)


def _why_changed(service: ServiceFact, digest: str) -> tuple[str, ...]:
    live = service.live_replicas
    if not live:
        return ("first deploy",) if not service.replicas else ("no replica running",)
    reasons = []
    if any(r.image_digest != digest for r in live):
        reasons.append("new artifact")
    if any(r.revision is not None and r.revision != service.desired_revision for r in live):
        reasons.append(f"revision {service.desired_revision}")
    if any(r.config_hash != service.config_hash for r in live):
        reasons.append("configuration changed")
    placed = {r.server_id for r in live}
    if placed != set(service.server_ids):
        reasons.append("placement changed")
    if any(r.health == "unhealthy" or r.status == "failed" for r in live):
        reasons.append("a replica is unhealthy")
    # Planning holds the environment's lock, so a replica still "starting" now was left by
    # a deploy that died before its checks passed (its worker SIGKILLed): it never served.
    # Without this, a first deploy interrupted there left the environment "deployed" by a
    # retry that changed nothing, with no replica running.
    if any(r.status == "starting" for r in live):
        reasons.append("an interrupted deploy left a replica that never passed its checks")
    if not reasons:
        per_server: dict[int, int] = {}
        for r in live:
            per_server[r.server_id] = per_server.get(r.server_id, 0) + 1
        if any(n != service.replicas_per_server for n in per_server.values()):
            # A scale (service_scale) that did not finish: this deploy starts the count.
            reasons.append(f"{service.replicas_per_server} replica"
                           f"{'s' if service.replicas_per_server != 1 else ''} per server")
    return tuple(reasons)


def _placements(service: ServiceFact) -> tuple[Placement, ...]:
    by_server: dict[int, list[ReplicaFact]] = {}
    for r in service.live_replicas:
        by_server.setdefault(r.server_id, []).append(r)
    out = []
    for server_id in service.server_ids:
        old = tuple(sorted(by_server.pop(server_id, []), key=lambda r: r.id))
        used = {r.slot for r in old}
        # The slot in use is the serving replica's; an interrupted deploy's leftover
        # ("starting", never armed) does not count, so its slot is the one reused.
        serving = [r for r in old if r.status != "starting"]
        current = serving[-1].slot if serving else None
        slot = other_slot(current)
        if slot in used:
            # Both slots busy: an interrupted deploy left a replica behind. Its slot is the
            # one to reuse when it never passed its checks ("starting": never armed, so no
            # gateway sends it anything); never the slot of the replica that is serving.
            # The deploy removes the leftover before it starts the new one there.
            leftovers = [r for r in old if r.status == "starting" and r.slot in SLOTS]
            if leftovers:
                slot = leftovers[-1].slot
            else:
                slot = old[0].slot if old[0].slot in SLOTS else SLOTS[0]
        out.append(Placement(server_id, slot, old, service.replicas_per_server))
    # Servers the service no longer runs on: their replicas are retired with the cutover.
    for server_id, old in sorted(by_server.items()):
        out.append(Placement(server_id, "", tuple(old)))
    return tuple(out)


# --------------------------------------------------------------------------- planner

def plan_deploy(snapshot: EnvironmentSnapshot, digest: str, *, force: bool = False) -> DeployPlan:
    """Decide what an environment deploy of ``digest`` does, phase by phase."""
    if not digest:
        raise PlanError("the artifact has no image digest")
    changes: list[ServiceChange] = []
    unchanged: list[tuple[str, str]] = []
    for service in sorted(snapshot.services, key=lambda s: (ROLE_ORDER.get(s.primary_role, 9), s.id)):
        if service.deploy_policy != WITH_ENVIRONMENT:
            unchanged.append((service.name, f"deploy policy {service.deploy_policy}"))
            continue
        if not service.server_ids:
            raise PlanError(f"{service.name}: no server to run on; place the service on a server")
        reasons = _why_changed(service, digest)
        if force and not reasons:
            reasons = ("redeploy requested",)
        if not reasons:
            unchanged.append((service.name, "already runs this artifact and configuration"))
            continue
        role = service.primary_role
        drain = drain_seconds(service.config) if service.is_web else 0.0
        changes.append(ServiceChange(
            service_id=service.id, name=service.name, role=role, reasons=reasons,
            placements=_placements(service), health=health_settings(service.config, service.name),
            drain_seconds=drain,
            stop_timeout=stop_timeout(role, service.config, drain, service.name)))

    migration = _migration(snapshot, changes)
    phases: list[Phase] = []
    if changes:
        phases.append(Phase("check_dependencies"))
        phases.append(Phase("pre_switch"))
        if migration and migration.timing == "pre_switch":
            phases.append(Phase("migrate", migration.service_id))
        for c in changes:
            phases.append(Phase("start", c.service_id))
        for c in changes:
            phases.append(Phase("health", c.service_id))
        if any(snapshot_service(snapshot, c.service_id).is_web for c in changes):
            phases.append(Phase("await_gateway"))
    phases.extend(_scheduler_phases(snapshot, changes))
    for c in changes:
        if c.old_replicas:
            if snapshot_service(snapshot, c.service_id).is_web:
                phases.append(Phase("drain", c.service_id))
            phases.append(Phase("stop", c.service_id))
    if migration and migration.timing == "post_switch":
        phases.append(Phase("migrate", migration.service_id))
    if changes:
        phases.append(Phase("record"))
    return DeployPlan(digest=digest, changes=tuple(changes), unchanged=tuple(unchanged),
                      migration=migration, phases=tuple(phases))


def snapshot_service(snapshot: EnvironmentSnapshot, service_id: int) -> ServiceFact:
    for s in snapshot.services:
        if s.id == service_id:
            return s
    raise KeyError(service_id)


def _migration(snapshot: EnvironmentSnapshot, changes: list[ServiceChange]) -> Migration | None:
    """At most one migration per deploy: the first changed service with mode auto."""
    for change in changes:  # already web first
        service = snapshot_service(snapshot, change.service_id)
        mode, timing, command = migration_settings(service.config)
        if mode != "auto":
            continue
        server_id = next((p.server_id for p in change.placements if p.slot), service.server_ids[0])
        return Migration(service.id, command, timing, server_id)
    return None


def _scheduler_phases(snapshot: EnvironmentSnapshot, changes: list[ServiceChange]) -> list[Phase]:
    """Release on the old runner(s), wait for a running schedule:run, then claim on the new.

    Runs after the new replicas are healthy and before the old ones are
    drained and stopped, so the gap without a runner is seconds, and there
    is never a moment with two.
    """
    sched = snapshot.scheduler
    target = next((s for s in snapshot.services if s.id == sched.target_service_id), None)
    phases: list[Phase] = []
    if not sched.enabled or target is None:
        # A runner left from an earlier setting is released (stopping it is enough).
        if sched.runner_replica_id is not None:
            phases.append(Phase("scheduler_release", None,
                                {"replica_ids": (sched.runner_replica_id,), "reason": "disabled"}))
        return phases
    change = next((c for c in changes if c.service_id == target.id), None)
    if sched.mode == "every_replica":
        if change is None:
            return phases
        old_ids = tuple(r.id for r in change.old_replicas)
        if old_ids:
            phases.append(Phase("scheduler_release", target.id, {"replica_ids": old_ids}))
        phases.append(Phase("scheduler_claim", target.id, {"every_replica": True}))
        return phases
    # single
    if change is None:
        live = {r.id for r in target.live_replicas}
        if sched.runner_replica_id in live:
            return phases  # nothing to move
        if not target.live_replicas:
            return phases
        # The runner is gone (replica replaced out of band): claim on an existing one.
        chosen = sorted(target.live_replicas, key=lambda r: (r.server_id, r.id))[0]
        if sched.runner_replica_id is not None:
            phases.append(Phase("scheduler_release", target.id,
                                {"replica_ids": (sched.runner_replica_id,)}))
        phases.append(Phase("scheduler_claim", target.id, {"replica_id": chosen.id}))
        return phases
    # Every old replica of the target is released, not just the recorded runner:
    # removing a flag that is not set costs nothing, a stale record costs two runners.
    release = tuple(r.id for r in change.old_replicas)
    if sched.runner_replica_id is not None and sched.runner_replica_id not in release:
        release += (sched.runner_replica_id,)
    if release:
        phases.append(Phase("scheduler_release", target.id, {"replica_ids": release}))
    first = next(p for p in change.placements if p.slot)
    phases.append(Phase("scheduler_claim", target.id,
                        {"server_id": first.server_id, "slot": first.slot}))
    return phases
