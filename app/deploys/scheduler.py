"""Scheduler mode changes between deploys (SPEC 8; issue 13, defect 7).

A change of the scheduler's mode (disabled / single / every_replica) or of its
target service (the web service or a worker service) is stored on the
environment (its one home: ``Environment.scheduler_*``) and applied at once by
ONE ``config_change`` operation (``params["change"] == "scheduler"``) holding
the environment's lock, so it never runs beside a deploy's cutover. The
operation converges the running replicas to whatever the environment says when
it runs (a queued change applies the latest settings):

1. read which live replicas hold the flag (one ``docker exec`` per replica),
2. release every live replica that must not run the scheduler: remove the flag
   and wait until no ``schedule:run`` is in flight there -- the cutover's own
   command (:func:`app.deploys.commands.scheduler_release`),
3. only then set the flag where it belongs: one replica in ``single`` mode
   (the current runner when it is a replica of the target, else the first),
   every live replica of the target in ``every_replica`` mode, none when
   disabled.

If a release does not finish in time the operation fails BEFORE any claim:
never two runners in single mode.

:func:`plan_scheduler_change` is pure (unit-tested); the handler runs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from app.deploys import commands as dc
from app.deploys.service import app_services
from app.extensions import db
from app.models import Server
from app.models.enums import OperationKind, ReplicaStatus, SchedulerMode
from app.operations import StepFailed, start_operation
from app.operations.registry import config_change_handler

SCHEDULER_RELEASE_WAIT = 300
CHANGE = "scheduler"
TARGET_ROLES = ("web", "worker")


@dataclass(frozen=True)
class LiveReplica:
    id: int
    service_id: int
    server_id: int
    container_name: str


@dataclass(frozen=True)
class SchedulerChange:
    release: tuple[LiveReplica, ...]   # flag removed, then wait for schedule:run to finish
    claim: tuple[LiveReplica, ...]     # flag set, after every release succeeded
    runner_replica_id: int | None      # Environment.scheduler_replica_id afterwards (single)

    def describe(self) -> str:
        if not self.claim:
            return "no replica runs the scheduler"
        names = ", ".join(r.container_name for r in self.claim)
        return f"schedule:run runs on {names}"


def plan_scheduler_change(*, enabled: bool, mode: str, target_service_id: int | None,
                          replicas: Iterable[LiveReplica],
                          current_runner_id: int | None) -> SchedulerChange:
    """Which live replicas lose the flag and which get it (pure).

    Every live replica that must not run the scheduler is released, not only the
    recorded runner: removing a flag that is not set costs one ``docker exec``, a
    stale record (e.g. after every_replica) costs two runners.
    """
    live = sorted(replicas, key=lambda r: (r.server_id, r.id))
    candidates = [r for r in live if r.service_id == target_service_id]
    if not enabled or target_service_id is None or not candidates:
        wanted: list[LiveReplica] = []
    elif mode == SchedulerMode.EVERY_REPLICA.value:
        wanted = candidates
    else:
        current = next((r for r in candidates if r.id == current_runner_id), None)
        wanted = [current or candidates[0]]
    keep = {r.id for r in wanted}
    runner = wanted[0].id if wanted and mode != SchedulerMode.EVERY_REPLICA.value else None
    return SchedulerChange(release=tuple(r for r in live if r.id not in keep),
                           claim=tuple(wanted), runner_replica_id=runner)


def scheduler_choice_error(env, mode: str, target_id: str | None, confirm: bool):
    """Validate the form's choice: ``(error, (enabled, mode, target service))``.

    ``mode`` is one of disabled / single / every_replica (allowlist); the target
    is one of the environment's application services with a web or worker role.
    """
    if mode not in ("disabled", SchedulerMode.SINGLE.value, SchedulerMode.EVERY_REPLICA.value):
        return "Scheduler mode must be disabled, single or every_replica.", None
    targets = scheduler_targets(env)
    target = None
    if target_id in (None, ""):
        target = env.scheduler_target_service or (targets[0] if targets else None)
    else:
        if not str(target_id).isdigit():
            return "Choose the service that runs the scheduler.", None
        target = next((s for s in targets if s.id == int(target_id)), None)
        if target is None:
            known = {s.id for s in app_services(env)}
            return ("That service cannot run the scheduler: choose the web service or a worker "
                    "service." if int(target_id) in known else
                    "Choose the service that runs the scheduler."), None
    if mode != "disabled" and target is None:
        return "This environment has no web or worker service to run the scheduler.", None
    if mode == SchedulerMode.EVERY_REPLICA.value and not confirm:
        return ("Running the scheduler on every replica runs each scheduled task once per "
                "replica unless it uses onOneServer(): confirm it to choose this mode."), None
    return None, (mode != "disabled", mode, target)


def scheduler_targets(env) -> list:
    """Services that may run the scheduler: the environment's web and worker services."""
    return [s for s in app_services(env)
            if any(r in TARGET_ROLES for r in (s.process_roles or []))]


def start_scheduler_change(env, user=None, *, enabled: bool, mode: str, target,
                           enqueue: bool = True):
    """Store the choice on the environment and start the operation that applies it."""
    env.scheduler_enabled = bool(enabled)
    if mode != "disabled":
        env.scheduler_mode = SchedulerMode(mode)
    if target is not None:
        env.scheduler_target_service_id = target.id
    db.session.flush()
    where = target.name if target is not None else "-"
    summary = (f"Scheduler: disabled on {env.application.name}/{env.name}" if not enabled else
               f"Scheduler: {mode} on {where} ({env.application.name}/{env.name})")
    return start_operation(OperationKind.CONFIG_CHANGE, target_type="environment",
                           target_id=env.id, organisation_id=env.application.organisation_id,
                           user=user, params={"change": CHANGE}, summary=summary,
                           lock_keys=[f"environment:{env.id}"], enqueue=enqueue)


# --------------------------------------------------------------------------- the operation

def live_replicas(env) -> list[LiveReplica]:
    return [LiveReplica(r.id, s.id, r.server_id, r.container_name)
            for s in app_services(env) for r in s.replicas
            if r.status == ReplicaStatus.RUNNING]


def apply_scheduler(ctx, env) -> None:
    """Converge the running replicas to the environment's scheduler settings."""

    replicas = live_replicas(env)
    change = plan_scheduler_change(
        enabled=env.scheduler_enabled, mode=env.scheduler_mode.value,
        target_service_id=env.scheduler_target_service_id, replicas=replicas,
        current_runner_id=env.scheduler_replica_id)
    servers = {s.id: s for s in db.session.query(Server).filter(
        Server.id.in_({r.server_id for r in replicas} or {-1}))}
    target = env.scheduler_target_service
    with ctx.step("Plan the scheduler change") as step:
        step.log("mode: " + (env.scheduler_mode.value if env.scheduler_enabled else "disabled")
                 + (f", target {target.name}" if target is not None else ""))
        step.log(f"release: {', '.join(r.container_name for r in change.release) or 'none'}")
        step.log(f"claim: {', '.join(r.container_name for r in change.claim) or 'none'}")
        if not replicas:
            step.unchanged("nothing runs yet: the next deploy applies these settings")
    ctx.result.update({"claimed": [r.id for r in change.claim],
                       "released": [r.id for r in change.release]})
    if not replicas:
        env.scheduler_replica_id = None
        db.session.commit()
        return
    for replica in change.release:
        ctx.check_cancelled()
        server = servers[replica.server_id]
        with ctx.step(f"Release the scheduler on {replica.container_name}",
                      server=server) as step:
            res = step.run(dc.scheduler_release(replica.container_name, SCHEDULER_RELEASE_WAIT),
                           check=False, timeout=SCHEDULER_RELEASE_WAIT + 60)
            if res.exit_code == 3:
                # Never two runners: give up before any claim; the old runner keeps the slot.
                raise StepFailed(f"schedule:run still runs on {replica.container_name} after "
                                 f"{SCHEDULER_RELEASE_WAIT}s: the scheduler was not moved")
            if res.exit_code != 0:
                step.log(f"{replica.container_name} is not running: nothing to release")
    if env.scheduler_replica_id in {r.id for r in change.release}:
        env.scheduler_replica_id = None
        db.session.commit()
    for replica in change.claim:
        ctx.check_cancelled()
        server = servers[replica.server_id]
        with ctx.step(f"Run the scheduler on {replica.container_name}", server=server) as step:
            step.run(dc.scheduler_claim(replica.container_name), timeout=30)
            step.log("every_replica mode: schedule:run runs in every replica of the target"
                     if change.runner_replica_id is None else
                     "schedule:run runs every minute in this replica only")
    env.scheduler_replica_id = change.runner_replica_id
    db.session.commit()
    with ctx.step("Scheduler applied") as step:
        step.log(change.describe())


def _scheduler_change(ctx) -> None:
    env = ctx.target
    if env is None:
        raise StepFailed("The environment no longer exists.")
    apply_scheduler(ctx, env)


def _register() -> None:
    config_change_handler(CHANGE)(_scheduler_change)


_register()
