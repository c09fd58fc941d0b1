"""``slice_provision``, ``slice_configure`` and ``credential_rotation``: slice actions
against a running replica.

Generic: each action asks the slice's driver for its plan
(``slice_provision_steps``, ``slice_delete_steps``, ``slice_deleted_steps``,
``slice_released_steps``) and runs it; no service is ever redeployed for a
slice. A driver whose slices route an environment (``routes_environment``)
gets the environment's slots listed in the slice before its plan is made.
"""
from __future__ import annotations

from app.attachments import regenerate_managed_variables
from app.deploys.handlers import desired_route_config
from app.drivers import get_driver
from app.drivers.base import DriverError
from app.extensions import db
from app.models import EnvironmentAttachment, ServiceSlice
from app.models.base import utcnow
from app.models.enums import OperationKind, ReplicaStatus, SliceStatus
from app.operations import OperationContext, StepFailed, operation_handler
from app.services_ops.steps import run_plan, running_container


def _plan(fn, *args, **kw):
    """A driver's plan; its input errors fail the step with the driver's message."""
    try:
        return fn(*args, **kw)
    except DriverError as exc:
        raise StepFailed(str(exc)) from None


def _provision(ctx: OperationContext, slice_: ServiceSlice, action: str = "provision") -> None:
    service = slice_.service
    driver = get_driver(service)
    if slice_.credentials and slice_.credentials.get("password"):
        ctx.secret(slice_.credentials["password"])
    if driver.routes_environment:
        _route_environment_slots(ctx, slice_)
    container = running_container(service)
    run_plan(ctx, service.server,
             _plan(driver.slice_provision_steps, service, slice_, container, action))
    # Services whose configuration depends on this slice (another gateway serving the same
    # name): reinstalled where it changed, an explicit no-op elsewhere.
    for peer in _plan(driver.slice_peers, service, slice_):
        peer_container = _running_or_none(peer)
        if peer_container is not None:
            run_plan(ctx, peer.server, _plan(driver.reconfigure_steps, peer, peer_container))


def _running_or_none(service) -> str | None:
    return next((r.container_name for r in service.replicas
                 if r.status == ReplicaStatus.RUNNING), None)


def _route_environment_slots(ctx: OperationContext, slice_: ServiceSlice) -> None:
    """List the environment's slots in a route before installing it (what a deploy would):
    a domain attached after the first deploy answers at once, not 503 until a later deploy."""
    env = slice_.environment
    if env is None or not any(r.status == ReplicaStatus.RUNNING for svc in env.services
                              for r in svc.replicas):
        return  # never deployed: the first deploy lists the slots (and reloads once)
    desired = desired_route_config(env, slice_)
    if desired is None or not desired.get("upstreams") or desired == (slice_.config or {}):
        return  # nothing to list, or already listed
    with ctx.step("Route the environment's slots") as step:
        step.log("upstreams: " + " ".join(desired["upstreams"]))
        for host in desired.get("redirect_from") or []:
            step.log(f"{host}: permanent redirect to {desired['hostnames'][0]}")
    slice_.config = desired
    db.session.commit()


def _regenerate(slice_: ServiceSlice) -> None:
    if slice_.environment is not None:
        regenerate_managed_variables(slice_.environment)


@operation_handler(OperationKind.SLICE_PROVISION)
def provision_slice(ctx: OperationContext) -> None:
    """Create a slice against the running replica (no redeploy of the service)."""
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The slice no longer exists.")
    provision_new_slice(ctx, slice_)


def provision_new_slice(ctx: OperationContext, slice_: ServiceSlice) -> None:
    """Provision ``slice_`` inside ``ctx`` (also the first part of "restore into a new
    database", app.backups.handlers)."""
    slice_.status = SliceStatus.PROVISIONING
    db.session.commit()
    try:
        _provision(ctx, slice_)
    except BaseException:
        db.session.rollback()
        slice_.status = SliceStatus.FAILED
        db.session.commit()
        raise
    slice_.status = SliceStatus.READY
    slice_.config = {**(slice_.config or {}), "provisioned_at": utcnow().isoformat()}
    _regenerate(slice_)
    db.session.commit()


@operation_handler(OperationKind.SLICE_CONFIGURE)
def configure_slice(ctx: OperationContext) -> None:
    """Slice actions: ``update`` a route, ``delete`` (confirmed). New credentials are a
    ``credential_rotation`` of their own (:func:`rotate_credentials`)."""
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The slice no longer exists.")
    action = ctx.params.get("action")
    if action == "update":
        _provision(ctx, slice_)
        slice_.status = SliceStatus.READY
        db.session.commit()
        return
    if action != "delete":
        raise StepFailed(f"unknown slice action {action!r}")
    _delete(ctx, slice_)


@operation_handler(OperationKind.CREDENTIAL_ROTATION)
def rotate_credentials(ctx: OperationContext) -> None:
    """New credentials for a slice, re-keyed on the running replica (no redeploy); the
    environment's managed variables follow, its containers get them at the next deploy."""
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The slice no longer exists.")
    slice_.credentials = _plan(get_driver(slice_.service).new_slice_credentials, slice_)
    db.session.commit()
    _provision(ctx, slice_, "rotate")
    _regenerate(slice_)
    ctx.result["note"] = "running containers keep the old password until redeployed"
    db.session.commit()


def _delete(ctx: OperationContext, slice_: ServiceSlice) -> None:
    if ctx.params.get("confirm") != slice_.name:
        raise StepFailed("The deletion was not confirmed with the slice's name.")
    service = slice_.service
    driver = get_driver(service)
    drop = bool(ctx.params.get("drop_data"))
    slice_.status = SliceStatus.DELETING
    db.session.commit()
    container = running_container(service)
    run_plan(ctx, service.server,
             _plan(driver.slice_delete_steps, service, slice_, container, drop=drop))
    slice_.status = SliceStatus.DELETED
    run_plan(ctx, service.server, _plan(driver.slice_deleted_steps, service, slice_, container))
    slice_.config = {**(slice_.config or {}), "deleted_at": utcnow().isoformat(),
                     "data_retained": not drop}
    env = slice_.environment
    for att in db.session.execute(db.select(EnvironmentAttachment).where(
            EnvironmentAttachment.service_slice_id == slice_.id)).scalars():
        db.session.delete(att)
    db.session.flush()
    released = _plan(driver.slice_released_steps, service, container)
    if released:
        db.session.commit()
        run_plan(ctx, service.server, released)
    if env is not None:
        db.session.refresh(env)
        regenerate_managed_variables(env)
    ctx.result.update({"deleted": slice_.name, "data_retained": not drop})
    db.session.commit()


__all__ = ["configure_slice", "provision_slice", "provision_new_slice", "rotate_credentials"]
