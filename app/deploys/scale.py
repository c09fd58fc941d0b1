"""The ``service_scale`` operation (issue 20.2): replicas per server up or down, no cutover.

    service_scale (service)
      add:     start each missing replica in the slot that serves now, health-check it,
               list it on the gateways (slice_configure), arm it, wait until every
               gateway has it in rotation
      remove:  drain each surplus replica, wait until every gateway took it out of
               rotation, the drain window, take it off the gateways (slice_configure),
               stop it

The replicas that stay are not touched: no new container, no arm, no drain. The new ones
run what the others run (the same artifact, revision and configuration hash), so a scale
refuses to start when the service changed since its last deploy: a deploy of the
environment is what brings a change, with as many replicas per server as asked.

Workers scale the same way, with the worker's own check (it keeps running) instead of the
gateways. A websocket (Reverb) service keeps one replica per server
(:func:`app.deploys.planning.replica_count`).

Started by :func:`start_scale` (the environment page's replicas form): the environment's
lock, so a scale and a deploy of one environment never overlap.
"""
from __future__ import annotations

from app.builds.artifacts import image_ref
from app.deploys.handlers import EnvironmentDeploy
from app.deploys.planning import (Phase, PlanError, Placement, ReplicaFact, ServiceChange,
                                  drain_seconds, health_settings, stop_timeout)
from app.deploys.values import environment_secrets, environment_values, snapshot
from app.extensions import db
from app.models import BuildArtifact, Operation, Service, ServiceReplica
from app.models.enums import OperationKind, ReplicaStatus, SchedulerMode, ServiceCategory
from app.operations import OperationContext, StepFailed, operation_handler, start_operation


class ScaleRefused(ValueError):
    """The scale cannot start as things are; the message says why and what to do."""


def start_scale(service: Service, replicas: int, user=None, *, enqueue: bool = True,
                on_conflict: str = "queue") -> Operation | None:
    """Record ``replicas`` per server on ``service`` and start the scale that applies it.

    Returns None when nothing runs yet (the next deploy starts that many replicas)."""
    from app.deploys.planning import service_replicas
    env = service.environment
    if env is None or service.category != ServiceCategory.APPLICATION:
        raise ScaleRefused("Only an environment's application services have replicas.")
    service.desired_replicas = int(replicas)
    running = [r for r in service.replicas if r.status == ReplicaStatus.RUNNING]
    if not running:
        db.session.commit()
        return None
    count = service_replicas(service.process_roles, service.desired_replicas)
    return start_operation(
        OperationKind.SERVICE_SCALE, target_type="service", target_id=service.id,
        organisation_id=service.organisation_id, user=user, params={"replicas": count},
        lock_keys=[f"environment:{env.id}"],
        summary=f"Scale {service.name} to {count} replica{'s' if count != 1 else ''} per server",
        on_conflict=on_conflict, enqueue=enqueue)


class ServiceScale(EnvironmentDeploy):
    """A scale reuses the deploy's steps: start and check a replica, the gateways' log,
    arm, drain, stop (app.deploys.replica_steps, app.deploys.routing)."""

    def __init__(self, ctx: OperationContext, service: Service):
        super().__init__(ctx, service.environment)
        self.service = service
        # Service id -> replicas per slot the routes list while replicas leave (see
        # GatewayRouting._route_replicas): the leaving ones stay listed until drained.
        self.route_replicas: dict[int, int] = {}

    def run(self) -> None:
        ctx, env, service = self.ctx, self.env, self.service
        ctx.on_cleanup(self._cleanup)
        self.values = environment_values(env)
        for value in environment_secrets(env):
            ctx.runtime.add_secret(value)
        self.facts = {s.id: s for s in snapshot(env, self.values).services}
        fact = self.facts.get(service.id)
        if fact is None:
            raise StepFailed(f"{service.name} is not an application service of this "
                             "environment")
        target = fact.replicas_per_server
        live = [r for r in service.replicas if r.status in (
            ReplicaStatus.STARTING, ReplicaStatus.RUNNING, ReplicaStatus.DRAINING)]
        with ctx.step(f"Plan: {target} replica{'s' if target != 1 else ''} of {service.name} "
                      "per server") as step:
            by_server = self._check_scalable(fact, live)
            add: list[tuple[int, str, int]] = []
            remove: list[ServiceReplica] = []
            for server_id, rows in sorted(by_server.items()):
                slot = (rows[0].config or {}).get("slot")
                have = {int((r.config or {}).get("index") or 0) for r in rows}
                add += [(server_id, slot, i) for i in range(target) if i not in have]
                leaving = [r for r in rows if int((r.config or {}).get("index") or 0) >= target]
                remove += leaving
                step.log(f"server {server_id}: {len(rows)} running in the {slot} slot -> "
                         f"{target}: start {len([a for a in add if a[0] == server_id])}, "
                         f"remove {len(leaving)}; the others are left alone")
            if not add and not remove:
                step.unchanged(f"{service.name} already runs {target} per server")
        ctx.result.update({"replicas": target, "added": len(add), "removed": len(remove)})
        if not add and not remove:
            self.succeeded = True
            return
        try:
            change = ServiceChange(
                service_id=service.id, name=service.name, role=fact.primary_role,
                reasons=("scale",),
                placements=tuple(Placement(r.server_id, "", (self._fact(r),), 0) for r in remove),
                health=health_settings(service.config, service.name),
                drain_seconds=drain_seconds(service.config) if fact.is_web else 0.0,
                stop_timeout=stop_timeout(fact.primary_role, service.config,
                                          drain_seconds(service.config) if fact.is_web else 0.0,
                                          service.name))
        except PlanError as exc:
            raise StepFailed(f"Cannot plan the scale: {exc}") from None
        if add:
            self._add(change, add)
        # From here the new replicas serve: a failure below leaves them (and the old) running.
        self.cutover_started = True
        if remove:
            self._remove(change, remove, max(int((r.config or {}).get("index") or 0)
                                             for r in remove) + 1)
        self.succeeded = True

    # ---------------------------------------------------------------- checks
    def _check_scalable(self, fact, live: list[ServiceReplica]) -> dict[int, list]:
        """The running replicas by server, or a refusal naming what to do instead."""
        if not live:
            raise StepFailed(f"{fact.name} has no running replica: deploy the environment, "
                             f"it starts {fact.replicas_per_server} per server")
        if any(r.status != ReplicaStatus.RUNNING for r in live):
            raise StepFailed(f"{fact.name} has replicas starting or draining (an interrupted "
                             "deploy): deploy the environment instead")
        stale = [r.container_name for r in live
                 if (r.config or {}).get("config_hash") != fact.config_hash
                 or (r.config or {}).get("revision") not in (None, fact.desired_revision)]
        if stale:
            raise StepFailed(f"{fact.name} changed since its last deploy ({', '.join(stale)} "
                             "run an older configuration): deploy the environment, it starts "
                             f"{fact.replicas_per_server} replicas per server with the change")
        artifacts = {(r.config or {}).get("artifact_id") for r in live}
        if len(artifacts) != 1 or None in artifacts:
            raise StepFailed(f"{fact.name}'s replicas run different builds: deploy the "
                             "environment instead")
        artifact = db.session.get(BuildArtifact, artifacts.pop())
        if artifact is None or not artifact.image_digest:
            raise StepFailed(f"the build {fact.name} runs is gone: deploy the environment")
        self.artifact, self.image = artifact, image_ref(artifact)
        by_server: dict[int, list[ServiceReplica]] = {}
        for r in live:
            by_server.setdefault(r.server_id, []).append(r)
        if set(by_server) != set(fact.server_ids):
            raise StepFailed(f"{fact.name}'s servers changed since its last deploy: deploy "
                             "the environment")
        for server_id, rows in by_server.items():
            if len({(r.config or {}).get("slot") for r in rows}) != 1:
                raise StepFailed(f"{fact.name} runs in both slots on server {server_id} (an "
                                 "interrupted deploy): deploy the environment instead")
        return by_server

    @staticmethod
    def _fact(r: ServiceReplica) -> ReplicaFact:
        cfg = r.config or {}
        return ReplicaFact(id=r.id, server_id=r.server_id, container_name=r.container_name,
                           slot=cfg.get("slot"), image_digest=r.image_digest,
                           status=r.status.value, index=int(cfg.get("index") or 0))

    # ---------------------------------------------------------------- add
    def _add(self, change: ServiceChange, add: list[tuple[int, str, int]]) -> None:
        # Per server: its missing replicas, in the slot that serves there (new workers of a
        # server are watched side by side); the servers side by side, each in a thread
        # with its own session (app.operations.fanout), as a deploy's replica_deploy.
        groups: dict[int, tuple[str, list[int]]] = {}
        for server_id, slot, index in add:
            groups.setdefault(server_id, (slot, []))[1].append(index)
        work = [(server_id, slot, indices) for server_id, (slot, indices) in groups.items()]
        if len(work) == 1:
            self._start_replicas(self.ctx, change, *work[0])
        else:
            made: dict = {}
            ids = (self.artifact.id, self.env.id)
            try:
                self.ctx.in_parallel(work, lambda w: self._in_thread(made, *ids)
                                     ._start_replicas(self.ctx, change, *w))
            finally:
                self._collect(made)
        if change.role in ("web", "websocket"):
            # One gateway change lists the new replicas (down until armed), then the
            # deploy's own confirmation: down on every gateway, armed, up on every gateway.
            self._ensure_routes(None)
        self._await_gateways()
        self._claim_scheduler_on_new()

    def _claim_scheduler_on_new(self) -> None:
        env = self.env
        if env.scheduler_mode != SchedulerMode.EVERY_REPLICA or not env.scheduler_enabled \
                or env.scheduler_target_service_id != self.service.id:
            return
        self._scheduler_claim(self.ctx, Phase("scheduler_claim", self.service.id,
                                              {"every_replica": True}))

    # ---------------------------------------------------------------- remove
    def _remove(self, change: ServiceChange, remove: list[ServiceReplica], listed: int) -> None:
        service = self.service
        ids = {r.id for r in remove}
        if self.env.scheduler_replica_id in ids:
            # The scheduler's runner leaves: released (a running schedule:run finishes)
            # before it is claimed on a replica that stays. Never two runners.
            stays = sorted((r for r in service.replicas if r.status == ReplicaStatus.RUNNING
                            and r.id not in ids), key=lambda r: (r.server_id, r.id))
            self._scheduler_release(self.ctx, Phase("scheduler_release", service.id,
                                                    {"replica_ids": (self.env.scheduler_replica_id,)}))
            if stays:
                self._scheduler_claim(self.ctx, Phase("scheduler_claim", service.id,
                                                      {"replica_id": stays[0].id}))
        if change.role == "web":
            # Listed until drained: the gateways' log is read by address.
            self.route_replicas[service.id] = listed
            self._drain(self.ctx, change)
            self.route_replicas.pop(service.id, None)
            # Off the gateways before they stop (removing an upstream after stopping it
            # gives 502s; before, none).
            self._ensure_routes(None)
        self._stop_old(self.ctx, change)


@operation_handler(OperationKind.SERVICE_SCALE)
def service_scale(ctx: OperationContext) -> None:
    service = ctx.target
    if service is None or service.environment is None:
        raise StepFailed("The service no longer exists.")
    requested = ctx.params.get("replicas")
    if requested is not None and int(requested) != service.desired_replicas:
        # A newer scale changed the count after this one was queued: that one applies it.
        with ctx.step("Replicas per server") as step:
            step.log(f"asked for {requested}, now {service.desired_replicas}: scaling to "
                     f"{service.desired_replicas}")
    ServiceScale(ctx, service).run()


__all__ = ["ScaleRefused", "ServiceScale", "service_scale", "start_scale"]
