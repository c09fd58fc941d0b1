"""``service_deploy``: first deploy, redeploy or update of a single-container service.

Generic: the driver plans (:func:`plan_service_deploy` asks it for the compose
project and the files its container needs), this module runs the plan. Which
services are deployed here at all, which extra locks a deploy takes, and
what runs once the new container is healthy are the driver's hooks
(:class:`app.drivers.base.Driver`).
"""
from __future__ import annotations

from dataclasses import dataclass

from app.drivers import Driver, get_driver
from app.drivers.base import (FirewallRule, RenderContext, RenderedCompose, default_project_name,
                              service_alias)
from app.drivers.compose import compose_cmd
from app.drivers.plan import StepPlan
from app.extensions import db
from app.endpoints import Unreachable, cross_server_address, upsert_service_endpoints
from app.models import Operation, Service, ServiceReplica
from app.models.enums import (HealthStatus, OperationKind, ReplicaStatus,
                              ServiceStatus, UpdateStatus)
from app.operations import OperationContext, StepFailed, operation_handler, start_operation
from app.registries.images import (DIGEST_RE, ImageError, org_credentials, parse_image,
                                   resolve_digest)
from app.services_ops.steps import (compose_up, container_id, ensure_network, open_firewall,
                                    require_public_firewall,
                                    pull_image, replica_for, run_plan, wait_healthy,
                                    write_project)
from app.shell import cmd


def update_warning(service: Service) -> str | None:
    """The downtime warning shown before an update of a stateful service (SPEC 11)."""
    behaviour = get_driver(service).update_behaviour
    return behaviour.warning if behaviour.downtime else None


def _publish_address(service: Service, server) -> str | None:
    """Where an ``expose_private`` service is published for the other servers: the private
    IP, or the public IP when the server explicitly allows the fallback (app.endpoints).
    None: not published (an attachment from another server then refuses with the reason)."""
    if not (service.config or {}).get("expose_private"):
        return server.private_ip
    try:
        return cross_server_address(server)[1]
    except Unreachable:
        return None


def start_service_deploy(service: Service, user=None, *, image_digest: str | None = None,
                         confirm_downtime: bool = False, enqueue: bool = True,
                         after_backups: list[int] | None = None):
    """Start a service_deploy (first deploy, redeploy or update to ``image_digest``).

    A service that is already running and would go down for it (Postgres,
    Valkey, the gateway) needs ``confirm_downtime=True``: the UI shows
    :func:`update_warning` with a checkbox first. Never called implicitly.
    """
    running = any(r.status == ReplicaStatus.RUNNING for r in service.replicas)
    warning = update_warning(service)
    if running and warning and not confirm_downtime:
        raise StepFailed(f"Confirm the downtime first: {warning}")
    params = {"confirm_downtime": bool(confirm_downtime)}
    if image_digest:
        params["image_digest"] = image_digest
    if after_backups:  # "back up first": queued behind them (service lock), checked at start
        params["after_backups"] = [int(i) for i in after_backups]
    return start_operation(OperationKind.SERVICE_DEPLOY, target_type="service",
                           target_id=service.id, organisation_id=service.organisation_id,
                           user=user, params=params,
                           lock_keys=[f"service:{service.id}",
                                      *get_driver(service).deploy_lock_keys(service)],
                           summary=f"{'Update' if running else 'Deploy'} {service.name}",
                           enqueue=enqueue)


# --------------------------------------------------------------------------- the plan (pure)

@dataclass
class ServiceDeployPlan:
    """What a deploy of one single-container service writes and starts."""

    rendered: RenderedCompose
    environment: dict[str, str]
    before_start: list[StepPlan]
    volumes: list[str]
    firewall: list[FirewallRule]
    internal_port: int | None


def plan_service_deploy(driver: Driver, service: Service, *, image: str, container_name: str,
                        running: bool, replica: ServiceReplica | None = None,
                        replica_id: int | None = None, operation_id: int | None = None,
                        private_ip: str | None = None,
                        published_port: int | None = None) -> ServiceDeployPlan:
    """The driver's compose project and the files its container needs (no I/O)."""
    environment = driver.service_environment(service)
    rctx = RenderContext(image=image, project_name=default_project_name(service),
                         container_name=container_name, operation_id=operation_id,
                         replica_id=replica_id, environment=environment,
                         resources=driver.resources_for(service, replica),
                         private_ip=private_ip, published_port=published_port)
    return ServiceDeployPlan(rendered=driver.render_compose(service, rctx),
                             environment=environment,
                             before_start=driver.deploy_steps(service, running=running),
                             volumes=driver.volume_names(service),
                             firewall=driver.firewall_rules(service),
                             internal_port=driver.internal_port())


# --------------------------------------------------------------------------- the handler

@operation_handler(OperationKind.SERVICE_DEPLOY)
def deploy_service(ctx: OperationContext) -> None:
    """Deploy (or update) a single-container service with its driver's plan."""
    service: Service = ctx.target
    if service is None:
        raise StepFailed("The service no longer exists.")
    _require_backups(ctx)
    try:
        _deploy_service(ctx, service)
    except BaseException:
        db.session.rollback()
        service.status = ServiceStatus.FAILED
        if service.update_status == UpdateStatus.UPDATING:
            service.update_status = UpdateStatus.AVAILABLE if service.available_image_digest \
                else UpdateStatus.UNKNOWN
        db.session.commit()
        raise


def _require_backups(ctx: OperationContext) -> None:
    """"Back up first": the update runs only if every backup it waited for succeeded."""
    ids = [int(i) for i in ctx.params.get("after_backups") or []]
    if not ids:
        return
    with ctx.step("Check the backups taken first") as step:
        for op_id in ids:
            op = db.session.get(Operation, op_id)
            status = op.status.value if op is not None else "missing"
            step.log(f"backup operation #{op_id}: {status}")
            if status != "succeeded":
                raise StepFailed(f"The backup taken first (operation #{op_id}) is {status}: "
                                 "nothing was updated.")


def _resolve_image(ctx: OperationContext, service: Service, driver: Driver) -> tuple[str, str]:
    """(digest, image@digest): a digest, never a moving tag."""
    tag_ref = driver.image(service)
    with ctx.step(f"Resolve {tag_ref} to a digest") as step:
        digest = ctx.params.get("image_digest")
        if digest and not DIGEST_RE.fullmatch(str(digest)):
            raise StepFailed(f"{digest!r} is not a sha256 digest")
        if digest:
            step.log(f"pinned by the request: {digest}")
        else:
            try:
                digest = resolve_digest(tag_ref, org_credentials(service.organisation_id))
            except ImageError as exc:
                raise StepFailed(str(exc)) from None
            step.log(f"{tag_ref} -> {digest}")
        return digest, parse_image(tag_ref).with_digest(digest)


def _deploy_role(ctx: OperationContext, service: Service, driver: Driver, server) -> None:
    """A server role without a container (the builder, SPEC 6): its readiness checks run on
    the server; passed, the service is running (no replica, no image, no endpoint)."""
    service.status = ServiceStatus.DEPLOYING
    db.session.commit()
    run_plan(ctx, server, driver.readiness_steps(service))
    service.status = ServiceStatus.RUNNING
    service.update_status = UpdateStatus.CURRENT
    ctx.result.update({"role": service.type, "server": server.name})
    db.session.commit()


def _deploy_service(ctx: OperationContext, service: Service) -> None:
    driver = get_driver(service)
    if driver.deploy_refusal:
        raise StepFailed(driver.deploy_refusal)
    server = service.server
    if server is None:
        raise StepFailed(f"{service.name} is not placed on a server.")
    driver.check_placement(service)
    if not driver.runs_container:
        _deploy_role(ctx, service, driver, server)
        return

    if driver.ensure_secrets(service):
        db.session.commit()
    replica = replica_for(service)
    running = replica.status == ReplicaStatus.RUNNING

    # 1. Image.
    digest, image = _resolve_image(ctx, service, driver)
    previous = replica.image_digest
    is_update = running and previous and previous != digest
    warning = update_warning(service)
    if running and warning and not ctx.params.get("confirm_downtime"):
        raise StepFailed(f"Downtime was not confirmed: {warning}")
    ctx.operation.image_digest = digest
    service.status = ServiceStatus.DEPLOYING
    if is_update:
        service.update_status = UpdateStatus.UPDATING
    db.session.commit()

    # 2. Files.
    plan = plan_service_deploy(driver, service, image=image,
                               container_name=replica.container_name, running=running,
                               replica=replica, replica_id=replica.id, operation_id=ctx.id,
                               private_ip=_publish_address(service, server),
                               published_port=replica.public_port)
    rendered = plan.rendered
    for key in driver.secret_keys:
        if plan.environment.get(key):
            ctx.secret(plan.environment[key])
    ensure_network(ctx, server)
    pull_image(ctx, server, image, service.organisation_id)
    run_plan(ctx, server, plan.before_start)
    write_project(ctx, server, rendered)

    # 3. Start (an update: stop, keep the volume, start the new image).
    if is_update:
        with ctx.step(f"Stop {replica.container_name} (downtime starts)", server=server) as step:
            step.log(warning or "")
            step.run(compose_cmd(rendered.directory, rendered.project_name, "stop"),
                     timeout=300)
    require_public_firewall(ctx, server, plan.firewall)
    compose_up(ctx, server, rendered)
    status = wait_healthy(ctx, server, replica.container_name, probe=(
        driver.health_check.exec_argv() if driver.health_check else None))
    if plan.volumes:
        with ctx.step("Check named volumes", server=server) as step:
            for vol in plan.volumes:
                step.run(cmd("docker", "volume", "inspect", "--format", "{{.Name}} {{.CreatedAt}}",
                             vol), pty=False)
            step.unchanged()
    cid = container_id(ctx, server, replica.container_name)

    # 4. Record.
    replica.status = ReplicaStatus.RUNNING
    replica.health_status = HealthStatus.HEALTHY if status == "healthy" else HealthStatus.UNKNOWN
    replica.image_digest = digest
    replica.operation_id = ctx.id
    replica.container_id = cid
    replica.internal_host = service_alias(service)
    replica.internal_port = plan.internal_port
    replica.config = {**(replica.config or {}), "image": image,
                      "project": rendered.project_name, "directory": rendered.directory}
    service.current_image_digest = digest
    if service.available_image_digest == digest:
        service.available_image_digest = None
    service.update_status = UpdateStatus.AVAILABLE if service.available_image_digest \
        else UpdateStatus.CURRENT
    service.status = ServiceStatus.RUNNING
    upsert_service_endpoints(service, replica, plan.internal_port, replica.public_port)
    ctx.result.update({"image": image, "digest": digest, "previous_digest": previous,
                       "updated": bool(is_update), "volumes_kept": plan.volumes})
    db.session.commit()

    open_firewall(ctx, server, plan.firewall)
    run_plan(ctx, server, driver.after_deploy_steps(service, replica.container_name,
                                                    is_update=bool(is_update)))


__all__ = ["ServiceDeployPlan", "deploy_service", "plan_service_deploy", "start_service_deploy",
           "update_warning"]
