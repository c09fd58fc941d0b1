"""The ``environment_deploy`` operation and its children (SPEC 3, 8, 15, 17, 18).

    environment_deploy (environment)         resolve commit, artifact, plan, migrations
      service_deploy (service)               per changed service: its new replicas
        replica_deploy (service)             one replica: start in the free slot, health-check
      slice_configure (service_slice)        only when a route's slot list changes (rare):
                                             first deploy, new server, websocket service added
      gateway_cutover (environment)          wait for Caddy, move the scheduler, drain, stop old

An ordinary deploy changes NO gateway configuration (docs/cutover.md): both
slots of every server are always listed in the Caddyfile and Caddy's active
health check on ``/.keystone/ready`` moves traffic. A websocket (Reverb)
service is routed the same way on the same domain: Reverb's Pusher paths
(``/app/*``, ``/apps/*``) go to its own blue/green slots, checked on the
websocket server's own health path (Reverb's ``/up``). Failure before the cutover (a replica that never becomes healthy)
removes every new replica of this deploy -- with its last log lines on the
step -- and leaves the old ones serving; the gateway is not touched.
"""
from __future__ import annotations

import logging
import shlex
import time

import sqlalchemy as sa

from app.attachments import consumer_host, effective_environment, is_managed_secret
from app.builds.artifacts import (BuildError, artifact_registry, ensure_artifact, image_ref,
                                  make_present)
from app.builds.plan import BuildPlanError
from app.deploys import commands as dc
from app.drivers import get_driver
from app.drivers.base import FirewallRule, service_alias
from app.drivers.compose import compose_cmd, dump_yaml, ensure_network_cmd, upload_project
from app.drivers.laravel.settings import LaravelSettings, SettingsError
from app.services_ops.steps import apply_service_config, open_firewall, running_container
from app.deploys.gateway_health import health_events, parse_stamp
from app.deploys.planning import (DeployPlan, EnvironmentSnapshot, PlanError, ReplicaFact,
                                  SchedulerFact, ServiceChange, ServiceFact, config_hash,
                                  health_settings, migration_settings, plan_deploy)
from app.deploys.service import app_services, environment_servers, primary_web, service_server_ids
from app.deploys.slots import (APP_PORT, HEALTH_FAILS, HEALTH_INTERVAL_MS, HEALTH_PASSES,
                               HEALTH_TIMEOUT, READY_PATH, WEBSOCKET_MATCHER, WEBSOCKET_PATHS,
                               container_name, project_name, slot_alias, slot_port, upstreams)
from app.extensions import db
from app.models import BuildArtifact, Environment, Server, Service, ServiceReplica, ServiceSlice
from app.models.service import REMOVED_BY_KEYSTONE
from app.models.enums import (ArtifactStatus, DeployPolicy, EnvironmentStatus, HealthStatus,
                              OperationKind, ReplicaStatus, SchedulerMode, ServiceStatus,
                              SliceStatus, SliceType, VariableSource)
from app.operations import OperationContext, StepFailed, operation_handler
from app.repositories import resolve_commit
from app.repositories.validation import ValidationError
from app.shell import cmd

log = logging.getLogger(__name__)

SCHEDULER_RELEASE_WAIT = 300
LOG_TAIL_LINES = 40
ROUTE_HEALTH = {"interval": f"{HEALTH_INTERVAL_MS}ms", "timeout": HEALTH_TIMEOUT,
                "fails": HEALTH_FAILS, "passes": HEALTH_PASSES}
GATEWAY_CONFIRM_SECONDS = 90
"""How long a gateway may take to put an armed replica in rotation before the deploy fails."""
GATEWAY_DRAIN_CONFIRM_SECONDS = 60
"""How long to wait for every gateway to take a drained replica out of rotation."""
GATEWAY_POLL_SECONDS = 0.5
STAMP_MARGIN_SECONDS = 1.0
"""Clock margin when reading another server's gateway log against this server's stamp."""
OBSERVE_SECONDS = 10.0
"""How long a new worker must keep running, without a restart, before it counts as up."""
READY_TRIES = 5


# --------------------------------------------------------------------------- facts

def server_overrides(environment: Environment, server_id: int,
                     values: dict[str, str]) -> dict[str, str]:
    """Managed endpoint variables as seen from ``server_id`` (SPEC 14).

    The environment's DB_HOST / REDIS_HOST name the dependency's Docker alias,
    which only resolves on the dependency's own server; a replica on another
    server gets the private IP instead (the service must be exposed on the
    private network). A value the user set themselves is left alone.
    """
    user_keys = {v.key for v in environment.variables if v.source == VariableSource.USER}
    out: dict[str, str] = {}
    for att in environment.attachments:
        svc, sl = att.service, att.service_slice
        if svc is None or sl is None or svc.server_id in (None, server_id):
            continue
        try:
            host = consumer_host(svc, server_id)
            driver = get_driver(svc)
            local = driver.env_exports(svc, sl, service_alias(svc))
            remote = driver.env_exports(svc, sl, host)
        except Exception:  # noqa: BLE001 - not reachable from there: keep the alias
            continue
        for key, value in remote.items():
            if local.get(key) != value and key in values and key not in user_keys:
                out[key] = value
    return out


def replica_environment(service: Service, values: dict[str, str],
                        server_id: int | None = None) -> dict[str, str]:
    """What a replica of ``service`` gets: the environment's variables plus Keystone's own."""
    env = dict(values)
    if server_id is not None and service.environment is not None:
        env.update(server_overrides(service.environment, server_id, values))
    health = health_settings(service.config, service.name)
    env["KEYSTONE_HEALTH_PATH"] = health["path"]
    cfg = service.config or {}
    if cfg.get("embedded_worker") and "web" in (service.process_roles or []):
        env["KEYSTONE_EMBEDDED_WORKER"] = "1"
    interval = cfg.get("scheduler_interval")
    if interval:
        env["KEYSTONE_SCHEDULER_INTERVAL"] = str(int(interval))
    return env


def environment_values(env: Environment) -> dict[str, str]:
    return dict(effective_environment(env))


# Values that are secret whatever their flag says (Laravel's encryption key).
ALWAYS_SECRET_KEYS = frozenset({"APP_KEY"})


def environment_secrets(env: Environment) -> list[str]:
    """Every secret a deploy of ``env`` can see, for redaction: the variables marked
    secret, the managed credentials (DB_PASSWORD, REDIS_PASSWORD, prefixed or not),
    APP_KEY, and the password of the environment's registry."""
    values = [v.value for v in env.variables
              if v.value and (v.is_secret or is_managed_secret(v.key)
                              or v.key in ALWAYS_SECRET_KEYS)]
    registry = getattr(env, "container_registry", None)
    if registry is not None and getattr(registry, "password", None):
        values.append(registry.password)
    return values


def snapshot(env: Environment, values: dict[str, str]) -> EnvironmentSnapshot:
    services = []
    for s in app_services(env):
        cfg = s.config or {}
        replicas = tuple(ReplicaFact(
            id=r.id, server_id=r.server_id, container_name=r.container_name,
            slot=(r.config or {}).get("slot"), image_digest=r.image_digest,
            status=r.status.value, health=r.health_status.value,
            revision=(r.config or {}).get("revision"),
            config_hash=(r.config or {}).get("config_hash")) for r in s.replicas)
        services.append(ServiceFact(
            id=s.id, name=s.name, deploy_policy=s.deploy_policy.value,
            roles=tuple(s.process_roles or ["web"]), desired_revision=s.desired_revision,
            config_hash=config_hash(cfg, s.process_roles or [], replica_environment(s, values),
                                    {"replicas": s.desired_replicas}),
            server_ids=tuple(service_server_ids(s)), replicas=replicas, config=cfg,
            category=s.category.value))
    target = env.scheduler_target_service_id
    if target is None:
        web = primary_web(env)
        target = web.id if web else None
    deps = tuple(sorted({a.service.name for a in env.attachments if a.service is not None}))
    return EnvironmentSnapshot(
        environment_id=env.id, services=tuple(services), dependencies=deps,
        scheduler=SchedulerFact(enabled=env.scheduler_enabled, mode=env.scheduler_mode.value,
                                target_service_id=target,
                                runner_replica_id=env.scheduler_replica_id))


def _stdout(result) -> str:
    return (getattr(result, "stdout", "") or "").strip()


def _last_line(result) -> str:
    lines = [ln.strip() for ln in _stdout(result).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def commit_details(artifact: BuildArtifact) -> dict:
    """The fetched commit's subject and author, for the deployment history (issue 17.6)."""
    info = (artifact.meta or {}).get("commit") or {}
    return {"commit_message": info.get("message"), "commit_author": info.get("author")} \
        if info else {}


# --------------------------------------------------------------------------- the deploy

class EnvironmentDeploy:
    def __init__(self, ctx: OperationContext, env: Environment):
        self.ctx = ctx
        self.env = env
        self.new: dict[tuple[int, int], ServiceReplica] = {}  # (service id, server id) -> new
        self.started: list[int] = []  # ids of replicas this deploy created (for clean-up)
        self.cutover_started = False
        self.succeeded = False
        self.plan: DeployPlan | None = None
        self.artifact: BuildArtifact | None = None
        self.image: str = ""
        self.values: dict[str, str] = {}
        self.facts: dict[int, ServiceFact] = {}

    # ---------------------------------------------------------------- top level
    def run(self) -> None:
        ctx, env = self.ctx, self.env
        ctx.on_cleanup(self._cleanup)
        previous_status = env.status
        servers = environment_servers(env)
        if not servers:
            raise StepFailed("The environment has no application service placed on a server.")
        self.artifact = self._artifact(servers)
        self.image = image_ref(self.artifact)
        self.values = environment_values(env)
        for value in environment_secrets(env):
            ctx.runtime.add_secret(value)
        snap = snapshot(env, self.values)
        self.facts = {s.id: s for s in snap.services}
        if env.scheduler_target_service_id is None and snap.scheduler.target_service_id:
            env.scheduler_target_service_id = snap.scheduler.target_service_id
            db.session.commit()
        try:
            plan = plan_deploy(snap, self.artifact.image_digest,
                               force=bool(ctx.params.get("force")))
        except PlanError as exc:
            raise StepFailed(f"Cannot plan the deploy: {exc}") from None
        self.plan = plan
        with ctx.step("Plan the deploy") as step:
            step.log(f"artifact #{self.artifact.id}: commit {self.artifact.commit_sha[:12]}, "
                     f"image {self.image}")
            for c in plan.changes:
                where = ", ".join(f"server {p.server_id} -> {p.slot or 'retire'} slot"
                                  for p in c.placements)
                step.log(f"deploy {c.name} ({c.role}): {', '.join(c.reasons)}; {where}")
            for name, why in plan.unchanged:
                step.log(f"leave {name}: {why}")
            if plan.migration:
                step.log(f"migrations: `{plan.migration.command}` once, {plan.migration.timing}")
            step.log("phases: " + " -> ".join(p.kind for p in plan.phases))
            if plan.noop:
                step.unchanged(plan.summary())
        ctx.result.update({"commit": self.artifact.commit_sha, "artifact_id": self.artifact.id,
                           "image_digest": self.artifact.image_digest,
                           "changed_services": [c.name for c in plan.changes],
                           "noop": plan.noop, "rollback": bool(ctx.params.get("rollback")),
                           **commit_details(self.artifact)})
        self.ctx.operation.image_digest = self.artifact.image_digest
        if plan.noop:
            env.current_artifact_id = self.artifact.id
            if env.status != EnvironmentStatus.DEPLOYED:
                env.status = EnvironmentStatus.DEPLOYED
            db.session.commit()
            self.succeeded = True
            return
        env.status = EnvironmentStatus.DEPLOYING
        db.session.commit()
        try:
            self._run_phases(plan)
        except BaseException:
            db.session.rollback()
            env.status = (previous_status if previous_status == EnvironmentStatus.DEPLOYED
                          and not self.cutover_started else EnvironmentStatus.FAILED)
            db.session.commit()
            raise
        self.succeeded = True

    def _artifact(self, servers: list[Server]) -> BuildArtifact:
        ctx, env = self.ctx, self.env
        artifact_id = ctx.params.get("artifact_id")
        if artifact_id:
            artifact = db.session.get(BuildArtifact, int(artifact_id))
            if artifact is None or artifact.environment_id != env.id or \
                    artifact.status != ArtifactStatus.READY or not artifact.image_digest:
                raise StepFailed("The build to roll back to is missing or unfinished.")
            with ctx.step(f"Roll back to build #{artifact.id}") as step:
                step.log(f"redeploying commit {artifact.commit_sha} ({artifact.image_digest}) "
                         "through the same cutover")
                step.log("database migrations are not reversed: the older code runs against "
                         "the current schema")
            registry = env.container_registry or artifact_registry(artifact)
            make_present(ctx, artifact, servers, registry)
            return artifact
        sha = ctx.params.get("commit_sha")
        if not sha:
            with ctx.step(f"Resolve {env.branch}") as step:
                try:
                    sha = resolve_commit(env, on_line=step.log)
                except Exception as exc:  # GitAccessError / ValidationError: a user message
                    raise StepFailed(f"Could not resolve {env.branch}: {exc}") from None
        try:
            return ensure_artifact(ctx, env, sha, servers)
        except StepFailed:
            raise
        except (BuildPlanError, BuildError, ValidationError) as exc:
            raise StepFailed(str(exc)) from None

    def _run_phases(self, plan: DeployPlan) -> None:
        kinds = [p.kind for p in plan.phases]
        cutover_kinds = {"await_gateway", "scheduler_release", "scheduler_claim", "drain", "stop"}
        cutover = [p for p in plan.phases if p.kind in cutover_kinds]
        done_cutover = False
        routes_done = False
        for phase in plan.phases:
            self.ctx.check_cancelled()
            if phase.kind == "check_dependencies":
                self._check_dependencies()
            elif phase.kind == "pre_switch":
                self._pre_switch()
            elif phase.kind == "migrate":
                self._migrate(plan)
            elif phase.kind == "start":
                if not routes_done:
                    # Routes first (only when their slot list changes: the first deploy, a new
                    # server): a slot is then down on every gateway before its replica is
                    # armed, so the gateway's switch to "up" is a transition it logs.
                    routes_done = True
                    self._ensure_routes(plan)
                change = plan.change_for(phase.service_id)
                service = db.session.get(Service, phase.service_id)
                self.ctx.run_child(OperationKind.SERVICE_DEPLOY, "service", service.id,
                                   lambda cctx, c=change: self._service_deploy(cctx, c),
                                   summary=f"Deploy {service.name}: {', '.join(change.reasons)}",
                                   lock_keys=[f"service:{service.id}"])
            elif phase.kind == "health":
                pass  # each replica_deploy child health-checks its replica before it succeeds
            elif phase.kind in cutover_kinds:
                if not done_cutover:
                    done_cutover = True
                    if not routes_done:
                        routes_done = True
                        self._ensure_routes(plan)
                    # Before anything old is touched: every new replica armed and in rotation
                    # on every gateway, and still running. A failure here takes the new
                    # replicas away again and the old ones keep serving.
                    self._await_gateways()
                    self.cutover_started = True
                    self.ctx.run_child(OperationKind.GATEWAY_CUTOVER, "environment", self.env.id,
                                       lambda cctx: self._cutover(cctx, cutover),
                                       summary="Switch traffic to the new replicas; drain and "
                                               "stop the old ones")
            elif phase.kind == "record":
                if not done_cutover:
                    # No cutover (only new services, e.g. a websocket service added): its
                    # slots still have to be routed.
                    done_cutover = True
                    if not routes_done:
                        routes_done = True
                        self._ensure_routes(plan)
                    self._await_gateways()
                self._record(plan)
        if "record" not in kinds:
            self._record(plan)

    # ---------------------------------------------------------------- checks
    def _check_dependencies(self) -> None:
        env = self.env
        with self.ctx.step("Check dependency services and attached slices") as step:
            problems = []
            for att in env.attachments:
                svc = att.service
                if svc is None or svc.deploy_policy == DeployPolicy.WITH_ENVIRONMENT:
                    continue
                running = [r for r in svc.replicas if r.status == ReplicaStatus.RUNNING]
                if not running:
                    problems.append(f"{svc.name} ({att.role.value}) has no running replica")
                elif any(r.health_status == HealthStatus.UNHEALTHY for r in running):
                    problems.append(f"{svc.name} is unhealthy")
                sl = att.service_slice
                if sl is not None and sl.status != SliceStatus.READY:
                    problems.append(f"slice {sl.name} of {svc.name} is {sl.status.value}")
                for r in running:
                    server = db.session.get(Server, r.server_id)
                    with self.ctx.step(f"Check {svc.name} on {server.name}", server=server) as s2:
                        res = s2.run(dc.inspect(r.container_name), check=False, pty=False,
                                     timeout=30)
                        parts = _stdout(res).split()
                        if res.exit_code != 0 or len(parts) < 4 or parts[2] != "true":
                            problems.append(f"{svc.name}: container {r.container_name} is not "
                                            "running")
                        elif parts[3] not in ("healthy", "none"):
                            problems.append(f"{svc.name}: container health is {parts[3]}")
                        else:
                            s2.unchanged(f"{svc.name} is running ({parts[3]})")
                step.log(f"{svc.name} ({att.role.value}): checked, not redeployed")
            if problems:
                raise StepFailed("Dependencies are not healthy: " + "; ".join(problems))
            if not env.attachments:
                step.unchanged("nothing attached")

    def _pre_switch(self) -> None:
        commands = []
        for change in self.plan.changes:
            svc = db.session.get(Service, change.service_id)
            try:  # the typed settings own them: argv lists, validated
                argvs = LaravelSettings.from_config(svc.config, svc.name).pre_switch
            except SettingsError as exc:
                raise StepFailed(str(exc)) from None
            commands.extend((svc, argv) for argv in argvs)
        if not commands:
            with self.ctx.step("Pre-switch steps") as step:
                step.unchanged("no pre-switch commands configured")
            return
        for index, (svc, argv) in enumerate(commands):
            self._one_off(svc, self.plan.migration.server_id if self.plan.migration else
                          service_server_ids(svc)[0], list(argv),
                          f"Pre-switch: {shlex.join(argv)}", f"pre{index}")

    def _migrate(self, plan: DeployPlan) -> None:
        m = plan.migration
        svc = db.session.get(Service, m.service_id)
        try:
            argv = dc.migration_argv(m.command)
        except ValueError as exc:
            raise StepFailed(f"{svc.name}: {exc}") from None
        self._one_off(svc, m.server_id, argv,
                      f"Run migrations once ({m.command}) in a one-off container of the new build",
                      "migrate")
        self.ctx.result["migrations_ran"] = self.ctx.result.get("migrations_ran", 0) + 1

    def _one_off(self, svc: Service, server_id: int, argv: list[str], title: str,
                 tag: str) -> None:
        server = db.session.get(Server, server_id)
        driver = get_driver(svc)
        name = f"ks-{tag}-{svc.id}-op{self.ctx.id}"
        directory = f"{self.ctx.workdir()}/{tag}-{svc.id}"
        rendered = driver.render_replica(svc, image=self.image, project_name=name,
                                         container_name=name,
                                         environment=replica_environment(svc, self.values,
                                                                         server.id),
                                         operation_id=self.ctx.id, role="worker",
                                         directory=directory)
        with self.ctx.step(title, server=server) as step:
            step.run(ensure_network_cmd(), timeout=60)
            upload_project(step, rendered)
            try:
                step.run(dc.one_off_run(directory, name, "worker", name, argv), timeout=1800)
            finally:
                step.run(compose_cmd(directory, name, "down", "--remove-orphans"), check=False,
                         timeout=120)
                step.run(dc.remove(name), check=False, timeout=60)
                step.run(cmd("rm", "-rf", "--", directory), check=False, timeout=60)

    # ---------------------------------------------------------------- new replicas
    def _service_deploy(self, cctx: OperationContext, change: ServiceChange) -> None:
        service = db.session.get(Service, change.service_id)
        for placement in change.placements:
            if not placement.slot:
                continue
            server = db.session.get(Server, placement.server_id)
            cctx.run_child(OperationKind.REPLICA_DEPLOY, "service", service.id,
                           lambda rctx, p=placement: self._replica_deploy(rctx, change, p),
                           summary=f"{service.name}: {placement.slot} slot on {server.name}")

    def _replica_deploy(self, rctx: OperationContext, change: ServiceChange, placement) -> None:
        service = db.session.get(Service, change.service_id)
        server = db.session.get(Server, placement.server_id)
        fact = self.facts[service.id]
        slot = placement.slot
        role = change.role
        name = container_name(service.name, service.id, slot, self.ctx.id)
        project = project_name(service.id, slot, self.ctx.id)
        routed = role in ("web", "websocket")
        multi = len(fact.server_ids) > 1
        published = slot_port(service.id, slot) if (routed and multi) else None
        if published and not server.private_ip:
            raise StepFailed(f"{server.name} has no private IP: its replicas cannot be reached "
                             "from the other servers' gateways")
        replica = ServiceReplica(
            service_id=service.id, server_id=server.id, operation_id=self.ctx.id,
            container_name=name, image_digest=self.artifact.image_digest,
            internal_host=slot_alias(service.name, service.id, slot) if routed else name,
            internal_port=APP_PORT if routed else None, public_port=published,
            status=ReplicaStatus.STARTING, health_status=HealthStatus.STARTING,
            config={"slot": slot, "revision": service.desired_revision,
                    "config_hash": fact.config_hash, "project": project, "role": role,
                    "artifact_id": self.artifact.id})
        db.session.add(replica)
        db.session.commit()
        self.started.append(replica.id)
        driver = get_driver(service)
        rendered = driver.render_replica(
            service, image=self.image, project_name=project, container_name=name,
            environment=replica_environment(service, self.values, server.id),
            replica_id=replica.id,
            operation_id=self.ctx.id, role=role,
            private_ip=server.private_ip if published else None, published_port=published)
        entry = rendered.compose["services"][role]
        # An init as PID 1 forwards SIGTERM: php -S (or artisan) as PID 1 would ignore it and
        # every stop would wait out the whole timeout before SIGKILL.
        entry["init"] = True
        if routed:
            # The slot's fixed alias: what every gateway on this server already lists.
            net = entry["networks"]["keystone"]
            net["aliases"] = list(dict.fromkeys([*net.get("aliases", []),
                                                 slot_alias(service.name, service.id, slot)]))
        rendered.compose_yaml = dump_yaml(rendered.compose)
        replica.config = {**replica.config, "directory": rendered.directory}
        db.session.commit()
        try:
            with rctx.step(f"Start {name} in the {slot} slot on {server.name}",
                           server=server) as step:
                step.run(ensure_network_cmd(), timeout=60)
                step.run(dc.remove(name), check=False, timeout=60)  # a leftover of a crash
                self._remove_leftovers(step, placement, slot)
                started = parse_stamp(_stdout(step.run(dc.server_time(), check=False,
                                                       pty=False, timeout=30)))
                replica.config = {**(replica.config or {}), "started_at": started}
                db.session.commit()
                upload_project(step, rendered)
                step.run(compose_cmd(rendered.directory, project, "up", "-d", "--no-build"),
                         timeout=600)
            if published:
                # Other servers' gateways reach this slot on the private network only.
                open_firewall(rctx, server, [FirewallRule(published, "tcp",
                                                          f"laravel {service.id} {slot}")])
            self._health_check(rctx, service, change, replica, server, role)
        except BaseException:
            self._remove_failed(rctx, replica, server)
            raise
        self.new[(service.id, server.id)] = replica

    def _remove_leftovers(self, step, placement, slot: str) -> None:
        """An interrupted deploy's replica in this slot (it never passed its checks, so it
        was never armed and no gateway sends it anything) goes before the new one starts:
        two containers answering one slot alias would make the gateway's checks flap."""
        for fact in placement.old:
            if fact.slot != slot or fact.status != ReplicaStatus.STARTING.value:
                continue
            leftover = self._replica(fact.id)
            if leftover is None or leftover.status != ReplicaStatus.STARTING:
                continue
            step.log(f"removing {leftover.container_name}, left in the {slot} slot by an "
                     f"interrupted deploy (never armed)")
            self._teardown(step, leftover, timeout=5, drain_first=False)
            leftover.status = ReplicaStatus.REMOVED
            leftover.container_state = REMOVED_BY_KEYSTONE
            db.session.commit()

    def _check_not_crashing(self, step, name: str, what: str) -> list[str]:
        """Inspect ``name``; fail when it is not running or has restarted (a crash loop).

        A new container starts with a restart count of 0: any restart during the
        deploy means its process exited and Docker's restart policy brought it back.
        """
        res = step.run(dc.inspect(name), check=False, pty=False, timeout=30)
        parts = _stdout(res).split()
        if res.exit_code != 0 or len(parts) < 3:
            raise StepFailed(f"{name} is gone ({what})")
        restarts = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
        exit_code = parts[5] if len(parts) > 5 else "?"
        if restarts > 0:
            raise StepFailed(f"{name} is crash-looping: it restarted {restarts} time"
                             f"{'s' if restarts != 1 else ''} {what} (last exit code "
                             f"{exit_code})")
        if parts[2] != "true":
            raise StepFailed(f"{name} exited with code {exit_code} {what}")
        return parts

    def _observe(self, rctx, step, name: str, seconds: float) -> list[str]:
        """Watch ``name`` for ``seconds``: it must keep running without a single restart."""
        deadline = time.monotonic() + seconds
        parts = self._check_not_crashing(step, name, "right after it started")
        while time.monotonic() < deadline:
            rctx.check_cancelled()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            parts = self._check_not_crashing(step, name, f"within {seconds:g}s of starting")
        return parts

    def _health_check(self, rctx, service, change, replica, server, role) -> None:
        h = change.health
        name = replica.container_name
        if role == "worker":
            with rctx.step(f"Check {name} keeps running", server=server) as step:
                observe = max(OBSERVE_SECONDS, float(h["interval"]) * 2)
                step.log(f"a worker has no HTTP endpoint: it must run for {observe:g}s "
                         "without exiting or restarting")
                parts = self._observe(rctx, step, name, observe)
                step.log(f"{name} ran {observe:g}s with 0 restarts")
                self._mark_running(replica, parts)
            return
        path, interval, timeout, retries = h["path"], float(h["interval"]), float(h["timeout"]), \
            int(h["retries"])
        with rctx.step(f"Health check {name}: GET {path} every {interval:g}s, timeout "
                       f"{timeout:g}s, up to {retries} tries", server=server) as step:
            healthy = False
            last = ""
            for attempt in range(1, retries + 1):
                rctx.check_cancelled()
                res = step.run(dc.probe(name, path, APP_PORT, timeout), check=False, pty=False,
                               timeout=timeout + 15)
                code = _last_line(res) or "000"
                if code == "404" and path != "/":
                    res2 = step.run(dc.probe(name, "/", APP_PORT, timeout), check=False,
                                    pty=False, timeout=timeout + 15)
                    fallback = _last_line(res2) or "000"
                    step.log(f"try {attempt}/{retries}: {path} -> 404, / -> {fallback}")
                    code = "200" if fallback[:1] in ("2", "3") else fallback
                else:
                    step.log(f"try {attempt}/{retries}: {path} -> {code}")
                last = code
                if code == "200":
                    healthy = True
                    break
                if attempt < retries:
                    time.sleep(interval)
            if not healthy:
                raise StepFailed(f"{name} never became healthy: {path} answered {last} after "
                                 f"{retries} tries")
            self._check_not_crashing(step, name, "while it was health-checked")
            if role == "web":
                self._check_ready_handler(rctx, step, name)
            elif role == "websocket":
                # Laravel Reverb serves its own GET /up (checked above) and no Keystone ready
                # handler: the gateway checks the health path on websocket slots, and an old
                # replica leaves the rotation when it stops (the gateway retries the dial).
                step.log(f"the gateway checks {path} on the websocket slots")
            res = step.run(dc.inspect(name), check=False, pty=False, timeout=30)
            self._mark_running(replica, _stdout(res).split())

    def _check_ready_handler(self, rctx, step, name: str) -> None:
        """The image answers the ready path, and 503 "not armed" until Keystone arms it."""
        ready = ""
        for attempt in range(1, READY_TRIES + 1):
            rctx.check_cancelled()
            res = step.run(dc.ready_probe(name, APP_PORT), check=False, pty=False, timeout=30)
            ready = _last_line(res) or "000"
            step.log(f"{READY_PATH} -> {ready} (what the gateways check; 503 until armed), "
                     f"try {attempt}/{READY_TRIES}")
            if ready in ("503", "200"):
                return
            if ready == "404":
                raise StepFailed(f"{name} is healthy but {READY_PATH} answered 404: the image "
                                 "lacks Keystone's ready handler")
            time.sleep(1)
        raise StepFailed(f"{name} is healthy but {READY_PATH} answered {ready} {READY_TRIES} "
                         "times in a row")

    def _arm(self, step, replica: ServiceReplica) -> None:
        """Keystone's checks passed: let the gateways see the replica (ready path -> 200)."""
        name = replica.container_name
        res = step.run(dc.arm(name), check=False, pty=False, timeout=30)
        armed_at = parse_stamp(_stdout(res))
        if res.exit_code != 0 or armed_at is None:
            raise StepFailed(f"could not arm {name}: {_last_line(res) or 'no answer'}")
        replica.config = {**(replica.config or {}), "armed_at": armed_at}
        db.session.commit()
        r2 = step.run(dc.ready_probe(name, APP_PORT), check=False, pty=False, timeout=30)
        ready = _last_line(r2) or "000"
        step.log(f"{READY_PATH} -> {ready}: armed")
        if ready != "200":
            raise StepFailed(f"{name} was armed but {READY_PATH} answered {ready}")

    def _mark_running(self, replica: ServiceReplica, parts: list[str]) -> None:
        if parts:
            replica.container_id = parts[0][:80]
        replica.status = ReplicaStatus.RUNNING
        replica.health_status = HealthStatus.HEALTHY
        db.session.commit()

    def _remove_failed(self, ctx: OperationContext, replica: ServiceReplica,
                       server: Server) -> None:
        """Take a new replica away again, keeping its last log lines on the step."""
        name = replica.container_name
        try:
            with ctx.step(f"Remove {name} (kept: its last {LOG_TAIL_LINES} log lines)",
                          server=server, cleanup=True) as step:
                step.run(dc.logs_tail(name, LOG_TAIL_LINES), check=False, timeout=60)
                # Never armed: no gateway ever sent it a request, it can go at once. Armed
                # (it failed later): drain it like any other replica first.
                armed = bool((replica.config or {}).get("armed_at"))
                self._teardown(step, replica, timeout=10 if armed else 5, drain_first=armed)
        except Exception:
            # Cancelled or unreachable: the operation's clean-up tries again.
            log.warning("could not remove failed replica %s", name, exc_info=True)
            return
        replica.status = ReplicaStatus.FAILED
        replica.health_status = HealthStatus.UNHEALTHY
        replica.container_state = REMOVED_BY_KEYSTONE
        db.session.commit()

    def _teardown(self, step, replica: ServiceReplica, timeout: int, drain_first: bool) -> None:
        name = replica.container_name
        if drain_first:
            res = step.run(dc.drain(name), check=False, pty=False, timeout=30)
            drained_at = parse_stamp(_stdout(res))
            if res.exit_code == 0 and drained_at is not None:
                self._await_out_of_rotation(step.ctx, [(replica, drained_at)])
        step.run(dc.stop(name, timeout), check=False, timeout=timeout + 60)
        cfg = replica.config or {}
        directory, project = cfg.get("directory"), cfg.get("project")
        if directory and project:
            step.run(compose_cmd(directory, project, "down", "--timeout", str(int(timeout))),
                     check=False, timeout=timeout + 60)
        step.run(dc.remove(name), check=False, timeout=60)
        if directory and directory.startswith("/home/keystone/services/"):
            step.run(cmd("rm", "-rf", "--", directory), check=False, timeout=60)

    # ---------------------------------------------------------------- gateway routes
    def _route_slices(self) -> list[ServiceSlice]:
        env = self.env
        ids = {a.service_slice_id for a in env.attachments if a.service_slice_id}
        rows = db.session.execute(sa.select(ServiceSlice).where(
            ServiceSlice.type == SliceType.CADDY_ROUTE,
            sa.or_(ServiceSlice.environment_id == env.id, ServiceSlice.id.in_(ids or {-1}))
        )).scalars().all()
        return [s for s in rows if s.status not in (SliceStatus.DELETED, SliceStatus.DELETING)]

    def _slot_addresses(self, service: Service, gateway_server_id: int, *,
                        with_slots: bool = False) -> list:
        server_ids = service_server_ids(service)
        servers = db.session.execute(sa.select(Server).where(Server.id.in_(server_ids))) \
            .scalars().all()
        ups = upstreams(service.name, service.id, gateway_server_id,
                        [(s.id, s.private_ip) for s in servers])
        if with_slots:
            return [(u.server_id, u.slot, u.address) for u in ups]
        return [u.address for u in ups]

    def _websocket_service(self) -> Service | None:
        """The environment's websocket (Reverb) service deployed with it, if any."""
        for svc in app_services(self.env):
            if "websocket" in (svc.process_roles or []) and \
                    svc.deploy_policy == DeployPolicy.WITH_ENVIRONMENT and service_server_ids(svc):
                return svc
        return None

    def _desired_route(self, route: ServiceSlice) -> dict | None:
        web_id = (route.config or {}).get("service_id")
        web = db.session.get(Service, web_id) if web_id else primary_web(self.env)
        gateway = route.service
        if web is None or gateway is None or gateway.server_id is None:
            return None
        cfg = dict(route.config or {})
        cfg.update(upstreams=self._slot_addresses(web, gateway.server_id),
                   health_path=READY_PATH, health=dict(ROUTE_HEALTH), dial_timeout="1s",
                   lb_try_duration="5s", lb_try_interval="250ms", service_id=web.id)
        ws = self._websocket_service()
        if ws is not None:
            # Reverb's Pusher paths to the websocket slots: a named path matcher and its own
            # `handle` in the same site, with the same active health check on the ready path.
            # Its active health check asks the websocket server's own health path (Laravel
            # Reverb answers GET /up; it has no Keystone ready handler, see _health_check).
            cfg["path_routes"] = [{"name": WEBSOCKET_MATCHER, "paths": list(WEBSOCKET_PATHS),
                                   "upstreams": self._slot_addresses(ws, gateway.server_id),
                                   "health_path": health_settings(ws.config, ws.name)["path"],
                                   "service_id": ws.id}]
        else:
            cfg.pop("path_routes", None)
        return cfg

    def _ensure_routes(self, plan: DeployPlan) -> None:
        """Only when a route does not list exactly the slots yet (first deploy, new server)."""
        for route in self._route_slices():
            desired = self._desired_route(route)
            if desired is None or desired == (route.config or {}):
                continue
            gateway = route.service
            self.ctx.run_child(
                OperationKind.SLICE_CONFIGURE, "service_slice", route.id,
                lambda cctx, r=route, d=desired: self._configure_route(cctx, r, d),
                lock_keys=[f"gateway:{gateway.server_id}"],
                summary=f"Route {', '.join((route.config or {}).get('hostnames', []))}: "
                        "list the blue/green slots")

    def _configure_route(self, cctx: OperationContext, route: ServiceSlice, desired: dict) -> None:
        with cctx.step("Route the environment's slots") as step:
            step.log("upstreams: " + " ".join(desired["upstreams"]))
            for pr in desired.get("path_routes") or []:
                step.log(f"{' '.join(pr['paths'])} ({pr['name']}): " + " ".join(pr["upstreams"]))
            step.log(f"active health check {READY_PATH} every {ROUTE_HEALTH['interval']}: "
                     "later deploys change no gateway configuration")
        previous = (dict(route.config or {}), route.status)
        route.config = desired
        route.status = SliceStatus.READY
        db.session.commit()
        try:
            apply_service_config(cctx, route.service)
        except BaseException:
            # Not installed: the route stays as the gateway has it, so the next deploy
            # tries again (it installs only routes whose config differs).
            db.session.rollback()
            route.config, route.status = previous
            db.session.commit()
            raise

    # ---------------------------------------------------------------- gateway confirmation
    def _gateways(self) -> list[tuple[Service, Server, str]]:
        """(gateway service, its server, its container) of every route of this environment."""
        out: dict[int, tuple[Service, Server, str]] = {}
        for route in self._route_slices():
            gateway = route.service
            if gateway is None or gateway.server_id is None or gateway.id in out:
                continue
            try:
                container = running_container(gateway)
            except StepFailed:
                continue
            out[gateway.id] = (gateway, db.session.get(Server, gateway.server_id), container)
        return list(out.values())

    def _address_on(self, gateway_server_id: int, replica: ServiceReplica) -> str | None:
        """The address a gateway on ``gateway_server_id`` dials for ``replica``'s slot."""
        service = db.session.get(Service, replica.service_id)
        slot = (replica.config or {}).get("slot")
        try:
            slots = self._slot_addresses(service, gateway_server_id, with_slots=True)
        except ValueError:
            return None
        for server_id, s, address in slots:
            if server_id == replica.server_id and s == slot:
                return address
        return None

    def _routed_new_replicas(self) -> list[ServiceReplica]:
        return [r for r in self.new.values()
                if (r.config or {}).get("role") in ("web", "websocket")]

    def _gateway_log(self, step, container: str, since: float):
        res = step.run(dc.gateway_log_since(container, since), check=False, pty=False,
                       timeout=60, quiet=True)
        return health_events(_stdout(res)) if res.exit_code == 0 else {}

    def _await_gateways(self) -> None:
        """Arm the new replicas and wait until every gateway has them in rotation.

        Keystone decides, the gateways follow. Caddy's admin API does not show
        active health (caddyserver/caddy#6135), but the gateway's own log does:
        a failed check is a line, and so is the switch to healthy ("host is up").
        A switch is only logged when the slot was down, so per web replica:

        1. wait until every gateway has failed HEALTH_FAILS checks of its slot since
           it started (it answers 503 "not armed"): the slot is down everywhere;
        2. arm it (its ready path answers 200 from now on);
        3. wait until every gateway logged "host is up" for the slot after that.

        A websocket slot is checked by the gateways on Reverb's own health path: it
        goes up by itself, and step 3 waits for that. Nothing old is drained before
        all of this holds; a failure here removes the new replicas (drained first
        when armed) and the old ones keep serving.
        """
        replicas = self._routed_new_replicas()
        web = [r for r in replicas if (r.config or {}).get("role") == "web"]
        gateways = self._gateways()

        def started_at(r: ServiceReplica) -> float:
            return float((r.config or {}).get("started_at") or time.time()) \
                - STAMP_MARGIN_SECONDS

        if gateways and web:
            self._watch_gateways(
                "has the new slots down until they are armed", web, gateways,
                since=started_at,
                done=lambda ev, r: ev.failures_after(started_at(r)) >= HEALTH_FAILS,
                what="down (not armed yet)")
        for r in web:
            server = db.session.get(Server, r.server_id)
            with self.ctx.step(f"Arm {r.container_name}: Keystone's checks passed",
                               server=server) as step:
                self._arm(step, r)

        def armed_at(r: ServiceReplica) -> float:
            cfg = r.config or {}
            return float(cfg.get("armed_at") or cfg.get("started_at") or time.time()) \
                - STAMP_MARGIN_SECONDS

        if gateways and replicas:
            self._watch_gateways(
                "has the new replicas in rotation", replicas, gateways, since=armed_at,
                done=lambda ev, r: ev.up_after(armed_at(r)), what="in rotation")
        for r in replicas:
            server = db.session.get(Server, r.server_id)
            with self.ctx.step(f"Check {r.container_name} still runs", server=server) as step:
                self._check_not_crashing(step, r.container_name, "during the deploy")
                step.log("running, 0 restarts")

    def _watch_gateways(self, title: str, replicas: list[ServiceReplica], gateways,
                        since, done, what: str) -> None:
        """Poll each gateway's log until ``done(events, replica)`` holds for every replica."""
        for gateway, server, container in gateways:
            with self.ctx.step(f"Wait until the gateway on {server.name} {title}",
                               server=server) as step:
                pending: dict[str, ServiceReplica] = {}
                for r in replicas:
                    address = self._address_on(server.id, r)
                    if address:
                        pending[address] = r
                if not pending:
                    step.unchanged("this gateway does not route these replicas")
                    continue
                first = min(since(r) for r in pending.values())
                step.log(f"reading {container}'s log (Caddy's active health checks) for "
                         + ", ".join(sorted(pending)))
                deadline = time.monotonic() + GATEWAY_CONFIRM_SECONDS
                while pending:
                    self.ctx.check_cancelled()
                    events = self._gateway_log(step, container, first)
                    for address in list(pending):
                        r = pending[address]
                        if address in events and done(events[address], r):
                            step.log(f"{address} ({r.container_name}): {what}")
                            del pending[address]
                    if not pending:
                        break
                    if time.monotonic() > deadline:
                        raise StepFailed(
                            f"the gateway on {server.name} did not see "
                            + ", ".join(f"{a} ({r.container_name})" for a, r in pending.items())
                            + f" {what} within {GATEWAY_CONFIRM_SECONDS}s; nothing old was "
                            "touched")
                    time.sleep(GATEWAY_POLL_SECONDS)

    def _await_out_of_rotation(self, ctx: OperationContext,
                               drained: list[tuple[ServiceReplica, float]]) -> None:
        """Wait until every gateway failed HEALTH_FAILS checks of each drained replica.

        That is when Caddy marks the slot down and sends it nothing new. Bounded: a
        gateway that cannot be read (stopped, unreachable) is logged and not waited for.
        """
        for gateway, server, container in self._gateways():
            pending = {}
            for replica, stamp in drained:
                address = self._address_on(server.id, replica)
                if address:
                    pending[address] = (replica, stamp - STAMP_MARGIN_SECONDS)
            if not pending:
                continue
            since = min(s for _, s in pending.values())
            deadline = time.monotonic() + GATEWAY_DRAIN_CONFIRM_SECONDS
            with ctx.step(f"Wait until the gateway on {server.name} stops sending to "
                          + ", ".join(r.container_name for r, _ in pending.values()),
                          server=server) as gstep:
                while pending:
                    ctx.check_cancelled()
                    events = self._gateway_log(gstep, container, since)
                    for address in list(pending):
                        replica, after = pending[address]
                        fails = events[address].failures_after(after) if address in events else 0
                        if fails >= HEALTH_FAILS:
                            gstep.log(f"{address} ({replica.container_name}): out of rotation "
                                      f"({fails} failed checks since it was drained)")
                            del pending[address]
                    if not pending:
                        break
                    if time.monotonic() > deadline:
                        gstep.log("not confirmed within "
                                  f"{GATEWAY_DRAIN_CONFIRM_SECONDS}s: "
                                  + ", ".join(sorted(pending)) + "; going on")
                        break
                    time.sleep(GATEWAY_POLL_SECONDS)

    # ---------------------------------------------------------------- cutover
    def _cutover(self, cctx: OperationContext, phases) -> None:
        for phase in phases:
            cctx.check_cancelled()
            if phase.kind == "await_gateway":
                continue  # confirmed before the cutover started (_await_gateways)
            elif phase.kind == "scheduler_release":
                self._scheduler_release(cctx, phase)
            elif phase.kind == "scheduler_claim":
                self._scheduler_claim(cctx, phase)
            elif phase.kind == "drain":
                self._drain(cctx, self.plan.change_for(phase.service_id))
            elif phase.kind == "stop":
                self._stop_old(cctx, self.plan.change_for(phase.service_id))

    def _replica(self, replica_id: int) -> ServiceReplica | None:
        return db.session.get(ServiceReplica, replica_id)

    def _scheduler_release(self, cctx: OperationContext, phase) -> None:
        for rid in phase.detail.get("replica_ids", ()):
            replica = self._replica(rid)
            if replica is None or replica.status in (ReplicaStatus.REMOVED, ReplicaStatus.STOPPED):
                continue
            server = db.session.get(Server, replica.server_id)
            with cctx.step(f"Release the scheduler on {replica.container_name}",
                           server=server) as step:
                res = step.run(dc.scheduler_release(replica.container_name,
                                                    SCHEDULER_RELEASE_WAIT), check=False,
                               timeout=SCHEDULER_RELEASE_WAIT + 60)
                if res.exit_code == 3:
                    # Never two runners: stop this replica now rather than hand over early.
                    step.log("schedule:run did not finish in time: stopping this replica "
                             "before the scheduler moves")
                    step.run(dc.stop(replica.container_name, 30), check=False, timeout=120)
                elif res.exit_code != 0:
                    step.log(f"{replica.container_name} is not running: nothing to release")
        if self.env.scheduler_replica_id in phase.detail.get("replica_ids", ()):
            self.env.scheduler_replica_id = None
            db.session.commit()

    def _scheduler_claim(self, cctx: OperationContext, phase) -> None:
        d = phase.detail
        targets: list[ServiceReplica] = []
        if d.get("every_replica"):
            targets = [r for (sid, _), r in self.new.items() if sid == phase.service_id]
        elif d.get("replica_id"):
            r = self._replica(d["replica_id"])
            targets = [r] if r is not None else []
        else:
            r = self.new.get((phase.service_id, d.get("server_id")))
            targets = [r] if r is not None else []
        for replica in targets:
            server = db.session.get(Server, replica.server_id)
            with cctx.step(f"Run the scheduler on {replica.container_name}", server=server) as step:
                step.run(dc.scheduler_claim(replica.container_name), timeout=30)
                step.log("schedule:run runs every minute in this replica only"
                         if not d.get("every_replica") else
                         "every_replica mode: schedule:run runs in every replica")
        if targets and not d.get("every_replica"):
            self.env.scheduler_replica_id = targets[0].id
        elif not targets:
            self.env.scheduler_replica_id = None
        db.session.commit()

    def _drain(self, cctx: OperationContext, change: ServiceChange) -> None:
        drained: list[tuple[ServiceReplica, float]] = []
        for old in change.old_replicas:
            replica = self._replica(old.id)
            if replica is None or replica.status == ReplicaStatus.REMOVED:
                continue  # gone already (e.g. an interrupted deploy's leftover, removed)
            server = db.session.get(Server, replica.server_id)
            with cctx.step(f"Drain {replica.container_name}", server=server) as step:
                res = step.run(dc.drain(replica.container_name), check=False, pty=False,
                               timeout=30)
                stamp = parse_stamp(_stdout(res))
                if res.exit_code != 0 or stamp is None:
                    step.log(f"{replica.container_name} is not running")
                else:
                    step.log(f"{READY_PATH} answers 503 on {replica.container_name} from now on")
                    drained.append((replica, stamp))
                replica.status = ReplicaStatus.DRAINING
                db.session.commit()
        if drained:
            self._await_out_of_rotation(cctx, drained)
        window = change.drain_seconds
        with cctx.step(f"Drain window ({window:g}s)") as step:
            step.log("no gateway sends the old replicas new requests; their in-flight requests "
                     f"get {window:g}s to finish before SIGTERM")
            time.sleep(window)

    def _stop_old(self, cctx: OperationContext, change: ServiceChange) -> None:
        # A websocket (Reverb) replica has no drain signal: it leaves the gateway's rotation
        # when it stops (its health path fails, and a dial to it is retried on the new slot
        # within lb_try_duration); its open connections end at SIGTERM (close 1001) and
        # clients reconnect to the new slot (docs/cutover.md).
        for old in change.old_replicas:
            replica = self._replica(old.id)
            if replica is None or replica.status == ReplicaStatus.REMOVED:
                continue  # gone already (e.g. an interrupted deploy's leftover, removed)
            server = db.session.get(Server, replica.server_id)
            with cctx.step(f"Stop {replica.container_name} (SIGTERM, up to "
                           f"{change.stop_timeout}s)", server=server) as step:
                if change.role == "websocket":
                    step.log("websocket replica: open connections are closed at SIGTERM and "
                             "clients reconnect to the new slot")
                self._teardown(step, replica, timeout=change.stop_timeout, drain_first=False)
            replica.status = ReplicaStatus.REMOVED
            replica.health_status = HealthStatus.UNKNOWN
            replica.container_state = REMOVED_BY_KEYSTONE
            if self.env.scheduler_replica_id == replica.id:
                self.env.scheduler_replica_id = None
            db.session.commit()

    # ---------------------------------------------------------------- record / clean-up
    def _record(self, plan: DeployPlan) -> None:
        for change in plan.changes:
            svc = db.session.get(Service, change.service_id)
            svc.current_image_digest = self.artifact.image_digest
            svc.status = ServiceStatus.RUNNING
        self.env.current_artifact_id = self.artifact.id
        self.env.status = EnvironmentStatus.DEPLOYED
        db.session.commit()

    def _cleanup(self) -> None:
        """On failure or cancel: remove every new replica this deploy started; old ones stay."""
        if self.succeeded or self.cutover_started:
            return
        for rid in self.started:
            replica = self._replica(rid)
            if replica is None or replica.status in (ReplicaStatus.REMOVED, ReplicaStatus.FAILED):
                continue
            server = db.session.get(Server, replica.server_id)
            try:  # noqa: SIM105 - the row is marked removed whatever happens
                with self.ctx.step(f"Remove new replica {replica.container_name}",
                                   server=server, cleanup=True) as step:
                    step.run(dc.logs_tail(replica.container_name, LOG_TAIL_LINES), check=False,
                             timeout=60)
                    # Armed, it may be in rotation: take it out before stopping it.
                    armed = bool((replica.config or {}).get("armed_at"))
                    self._teardown(step, replica, timeout=10, drain_first=armed)
            finally:
                replica.status = ReplicaStatus.REMOVED
                db.session.commit()


def desired_route_config(env: Environment, route: ServiceSlice) -> dict | None:
    """The config a deploy gives ``route``: every blue/green slot of the environment's web
    (and websocket) service. The attach operation of a domain installs it at once, so a
    domain attached after the first deploy answers without waiting for the next deploy
    (issue 13, defect 8). None when the route cannot be listed yet (no gateway server)."""
    return EnvironmentDeploy(None, env)._desired_route(route)


@operation_handler(OperationKind.ENVIRONMENT_DEPLOY)
def environment_deploy(ctx: OperationContext) -> None:
    env = ctx.target
    if env is None:
        raise StepFailed("The environment no longer exists.")
    EnvironmentDeploy(ctx, env).run()


__all__ = ["environment_deploy", "EnvironmentDeploy", "snapshot", "desired_route_config", "replica_environment",
           "environment_values", "migration_settings", "SchedulerMode"]
