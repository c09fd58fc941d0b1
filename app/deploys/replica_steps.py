"""The steps that start one new replica of a deploy (``service_deploy`` / ``replica_deploy``):
start in the free slot, health-check, arm it for the gateway, and remove what failed.
A part of :class:`app.deploys.handlers.EnvironmentDeploy`, kept apart by concern."""
from __future__ import annotations

import copy
import logging
import time

import sqlalchemy as sa

from app.deploys import commands as dc
from app.deploys.gateway_health import parse_stamp
from app.deploys.planning import ServiceChange
from app.deploys.slots import (APP_PORT, KEYSTONE_SERVICES_ROOT, READY_PATH, container_name,
                               project_name, slot_alias, slot_port)
from app.deploys.values import last_line, replica_environment, stdout_text
from app.drivers import get_driver
from app.drivers.base import FirewallRule
from app.drivers.compose import compose_cmd, dump_yaml, log_project_files, project_archive
from app.endpoints import Unreachable, cross_server_address, upsert_slot_endpoint
from app.extensions import db
from app.models import BuildArtifact, Environment, Server, Service, ServiceReplica
from app.models.enums import HealthStatus, OperationKind, ReplicaStatus
from app.models.service import REMOVED_BY_KEYSTONE
from app.operations import OperationContext, StepFailed
from app.operations.fanout import Child
from app.services_ops.steps import open_firewall, require_public_firewall

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
OBSERVE_SECONDS = 10.0
"""How long a new worker must keep running, without a restart, before it counts as up."""
READY_TRIES = 5


class WorkersCrashed(StepFailed):
    """New workers that exited or restarted while they were watched (``names``)."""

    def __init__(self, message: str, names: tuple[str, ...]):
        super().__init__(message)
        self.names = names


class _Collected(dict):
    """``new`` of a fan-out thread: each replica stored also goes to the shared ``made`` by
    id (its row belongs to the thread's session, which ends with the thread)."""

    def __init__(self, made: dict):
        super().__init__()
        self._made = made

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if isinstance(value, (list, tuple)):
            self._made[key] = [sa.inspect(v).identity[0] for v in value]
        else:
            self._made[key] = sa.inspect(value).identity[0]


class ReplicaSteps:
    """New replicas: mixed into EnvironmentDeploy (self.ctx, self.env, self.new, ...)."""

    # ---------------------------------------------------------------- new replicas
    def _service_deploy(self, cctx: OperationContext, change: ServiceChange) -> None:
        """One ``replica_deploy`` child per server, side by side (app.operations.fanout):
        each in its own thread and database session, on its server's one SSH connection.
        The first failure stops the others; the deploy's clean-up then removes every new
        replica and the old ones keep serving (nothing was armed before all were healthy)."""
        service = db.session.get(Service, change.service_id)
        children, made = [], {}
        ids = (self.artifact.id, self.env.id)
        for placement in change.placements:
            if not placement.slot:
                continue
            server = db.session.get(Server, placement.server_id)
            children.append(Child(
                OperationKind.REPLICA_DEPLOY, "service", service.id,
                lambda rctx, p=placement: self._in_thread(made, *ids)._replica_deploy(rctx, change, p),
                summary=f"{service.name}: {placement.slot} slot on {server.name}",
                server_id=server.id))
        try:
            cctx.run_children(children)
        finally:
            self._collect(made)

    def _collect(self, made: dict) -> None:
        """The threads' sessions are gone: this thread loads what they made, by id."""
        for key, made_ids in made.items():
            self.new[key] = ([db.session.get(ServiceReplica, i) for i in made_ids]
                             if isinstance(made_ids, list)
                             else db.session.get(ServiceReplica, made_ids))

    def _in_thread(self, made: dict, artifact_id: int, env_id: int) -> "ReplicaSteps":
        """This deploy as seen from a fan-out thread: the same plan, facts, values and
        lists, its database rows loaded in the thread's own session, and a ``new`` of
        its own whose replicas reach ``made`` by id when the thread's work ends."""
        view = copy.copy(self)
        view.artifact = db.session.get(BuildArtifact, artifact_id)
        view.env = db.session.get(Environment, env_id)
        view.new = _Collected(made)
        return view

    def _replica_deploy(self, rctx: OperationContext, change: ServiceChange, placement) -> None:
        """The placement's new replicas on one server (``placement.count`` of them, issue 20.2),
        all in the same slot: a cutover replaces every replica of a slot together."""
        self._start_replicas(rctx, change, placement.server_id, placement.slot,
                             range(max(1, placement.count)), placement.old)

    def _start_replicas(self, rctx: OperationContext, change: ServiceChange, server_id: int,
                        slot: str, indices, old=()) -> list[ServiceReplica]:
        """Start replicas ``indices`` of ``slot`` on one server and check them (not armed).

        Web and websocket replicas start and are health-checked one after another. Workers
        all start first and are then watched side by side: one "keeps running" window for
        the server's new workers, not one per worker (3 workers: 10 s, not 30 s). A worker
        that crashes is removed with its last log lines; the others of the batch are left
        to the operation's clean-up, like the healthy replicas of a failed deploy."""
        indices = list(indices)
        if change.role != "worker" or len(indices) < 2:
            return [self._start_replica(rctx, change, server_id, slot, i, old)
                    for i in indices]
        server = db.session.get(Server, server_id)
        launched: list[ServiceReplica] = []
        try:
            for index in indices:
                launched.append(self._launch_replica(rctx, change, server_id, slot, index, old))
            self._health_check(rctx, db.session.get(Service, change.service_id), change,
                               launched, server, change.role)
        except WorkersCrashed as exc:
            for replica in launched:
                if replica.container_name in exc.names:
                    self._remove_failed(rctx, replica, server)
            raise
        for replica, index in zip(launched, indices):
            self.new[(change.service_id, server_id, index)] = replica
        return launched

    def _start_replica(self, rctx: OperationContext, change: ServiceChange, server_id: int,
                       slot: str, index: int, old=()) -> ServiceReplica:
        """Start replica ``index`` of ``slot`` on one server and health-check it (not armed)."""
        replica = self._launch_replica(rctx, change, server_id, slot, index, old)
        server = db.session.get(Server, server_id)
        try:
            self._health_check(rctx, db.session.get(Service, change.service_id), change,
                               [replica], server, change.role)
        except BaseException:
            self._remove_failed(rctx, replica, server)
            raise
        self.new[(change.service_id, server_id, index)] = replica
        return replica

    def _launch_replica(self, rctx: OperationContext, change: ServiceChange, server_id: int,
                        slot: str, index: int, old=()) -> ServiceReplica:
        """Record replica ``index`` of ``slot`` on one server and start its container
        (removed again, its log kept, when the start fails); not checked yet."""
        service = db.session.get(Service, change.service_id)
        server = db.session.get(Server, server_id)
        fact = self.facts[service.id]
        role = change.role
        name = container_name(service.name, service.id, slot, self.ctx.id, index)
        project = project_name(service.id, slot, self.ctx.id, index)
        routed = role in ("web", "websocket")
        multi = len(fact.server_ids) > 1
        published = slot_port(service.id, slot, index) if (routed and multi) else None
        address = None
        if published:
            try:  # the private IP, or the public one if the server allows it (SPEC 14)
                address = cross_server_address(server)[1]
            except Unreachable as exc:
                raise StepFailed(f"{exc} (its replicas cannot be reached from the other "
                                 "servers' gateways)") from None
        alias = slot_alias(service.name, service.id, slot, index)
        replica = ServiceReplica(
            service_id=service.id, server_id=server.id, operation_id=self.ctx.id,
            container_name=name, image_digest=self.artifact.image_digest,
            internal_host=alias if routed else name,
            internal_port=APP_PORT if routed else None, public_port=published,
            status=ReplicaStatus.STARTING, health_status=HealthStatus.STARTING,
            # The service owns the limits (issue 21.7): the row records what the container
            # was created with, so a page can tell a changed limit not deployed yet.
            cpu_limit=service.default_cpu_limit, memory_limit_mb=service.default_memory_limit_mb,
            config={"slot": slot, "index": index, "revision": service.desired_revision,
                    "config_hash": fact.config_hash, "project": project, "role": role,
                    "artifact_id": self.artifact.id})
        db.session.add(replica)
        db.session.flush()
        if published:  # the slot's endpoint, what other servers' gateways dial
            upsert_slot_endpoint(service, replica, server, published)
        db.session.commit()
        self.started.append(replica.id)
        driver = get_driver(service)
        rendered = driver.render_replica(
            service, image=self.image, project_name=project, container_name=name,
            environment=replica_environment(service, self.values, server.id),
            replica_id=replica.id,
            operation_id=self.ctx.id, role=role,
            private_ip=address, published_port=published)
        entry = rendered.compose["services"][role]
        # An init as PID 1 forwards SIGTERM: php -S (or artisan) as PID 1 would ignore it and
        # every stop would wait out the whole timeout before SIGKILL.
        entry["init"] = True
        if routed:
            # The replica's fixed alias: what every gateway on this server already lists.
            net = entry["networks"]["keystone"]
            net["aliases"] = list(dict.fromkeys([*net.get("aliases", []), alias]))
        rendered.compose_yaml = dump_yaml(rendered.compose)
        replica.config = {**replica.config, "directory": rendered.directory}
        db.session.commit()
        try:
            if published:
                require_public_firewall(rctx, server, [FirewallRule(published, "tcp", "")])
            with rctx.step(f"Start {name} in the {slot} slot on {server.name}",
                           server=server) as step:
                self._remove_leftovers(step, old, slot, index)
                migrations = getattr(self, "migrations", None)
                # Started now, or (migrations running meanwhile) created now and started once
                # they succeeded.
                up = ("up", "-d", "--no-build") if migrations is None else \
                    ("up", "--no-start", "--no-build")
                log_project_files(step, rendered)
                # One round trip: the network, a crash's leftover of this name removed, the
                # project's files (on stdin, never in the command), the server's clock, up.
                res = step.run(dc.start_slot(name, rendered.directory,
                                             compose_cmd(rendered.directory, project, *up)),
                               stdin=project_archive(rendered), pty=False, timeout=600)
                replica.config = {**(replica.config or {}),
                                  "started_at": dc.parse_started_at(stdout_text(res))}
                db.session.commit()
                if migrations is not None:
                    self._await_migrations(rctx, step, migrations)
                    step.run(dc.start(name), timeout=120)
            if published:
                # Other servers' gateways reach this slot on the private network only.
                open_firewall(rctx, server, [FirewallRule(
                    published, "tcp", f"laravel {service.id} {slot}"
                    + (f" r{index + 1}" if index else ""))])
        except BaseException:
            self._remove_failed(rctx, replica, server)
            raise
        return replica

    def _await_migrations(self, rctx, step, migrations) -> None:
        if not migrations.done:
            step.log("created; it starts once the migrations have succeeded")
        while not migrations.wait(0.2):
            rctx.check_cancelled()
        if migrations.error is not None:
            raise StepFailed("not started: the migrations did not succeed")
        step.log("migrations done: starting it")

    def _remove_leftovers(self, step, old, slot: str, index: int = 0) -> None:
        """An interrupted deploy's replica in this slot and place (it never passed its checks,
        so it was never armed and no gateway sends it anything) goes before the new one
        starts: two containers answering one alias would make the gateway's checks flap."""
        for fact in old:
            if fact.slot != slot or fact.index != index \
                    or fact.status != ReplicaStatus.STARTING.value:
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

    @staticmethod
    def _judge(name: str, parts: list[str] | None, what: str) -> str | None:
        """What is wrong with a new container from its inspect ``parts`` (None: not found).

        A new container starts with a restart count of 0: any restart during the
        deploy means its process exited and Docker's restart policy brought it back.
        """
        if not parts or len(parts) < 3:
            return f"{name} is gone ({what})"
        restarts = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
        exit_code = parts[5] if len(parts) > 5 else "?"
        if restarts > 0:
            return (f"{name} is crash-looping: it restarted {restarts} time"
                    f"{'s' if restarts != 1 else ''} {what} (last exit code {exit_code})")
        if parts[2] != "true":
            return f"{name} exited with code {exit_code} {what}"
        return None

    def _check_not_crashing(self, step, name: str, what: str) -> list[str]:
        """Inspect ``name``; fail when it is not running or has restarted (a crash loop)."""
        res = step.run(dc.inspect(name), check=False, pty=False, timeout=30)
        parts = stdout_text(res).split()
        problem = self._judge(name, parts if res.exit_code == 0 else None, what)
        if problem:
            raise StepFailed(problem)
        return parts

    def _check_all_running(self, step, names: list[str], what: str) -> dict[str, list[str]]:
        """:meth:`_check_not_crashing` of several containers of one server, in one
        ``docker inspect``; every one that fails is named (:class:`WorkersCrashed`)."""
        if len(names) == 1:
            return {names[0]: self._check_not_crashing(step, names[0], what)}
        res = step.run(dc.inspect_many(names), check=False, pty=False, timeout=30)
        seen = dc.parse_inspect_many(stdout_text(res))
        problems = {n: p for n in names if (p := self._judge(n, seen.get(n), what))}
        if problems:
            raise WorkersCrashed("; ".join(problems.values()), tuple(problems))
        return seen

    def _observe(self, rctx, step, names: list[str], seconds: float) -> dict[str, list[str]]:
        """Watch ``names`` (one server's) for ``seconds`` side by side: each must keep
        running without a single restart."""
        deadline = time.monotonic() + seconds
        seen = self._check_all_running(step, names, "right after it started")
        while time.monotonic() < deadline:
            rctx.check_cancelled()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            seen = self._check_all_running(step, names, f"within {seconds:g}s of starting")
        return seen

    def _health_check(self, rctx, service, change, replicas, server, role) -> None:
        """Check new replicas of one server (not armed): workers together (they must keep
        running), web and websocket replicas one by one on their health path."""
        if role == "worker":
            self._check_workers(rctx, change, replicas, server)
            return
        for replica in replicas:
            self._check_endpoint(rctx, change, replica, server, role)

    def _check_workers(self, rctx, change, replicas, server) -> None:
        names = [r.container_name for r in replicas]
        observe = max(OBSERVE_SECONDS, float(change.health["interval"]) * 2)
        title = (f"Check {names[0]} keeps running" if len(names) == 1 else
                 f"Check {', '.join(names)} keep running")
        with rctx.step(title, server=server) as step:
            step.log(f"a worker has no HTTP endpoint: {'it' if len(names) == 1 else 'each'} "
                     f"must run for {observe:g}s without exiting or restarting"
                     + (" (watched side by side)" if len(names) > 1 else ""))
            seen = self._observe(rctx, step, names, observe)
            for replica in replicas:
                step.log(f"{replica.container_name} ran {observe:g}s with 0 restarts")
                self._mark_running(replica, seen.get(replica.container_name) or [])

    def _check_endpoint(self, rctx, change, replica, server, role) -> None:
        h = change.health
        name = replica.container_name
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
                code = last_line(res) or "000"
                if code == "404" and path != "/":
                    res2 = step.run(dc.probe(name, "/", APP_PORT, timeout), check=False,
                                    pty=False, timeout=timeout + 15)
                    fallback = last_line(res2) or "000"
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
            parts = self._check_not_crashing(step, name, "while it was health-checked")
            if role == "web":
                self._check_ready_handler(rctx, step, name)
            elif role == "websocket":
                # Laravel Reverb serves its own GET /up (checked above) and no Keystone ready
                # handler: the gateway checks the health path on websocket slots, and an old
                # replica leaves the rotation when it stops (the gateway retries the dial).
                step.log(f"the gateway checks {path} on the websocket slots")
            # The container's id from that inspect: a restart since would show in the
            # gateway wait's "still runs" check, before anything old is touched.
            self._mark_running(replica, parts)

    def _check_ready_handler(self, rctx, step, name: str) -> None:
        """The image answers the ready path, and 503 "not armed" until Keystone arms it."""
        ready = ""
        for attempt in range(1, READY_TRIES + 1):
            rctx.check_cancelled()
            res = step.run(dc.ready_probe(name, APP_PORT), check=False, pty=False, timeout=30)
            ready = last_line(res) or "000"
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
        # One round trip: the server's clock, the marker, then the ready path asked.
        res = step.run(dc.arm(name, APP_PORT), check=False, pty=False, timeout=30)
        armed_at = parse_stamp(stdout_text(res))
        if res.exit_code != 0 or armed_at is None:
            raise StepFailed(f"could not arm {name}: {last_line(res) or 'no answer'}")
        replica.config = {**(replica.config or {}), "armed_at": armed_at}
        db.session.commit()
        ready = last_line(res) or "000"
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
            drained_at = parse_stamp(stdout_text(res))
            if res.exit_code == 0 and drained_at is not None:
                self._await_out_of_rotation(step.ctx, [(replica, drained_at)])
        directory = (replica.config or {}).get("directory")
        if not (directory and directory.startswith(f"{KEYSTONE_SERVICES_ROOT}/")):
            directory = None  # never remove a directory Keystone did not make
        # Stop (SIGTERM, SIGKILL after ``timeout``), remove, its files: one round trip.
        step.run(dc.teardown(name, timeout, directory), check=False, timeout=timeout + 120)

