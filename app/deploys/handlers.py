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

import shlex
import time

from app.builds.artifacts import (BuildError, artifact_registry, find_or_build, image_ref,
                                  make_present)
from app.builds.config import runs_prebuilt_image
from app.builds.plan import BuildPlanError
from app.deploys import commands as dc
from app.deploys.gateway_health import parse_stamp
from app.deploys.planning import DeployPlan, PlanError, ServiceChange, ServiceFact, plan_deploy
from app.deploys.replica_steps import LOG_TAIL_LINES, ReplicaSteps
from app.deploys.routing import GatewayRouting
from app.deploys.service import environment_servers, service_server_ids
from app.deploys.slots import READY_PATH
from app.deploys.timing import NULL_CLOCK, NullClock, PhaseClock
from app.deploys.values import (commit_details, environment_secrets, environment_values,
                                replica_environment, snapshot, stdout_text)
from app.drivers import get_driver
from app.drivers.compose import write_project
from app.drivers.laravel.settings import LaravelSettings, SettingsError
from app.extensions import db
from app.models import BuildArtifact, Environment, Server, Service, ServiceReplica, ServiceSlice
from app.models.enums import (ArtifactStatus, DeployPolicy, EnvironmentStatus, HealthStatus,
                              OperationKind, ReplicaStatus, ServiceStatus, SliceStatus)
from app.models.service import REMOVED_BY_KEYSTONE
from app.operations import OperationContext, StepFailed, operation_handler
from app.repositories import resolve_commit
from app.repositories.validation import ValidationError

SCHEDULER_RELEASE_WAIT = 300


# --------------------------------------------------------------------------- the deploy

class EnvironmentDeploy(ReplicaSteps, GatewayRouting):
    # Records nothing unless the instance has its own (a deploy run: see __init__).
    clock: PhaseClock | NullClock = NULL_CLOCK

    migrations = None
    """Migrations running while the new replicas are created (a Background): _run_phases."""

    def __init__(self, ctx: OperationContext, env: Environment):
        self.ctx = ctx
        self.env = env
        # (service id, server id, index in the slot) -> new replica
        self.new: dict[tuple[int, int, int], ServiceReplica] = {}
        self.started: list[int] = []  # ids of replicas this deploy created (for clean-up)
        self.cutover_started = False
        self.succeeded = False
        self.plan: DeployPlan | None = None
        self.artifact: BuildArtifact | None = None
        self.image: str = ""
        self.values: dict[str, str] = {}
        self.facts: dict[int, ServiceFact] = {}
        self.clock = PhaseClock()
        self._pull: tuple | None = None  # (servers, registry, verified): pulled after planning

    # ---------------------------------------------------------------- top level
    def run(self) -> None:
        try:
            self._run()
        finally:
            self._report_timing()

    def _report_timing(self) -> None:
        """Seconds per phase on the operation's result (the UI and bench.deploy_phases)."""
        self.clock.stop()
        phases, timing = self.clock.report()
        self.ctx.result.update({"phases": phases, "timing": timing})

    def _health_check(self, rctx, *args, **kwargs):
        with self.clock.phase("health"):
            return super()._health_check(rctx, *args, **kwargs)

    def _run(self) -> None:
        ctx, env = self.ctx, self.env
        ctx.on_cleanup(self._cleanup)
        previous_status = env.status
        servers = environment_servers(env)
        if not servers:
            raise StepFailed("The environment has no application service placed on a server.")
        db.session.commit()  # the warm-up threads read the servers in sessions of their own
        ctx.runtime.warm_up([s.id for s in servers])  # handshakes while the branch resolves
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
        with self.clock.phase("plan"):
            try:
                plan = plan_deploy(snap, self.artifact.image_digest,
                                   force=bool(ctx.params.get("force")))
            except PlanError as exc:
                raise StepFailed(f"Cannot plan the deploy: {exc}") from None
        self.plan = plan
        with self.clock.phase("plan"), ctx.step("Plan the deploy") as step:
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
            # Nothing to deploy: no pull, no server touched beyond the facts read above.
            with self.clock.phase("record"):
                env.current_artifact_id = self.artifact.id
                if env.status != EnvironmentStatus.DEPLOYED:
                    env.status = EnvironmentStatus.DEPLOYED
                db.session.commit()
            self.succeeded = True
            return
        if self._pull is not None:
            pull_servers, registry, verified = self._pull
            with self.clock.phase("pull"):
                make_present(ctx, self.artifact, pull_servers, registry, verified=verified)
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
            self._pull = (servers, registry, set())
            return artifact
        sha = ctx.params.get("commit_sha")
        if not sha and not runs_prebuilt_image(env.build_config):  # external_registry: no git
            with self.clock.phase("resolve"), ctx.step(f"Resolve {env.branch}") as step:
                try:
                    sha = resolve_commit(env, on_line=step.log)
                except Exception as exc:  # GitAccessError / ValidationError: a user message
                    raise StepFailed(f"Could not resolve {env.branch}: {exc}") from None
        try:
            artifact, registry, verified = find_or_build(ctx, env, sha, servers, clock=self.clock)
        except StepFailed:
            raise
        except (BuildPlanError, BuildError, ValidationError) as exc:
            raise StepFailed(str(exc)) from None
        # Pulled once the plan says something is to be deployed (a no-change deploy pulls
        # nothing): see _run.
        self._pull = (servers, registry, verified)
        return artifact

    def _route_and_await(self, plan: DeployPlan, routes_done: bool) -> bool:
        """The routes (once per deploy), then every gateway confirming the new replicas."""
        if not routes_done:
            with self.clock.phase("routes"):
                self._ensure_routes(plan)
        with self.clock.phase("gateway"):
            self._await_gateways()
        return True

    def _run_phases(self, plan: DeployPlan) -> None:
        try:
            self._run_phases_in_order(plan)
        except BaseException as exc:
            # Never end with the migrations still running; their failure is the story
            # (a replica that waited for them failed because of it).
            error = self._settle_migrations()
            if isinstance(error, Exception) and isinstance(exc, Exception):
                raise error from None
            raise
        error = self._settle_migrations()
        if error is not None:
            raise error

    def _settle_migrations(self) -> BaseException | None:
        """Wait for migrations running in the background to end; what they raised."""
        migrations, self.migrations = self.migrations, None
        return migrations.join() if migrations is not None else None

    def _run_phases_in_order(self, plan: DeployPlan) -> None:
        kinds = [p.kind for p in plan.phases]
        cutover_kinds = {"await_gateway", "scheduler_release", "scheduler_claim", "drain", "stop"}
        cutover = [p for p in plan.phases if p.kind in cutover_kinds]
        done_cutover = False
        routes_done = False
        for index, phase in enumerate(plan.phases):
            self.ctx.check_cancelled()
            if self.migrations is not None and phase.kind not in ("start", "health"):
                # The new replicas waited for them to start; nothing else runs beside them.
                error = self._settle_migrations()
                if error is not None:
                    raise error
            if phase.kind == "check_dependencies":
                with self.clock.phase("dependencies"):
                    self._check_dependencies()
            elif phase.kind == "pre_switch":
                with self.clock.phase("pre_switch"):
                    self._pre_switch()
            elif phase.kind == "migrate":
                if any(p.kind == "start" for p in plan.phases[index + 1:]):
                    # Before the switch: the migrations run while the new replicas are
                    # created (pulled image, compose project, container), and each replica
                    # starts only once they succeeded. No new code runs on the old schema,
                    # and the deploy does not wait for one and then the other.
                    self.migrations = self.ctx.in_background(self._migrate_timed,
                                                             name="migrate")
                else:
                    self._migrate_timed()
            elif phase.kind == "start":
                if not routes_done:
                    # Routes first (only when their slot list changes: the first deploy, a new
                    # server): a slot is then down on every gateway before its replica is
                    # armed, so the gateway's switch to "up" is a transition it logs.
                    routes_done = True
                    with self.clock.phase("routes"):
                        self._ensure_routes(plan)
                change = plan.change_for(phase.service_id)
                service = db.session.get(Service, phase.service_id)
                with self.clock.phase("start"):  # its health checks count as "health"
                    self.ctx.run_child(OperationKind.SERVICE_DEPLOY, "service", service.id,
                                       lambda cctx, c=change: self._service_deploy(cctx, c),
                                       summary=f"Deploy {service.name}: "
                                               f"{', '.join(change.reasons)}",
                                       lock_keys=[f"service:{service.id}"])
            elif phase.kind == "health":
                pass  # each replica_deploy child health-checks its replica before it succeeds
            elif phase.kind in cutover_kinds:
                if not done_cutover:
                    done_cutover = True
                    # Before anything old is touched: every new replica armed and in rotation
                    # on every gateway, and still running. A failure here takes the new
                    # replicas away again and the old ones keep serving.
                    routes_done = self._route_and_await(plan, routes_done)
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
                    routes_done = self._route_and_await(plan, routes_done)
                with self.clock.phase("record"):
                    self._record(plan)
        if "record" not in kinds:
            with self.clock.phase("record"):
                self._record(plan)

    # ---------------------------------------------------------------- checks
    def _check_dependencies(self) -> None:
        env = self.env
        with self.ctx.step("Check dependency services and attached slices") as step:
            problems = []
            running_by_server: dict[int, list[tuple[Service, ServiceReplica]]] = {}
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
                    running_by_server.setdefault(r.server_id, []).append((svc, r))
                step.log(f"{svc.name} ({att.role.value}): checked, not redeployed")
            # One `docker inspect` per server for all its dependency containers (one SSH
            # round trip, not one per service).
            for server_id, pairs in running_by_server.items():
                server = db.session.get(Server, server_id)
                names = list(dict.fromkeys(r.container_name for _, r in pairs))
                svc_names = ", ".join(dict.fromkeys(svc.name for svc, _ in pairs))
                with self.ctx.step(f"Check {svc_names} on {server.name}", server=server) as s2:
                    res = s2.run(dc.inspect_many(names), check=False, pty=False, timeout=30)
                    seen = dc.parse_inspect_many(stdout_text(res))
                    healthy = []
                    for svc, r in pairs:
                        parts = seen.get(r.container_name)
                        if parts is None or len(parts) < 4 or parts[2] != "true":
                            problems.append(f"{svc.name}: container {r.container_name} is not "
                                            "running")
                        elif parts[3] not in ("healthy", "none"):
                            problems.append(f"{svc.name}: container health is {parts[3]}")
                        else:
                            healthy.append(f"{svc.name} is running ({parts[3]})")
                    if len(healthy) == len(pairs):
                        s2.unchanged("; ".join(healthy))
                    elif healthy:
                        s2.log("; ".join(healthy))
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

    def _migrate_timed(self) -> None:
        with self.clock.phase("migrate"):
            self._migrate(self.plan)

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
            write_project(step, rendered)
            try:
                step.run(dc.one_off_run(directory, name, "worker", name, argv), timeout=1800)
            finally:
                # `run --rm` removed the container unless it was cut short; the project is
                # that one container on the external network, so nothing else is left.
                step.run(dc.remove_one_off(name, directory), check=False, timeout=120)

    # ---------------------------------------------------------------- cutover
    def _cutover(self, cctx: OperationContext, phases) -> None:
        # The drain signals go first (every new replica is in rotation already): the
        # gateways then count their failed checks while the scheduler changes hands, so
        # the hand-over costs no time of its own. HTTP rotation and the scheduler flag
        # are independent; the stops still come after both.
        signalled: dict[int, list] = {}
        for phase in phases:
            if phase.kind == "drain":
                cctx.check_cancelled()
                with self.clock.phase("drain"):
                    signalled[phase.service_id] = self._drain_signal(
                        cctx, self.plan.change_for(phase.service_id))
        for phase in phases:
            cctx.check_cancelled()
            if phase.kind == "await_gateway":
                continue  # confirmed before the cutover started (_await_gateways)
            elif phase.kind == "scheduler_release":
                with self.clock.phase("scheduler"):
                    self._scheduler_release(cctx, phase)
            elif phase.kind == "scheduler_claim":
                with self.clock.phase("scheduler"):
                    self._scheduler_claim(cctx, phase)
            elif phase.kind == "drain":
                with self.clock.phase("drain"):
                    self._drain_wait(cctx, self.plan.change_for(phase.service_id),
                                     signalled.get(phase.service_id, []))
            elif phase.kind == "stop":
                with self.clock.phase("stop"):
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
            targets = [r for (sid, _, _), r in self.new.items() if sid == phase.service_id]
        elif d.get("replica_id"):
            r = self._replica(d["replica_id"])
            targets = [r] if r is not None else []
        else:
            r = self.new.get((phase.service_id, d.get("server_id"), 0))
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
        """Drain ``change``'s old replicas: the signal, the gateways' confirmation, the window."""
        self._drain_wait(cctx, change, self._drain_signal(cctx, change))

    def _drain_signal(self, cctx: OperationContext,
                      change: ServiceChange) -> list[tuple[ServiceReplica, float]]:
        """Tell the old replicas to fail the gateways' checks; ``[(replica, stamp)]``."""
        drained: list[tuple[ServiceReplica, float]] = []
        for old in change.old_replicas:
            replica = self._replica(old.id)
            if replica is None or replica.status == ReplicaStatus.REMOVED:
                continue  # gone already (e.g. an interrupted deploy's leftover, removed)
            server = db.session.get(Server, replica.server_id)
            with cctx.step(f"Drain {replica.container_name}", server=server) as step:
                res = step.run(dc.drain(replica.container_name), check=False, pty=False,
                               timeout=30)
                stamp = parse_stamp(stdout_text(res))
                if res.exit_code != 0 or stamp is None:
                    step.log(f"{replica.container_name} is not running")
                else:
                    step.log(f"{READY_PATH} answers 503 on {replica.container_name} from now on")
                    drained.append((replica, stamp))
                replica.status = ReplicaStatus.DRAINING
                db.session.commit()
        return drained

    def _drain_wait(self, cctx: OperationContext, change: ServiceChange,
                    drained: list[tuple[ServiceReplica, float]]) -> None:
        """Every gateway took the drained replicas out of rotation; then the drain window."""
        if drained:
            self._await_out_of_rotation(cctx, drained)
        window = change.drain_seconds
        with self.clock.phase("drain_window"), cctx.step(f"Drain window ({window:g}s)") as step:
            step.log("no gateway sends the old replicas new requests; their in-flight requests "
                     f"get {window:g}s to finish before SIGTERM")
            time.sleep(window)

    def _stop_old(self, cctx: OperationContext, change: ServiceChange) -> None:
        # A websocket (Reverb) replica has no drain signal: it leaves the gateway's rotation
        # when it stops (its health path fails, and a dial to it is retried on the new slot
        # within lb_try_duration); its open connections end at SIGTERM (close 1001) and
        # clients reconnect to the new slot (docs/cutover.md).
        # Every old replica is out of rotation by now (drained, window waited): the servers
        # stop theirs side by side, each thread with its own session (rows loaded by id).
        def stop_one(replica_id: int) -> int | None:
            replica = self._replica(replica_id)
            if replica is None or replica.status == ReplicaStatus.REMOVED:
                return None  # gone already (e.g. an interrupted deploy's leftover, removed)
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
            db.session.commit()
            return replica.id

        old_ids = [old.id for old in change.old_replicas]
        stopped = (cctx.in_parallel(old_ids, stop_one) if len(old_ids) > 1
                   else [stop_one(i) for i in old_ids])
        if self.env.scheduler_replica_id in set(stopped) - {None}:
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
           "environment_values"]
