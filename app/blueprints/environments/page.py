"""The environment page: the primary application surface (SPEC 19, phase 6).

Services with status, health, replicas per server, digests and update badges;
the deploy button and last deploy; where the scheduler runs; attachments;
variables (secret values masked, reveal recorded); operations.
"""
from __future__ import annotations

import functools
import re

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import defer, joinedload, load_only, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from wtforms import StringField
from wtforms.validators import Length

from app.app_key import ROTATE_WARNING, AppKeyError, app_key_variable
from app.app_key import rotate_app_key as rotate
from app.attachments import queue_sync_warning
from app.crypto import keyring
from app.blueprints.environments.blueprint import bp
from app.policy import requires
from app.blueprints.environments.components import attachments_context, variables_context
from app.deploys.scheduler import scheduler_targets
from app.deploys.service import app_services, service_server_ids
from app.extensions import db
from app import audit
from app.models import (Application, Environment, EnvironmentAttachment, EnvironmentVariable,
                        Operation, Server, Service, ServiceReplica, ServiceSlice)
from app.models.enums import DeployPolicy, SchedulerMode
from app.managed_services import LISTED_COLUMNS
from app.onboarding import environment_url
from app.scoping import current_org_id, get_child_or_404, get_for_org_or_404, org_query, parse_id


class RotateAppKeyForm(FlaskForm):
    confirm = StringField("Type the environment's name to confirm", validators=[Length(max=100)])


def app_key_context(env: Environment, form: RotateAppKeyForm | None = None,
                    error: str | None = None) -> dict:
    return {"variable": app_key_variable(env), "form": form or RotateAppKeyForm(formdata=None),
            "warning": ROTATE_WARNING, "error": error}


def load_environment(environment_id, *, secret_values: bool = True) -> Environment:
    """The environment with everything its page shows, in a fixed number of queries
    (the organisation's scope and the 404 in the same query that loads it).

    ``secret_values=False`` (the page, which shows secrets masked) leaves every secret
    variable's value encrypted in the database until something reads it (a deferred
    column, loaded and decrypted on access), and the services', slices' and application's
    own secrets too: a page of 150 variables otherwise decrypts about 200 Fernet tokens
    to show none of them. It also leaves out the timestamps of the rows the page lists.
    Objects this request loaded already are left as they are.
    """
    env_id = parse_id(environment_id)
    if env_id is None:
        abort(404)
    env = db.session.execute(_environment_query(not secret_values),
                             {"org_id": current_org_id(), "env_id": env_id}
                             ).unique().scalar_one_or_none()
    if env is None:
        abort(404)
    if not secret_values and "variables" in sa.inspect(env).unloaded:
        _load_variables_masked(env)
    return env


@functools.cache
def _environment_query(masked: bool):
    """:func:`load_environment`'s statement, built once (its loader options cost more to
    build than the query to run); the organisation and the id are bound per request."""
    service, slice_, server, application, attachment, listed = (
        (defer(Service.secrets),), (load_only(*SLICE_COLUMNS),),
        (defer(Server.bootstrap_private_key), defer(Server.bootstrap_password)),
        (defer(Application.deploy_key_private),), (load_only(*ATTACHMENT_COLUMNS),),
        (load_only(*LISTED_COLUMNS),)) if masked else ((),) * 6
    stmt = (org_query(Environment, sa.bindparam("org_id", type_=sa.Integer))
            .where(Environment.id == sa.bindparam("env_id", type_=sa.Integer))
            .options(joinedload(Environment.application).options(*application),
                     joinedload(Environment.current_artifact),
                     joinedload(Environment.retention),
                     selectinload(Environment.services).options(*service)
                     .selectinload(Service.replicas).joinedload(ServiceReplica.server)
                     .options(*server),
                     selectinload(Environment.attachments).options(
                         *attachment,
                         joinedload(EnvironmentAttachment.service).options(*listed),
                         joinedload(EnvironmentAttachment.service_slice).options(*slice_))))
    return stmt if masked else stmt.options(selectinload(Environment.variables))


# What the page reads of the rows it lists (anything else loads on access, one query each).
SLICE_COLUMNS = (ServiceSlice.id, ServiceSlice.service_id, ServiceSlice.environment_id,
                 ServiceSlice.name, ServiceSlice.type, ServiceSlice.status, ServiceSlice.config)
ATTACHMENT_COLUMNS = (EnvironmentAttachment.id, EnvironmentAttachment.environment_id,
                      EnvironmentAttachment.service_id, EnvironmentAttachment.service_slice_id,
                      EnvironmentAttachment.role, EnvironmentAttachment.env_prefix,
                      EnvironmentAttachment.is_primary, EnvironmentAttachment.config)
VARIABLE_COLUMNS = (EnvironmentVariable.id, EnvironmentVariable.environment_id,
                    EnvironmentVariable.key, EnvironmentVariable.source,
                    EnvironmentVariable.service_slice_id, EnvironmentVariable.overridable,
                    EnvironmentVariable.is_secret)


@functools.cache
def _variables_query():
    # The stored token of a value the page shows (a non-secret one), decrypted by
    # _shown_value; a secret's is not even read.
    shown = sa.type_coerce(
        sa.case((EnvironmentVariable.is_secret.is_(False), EnvironmentVariable.value)), sa.Text)
    return (sa.select(EnvironmentVariable, shown)
            .where(EnvironmentVariable.environment_id == sa.bindparam("env_id", type_=sa.Integer))
            .options(load_only(*VARIABLE_COLUMNS))
            .order_by(EnvironmentVariable.key))


_SHOWN_TOKEN_MAX = 4096  # a longer value (up to 64 KiB) is decrypted every time, not kept


@functools.lru_cache(maxsize=2048)
def _decrypt_shown(fernet, token: str) -> str:
    return keyring.decrypt(token)


def _shown_value(token: str | None) -> str | None:
    """The plaintext of a non-secret variable's stored token. A token is written once (a new
    value is a new token, with its own random IV), so its plaintext is kept for the next
    page: 100 Fernet decryptions (about 3 ms) a page of 150 variables otherwise repeats on
    every view. Only values the page shows to anyone who can read it come here (never a
    secret's), at most 2,048 of up to 4 KiB; the configured keys are part of the cache key,
    so a token the current keys cannot decrypt still fails."""
    if token is None:
        return None
    if len(token) > _SHOWN_TOKEN_MAX:
        return keyring.decrypt(token)
    return _decrypt_shown(keyring.fernet, token)


def _load_variables_masked(env: Environment) -> None:
    """``env.variables`` in one query, a non-secret value decrypted with its row (see
    :func:`_shown_value`) and a secret one left deferred (read, and decrypted, only when
    something uses it)."""
    rows = db.session.execute(_variables_query(), {"env_id": env.id}).all()
    for var, token in rows:
        if not var.is_secret and "value" not in var.__dict__:  # not loaded (nor changed)
            set_committed_value(var, "value", _shown_value(token))
    set_committed_value(env, "variables", [var for var, _ in rows])


def environment_warnings(env: Environment) -> list[str]:
    """The page's warnings; the queue one is app.attachments' (one source of truth)."""
    warnings = []
    queue = queue_sync_warning(env)
    if queue:
        warnings.append(queue)
    for service in env.services:
        for r in service.replicas:
            problem = (r.config or {}).get("health_problem")
            if problem and r in service.present_replicas:
                warnings.append(f"{service.name}: {r.container_name} on {r.server.name}: "
                                f"{problem}.")
    storage = shared_storage_warning(env)
    if storage:
        warnings.append(storage)
    if env.scheduler_enabled and env.scheduler_mode == SchedulerMode.EVERY_REPLICA:
        warnings.append("The scheduler runs on every replica: each scheduled task runs once "
                        "per replica unless it uses onOneServer().")
    return warnings


def shared_storage_warning(env: Environment) -> str | None:
    """Files in storage/ are per server (one volume each): say so for several servers.

    Counted from where the application services are placed (the same rule the
    deploy uses, app.deploys.service.service_server_ids), so it shows before the
    first multi-server deploy; no query (the page's services are loaded).
    """
    ids = {i for s in app_services(env) if s.deploy_policy == DeployPolicy.WITH_ENVIRONMENT
           for i in service_server_ids(s)}
    if len(ids) < 2:
        return None
    return (f"This environment runs on {len(ids)} servers and each keeps its own storage/ "
            "volume: a file uploaded through one server is not seen by the others. Store "
            "shared files (uploads, anything under storage/app) in an object store: an S3 "
            "disk (FILESYSTEM_DISK=s3).")


def scheduler_placement(env: Environment) -> dict:
    if not env.scheduler_enabled:
        return {"text": "Scheduler disabled", "replica": None}
    replicas = {r.id: r for s in env.services for r in s.replicas}
    replica = replicas.get(env.scheduler_replica_id)
    target = env.scheduler_target_service
    if env.scheduler_mode == SchedulerMode.EVERY_REPLICA:
        return {"text": f"Every replica of {target.name if target else 'the web service'}",
                "replica": None}
    if replica is None:
        return {"text": f"On one replica of {target.name if target else 'the web service'} "
                        f"(chosen at the next deploy)", "replica": None}
    return {"text": f"{replica.container_name} on {replica.server.name}", "replica": replica}


@functools.cache
def _operations_query():
    """The page's last 15 top-level operations of the environment, the statement built once
    (the organisation and the environment bound per request)."""
    return (sa.select(Operation).where(
        Operation.organisation_id == sa.bindparam("org_id", type_=sa.Integer),
        Operation.target_type == "environment",
        Operation.target_id == sa.bindparam("env_id", type_=sa.Integer),
        Operation.parent_id.is_(None)).order_by(Operation.id.desc()).limit(15))


@bp.route("/<int:environment_id>")
@requires("read")
def show(environment_id):
    return render_page(environment_id)


def render_page(environment_id, *, attachments: dict | None = None,
                variables: dict | None = None, app_key: dict | None = None,
                commands: dict | None = None, dotenv: dict | None = None, status: int = 200):
    """The whole page; a component's view passes its context with its errors when a form
    was posted without HTMX (every page works on a full reload)."""
    from app.blueprints.environments.commands import commands_context
    from app.blueprints.environments.dotenv import dotenv_context
    from app.deploys.history import deploy_history
    env = load_environment(environment_id, secret_values=False)
    operations = db.session.execute(_operations_query(), {
        "org_id": current_org_id(), "env_id": env.id}).scalars().all()
    last_deploy = next((op for op in operations if op.kind.value == "environment_deploy"), None)
    return render_template("environments/show.html", env=env, live_url=environment_url(env),
                           operations=operations, last_deploy=last_deploy,
                           warnings=environment_warnings(env),
                           scheduler=scheduler_placement(env),
                           scheduler_targets=scheduler_targets(env),
                           attachments=attachments or attachments_context(env),
                           variables=variables or variables_context(env),
                           app_key=app_key or app_key_context(env),
                           commands=commands or commands_context(env),
                           dotenv=dotenv or dotenv_context(env),
                           history=deploy_history(env)), status


@bp.route("/<int:environment_id>/app-key/rotate", methods=["POST"])
@requires("variables.edit")
def rotate_app_key(environment_id):
    """Replace APP_KEY after the user typed the environment's name (sessions are lost)."""
    env = get_for_org_or_404(Environment, environment_id)
    form = RotateAppKeyForm()
    if not form.validate_on_submit():
        db.session.rollback()
        return render_page(env.id, app_key=app_key_context(
            env, form, "The form expired or was too long: nothing was changed."), status=400)
    try:
        rotate(env, confirm=form.confirm.data or "", user=current_user)
    except AppKeyError as exc:
        db.session.rollback()
        form.confirm.data = ""
        return render_page(env.id, app_key=app_key_context(env, form, str(exc)), status=422)
    db.session.commit()
    flash("APP_KEY rotated. Deploy to use it: users will be logged out and data encrypted "
          "with the old key can no longer be decrypted.", "warning")
    return redirect(url_for("environments.show", environment_id=env.id) + "#app-key")


KEEP_RE = re.compile(r"[0-9]{1,3}")


@bp.route("/<int:environment_id>/keep-artifacts", methods=["POST"])
@requires("resources.manage")
def set_keep_artifacts(environment_id):
    """How many builds besides the running one housekeeping keeps (app.housekeeping)."""
    from app.housekeeping import MAX_KEEP, MIN_KEEP
    env = get_for_org_or_404(Environment, environment_id)
    raw = (request.form.get("keep_artifacts") or "").strip()
    if not KEEP_RE.fullmatch(raw) or not MIN_KEEP <= int(raw) <= MAX_KEEP:
        flash(f"Builds kept must be a whole number from {MIN_KEEP} to {MAX_KEEP}.", "error")
        return redirect(url_for("environments.show", environment_id=env.id) + "#housekeeping")
    env.keep_artifacts = int(raw)
    db.session.commit()
    flash(f"Housekeeping keeps the running build and {env.keep_artifacts} more for rollback.",
          "success")
    return redirect(url_for("environments.show", environment_id=env.id) + "#housekeeping")


@bp.route("/<int:environment_id>/variables/<int:variable_id>/reveal", methods=["POST"])
@requires("secrets.reveal")
def reveal_variable(environment_id, variable_id):
    env = get_for_org_or_404(Environment, environment_id)
    var = get_child_or_404(env, EnvironmentVariable, variable_id, "environment_id")
    audit.record("variable.reveal", var, {"key": var.key, "environment_id": env.id},
                 target_type="environment_variable", organisation_id=current_org_id())
    db.session.commit()
    hide = request.args.get("hide") == "1"
    return render_template("environments/_variable_value.html", env=env, var=var,
                           revealed=not hide)
