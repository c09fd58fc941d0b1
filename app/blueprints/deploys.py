"""Deploy, rollback, workers, websocket and scheduler actions of an environment.

Thin views: each action checks the organisation, changes rows or starts ONE
``environment_deploy`` operation (app.deploys.handlers runs it), and answers
with the deploy-button component (HTMX) or a redirect to the environment.
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.blueprints.environments import render_page
from app.deploys import service as deploy_service
from app.deploys.scheduler import scheduler_choice_error, start_scheduler_change
from app.extensions import db
from app.models import BuildArtifact, Environment, Operation, Service
from app.models.enums import ArtifactStatus, OperationKind
from app.operations import OperationLocked
from app.operations.lifecycle import blocking_operation, describe_operation
from app.operations.state import ACTIVE
from app.scoping import current_org_id, get_child_or_404, get_for_org_or_404
from app.policy import requires

bp = Blueprint("deploys", __name__, url_prefix="/environments")


def _active_deploy(env: Environment) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == current_org_id(),
                                   Operation.kind == OperationKind.ENVIRONMENT_DEPLOY,
                                   Operation.target_type == "environment",
                                   Operation.target_id == env.id,
                                   Operation.parent_id.is_(None),
                                   Operation.status.in_([s.value for s in ACTIVE]))
        .order_by(Operation.id)).scalars().first()


def _last_deploy(env: Environment) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == current_org_id(),
                                   Operation.kind == OperationKind.ENVIRONMENT_DEPLOY,
                                   Operation.target_type == "environment",
                                   Operation.target_id == env.id,
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id.desc())).scalars().first()


def button_context(env: Environment, message: str | None = None, error: str | None = None,
                   problems=None) -> dict:
    active = _active_deploy(env)
    waiting_on = None
    if active is not None and active.status.value == "queued":
        blocker = blocking_operation(active.lock_keys, exclude_id=active.id)
        waiting_on = blocker[1] if blocker else None
    return {"env": env, "active_deploy": active, "waiting_on": waiting_on,
            "last_deploy": _last_deploy(env), "deploy_message": message, "deploy_error": error,
            "deploy_problems": problems or []}


def _component(env: Environment, status: int = 200, **kw):
    return render_template("deploys/_deploy_button.html", **button_context(env, **kw)), status


def _done(env: Environment, message: str | None = None, error: str | None = None, **kw):
    if request.htmx:
        return _component(env, message=message, error=error, **kw)
    if error:
        flash(error, "error")
    elif message:
        flash(message, "success")
    return redirect(url_for("environments.show", environment_id=env.id))


# --------------------------------------------------------------------------- deploy

@bp.route("/<int:environment_id>/deploy-button")
@requires("read")
def button(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    return _component(env)


@bp.route("/<int:environment_id>/deploy", methods=["POST"])
@requires("deploy")
def deploy(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    on_conflict = "refuse" if request.form.get("if_busy") == "refuse" else "queue"
    try:
        op = deploy_service.start_deploy(env, current_user, on_conflict=on_conflict)
    except OperationLocked as exc:
        return _done(env, error=f"Deploy refused: {exc}")
    except deploy_service.DeployBlocked as exc:
        return _done(env, error=str(exc), problems=exc.problems)
    if request.form.get("follow") == "1" and not request.htmx:
        # The wizard's deploy button: go straight to the live log.
        return redirect(url_for("operations.show", operation_id=op.id))
    if op.status.value == "queued":
        return _done(env, message=f"Deploy #{op.id} is queued: it starts when the running "
                                  "operation on this environment ends.")
    return _done(env, message=f"Deploy #{op.id} started.")


# --------------------------------------------------------------------------- rollback

@bp.route("/<int:environment_id>/rollback")
@requires("read")
def rollback_choices(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    artifacts = db.session.execute(
        sa.select(BuildArtifact).where(BuildArtifact.environment_id == env.id,
                                       BuildArtifact.status == ArtifactStatus.READY)
        .order_by(BuildArtifact.id.desc()).limit(20)).scalars().all()
    return render_template("deploys/rollback.html", env=env, artifacts=artifacts,
                           **{k: v for k, v in button_context(env).items() if k != "env"})


@bp.route("/<int:environment_id>/rollback/<int:artifact_id>", methods=["POST"])
@requires("deploy")
def rollback(environment_id, artifact_id):
    env = get_for_org_or_404(Environment, environment_id)
    artifact = get_child_or_404(env, BuildArtifact, artifact_id, "environment_id")
    if artifact.status != ArtifactStatus.READY or not artifact.image_digest:
        return _done(env, error="That build is not usable: only finished builds can be "
                                "redeployed.")
    try:
        op = deploy_service.start_deploy(env, current_user, artifact=artifact)
    except OperationLocked as exc:
        return _done(env, error=f"Rollback refused: {exc}")
    except deploy_service.DeployBlocked as exc:
        return _done(env, error=str(exc), problems=exc.problems)
    return _done(env, message=f"Rollback #{op.id} to {artifact.commit_sha[:12]} "
                              f"{'queued' if op.status.value == 'queued' else 'started'}. "
                              "Database migrations are not reversed.")


# --------------------------------------------------------------------------- roles

ROLE_ADDED = {
    "worker": "Worker service {name!r} added (php artisan queue:work from the same build). "
              "It starts with the next deploy.",
    "websocket": "Websocket service {name!r} added (php artisan reverb:start from the same "
                 "build). From the next deploy on, /app/* and /apps/* on this environment's "
                 "domains go to it.",
}


def _add_role(environment_id: int, role: str):
    env = get_for_org_or_404(Environment, environment_id)
    try:
        service = deploy_service.add_role_service(env, role)
    except deploy_service.RoleError as exc:
        return _done(env, error=str(exc))
    return _done(env, message=ROLE_ADDED[role].format(name=service.name))


@bp.route("/<int:environment_id>/workers", methods=["POST"])
@requires("resources.manage")
def add_worker(environment_id):
    return _add_role(environment_id, "worker")


@bp.route("/<int:environment_id>/websocket", methods=["POST"])
@requires("resources.manage")
def add_websocket(environment_id):
    return _add_role(environment_id, "websocket")


@bp.route("/<int:environment_id>/services/<int:service_id>/embedded-worker", methods=["POST"])
@requires("resources.manage")
def embedded_worker(environment_id, service_id):
    env = get_for_org_or_404(Environment, environment_id)
    service = get_child_or_404(env, Service, service_id, "environment_id")
    enabled = request.form.get("enabled") == "1"
    try:
        deploy_service.set_embedded_worker(service, enabled)
    except deploy_service.RoleError as exc:
        return _done(env, error=str(exc))
    return _done(env, message=(f"{service.name} will also run a queue worker (not for "
                               "production: a dedicated worker service is recommended)."
                               if enabled else f"{service.name} will stop running a queue "
                                               "worker.") + " It applies at the next deploy.")


@bp.route("/<int:environment_id>/scheduler", methods=["POST"])
@requires("resources.manage")
def scheduler(environment_id):
    """Mode (disabled / single / every_replica, the last confirmed) and target (web or a
    worker service): stored on the environment and applied at once by a config_change
    operation (app.deploys.scheduler), queued behind a running deploy."""
    env = get_for_org_or_404(Environment, environment_id)
    mode = request.form.get("mode", "single")
    if request.form.get("enabled") == "0":
        mode = "disabled"
    error, choice = scheduler_choice_error(env, mode, request.form.get("target_service_id"),
                                           request.form.get("confirm") == "1")
    if error:
        return _refused(env, error)
    enabled, mode, target = choice
    op = start_scheduler_change(env, current_user, enabled=enabled, mode=mode, target=target)
    state = "queued behind the running operation" if op.status.value == "queued" else "started"
    return _done(env, message=f"Scheduler settings saved; applying them to the running "
                              f"replicas (operation #{op.id}, {state}).")


def _refused(env: Environment, error: str):
    """Bad input: 422 with the message, nothing stored."""
    if request.htmx:
        return _component(env, status=422, error=error)
    flash(error, "error")
    return render_page(env.id, status=422)


__all__ = ["bp", "button_context", "describe_operation"]
