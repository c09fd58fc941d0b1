"""Applications: create from a repository SSH URL, deploy key + instructions, verify access,
environments and their build settings.

Creating an application (:mod:`app.applications`) generates its ed25519 deploy key
and a ``production`` environment on the default branch with the default web service
(Laravel, deployed with the environment, scheduler on it: SPEC 2 and 8).

"Verify access" starts a ``repository_verify`` operation (``git ls-remote``
with the deploy key runs in the worker, never in the request). It answers with
the access component, which polls itself while the operation runs and ends
with its result (HTMX swaps it in place).
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError as FormError

from app.applications import create_application, create_environment
from app.builds import check_build_plan, image_ref, parse_build_config, render_dockerfile
from app.builds.config import BuildConfigError, JS_TOOLS
from app.drivers.laravel.settings import (DEFAULT_HEALTH_PATH, HealthSettings, SettingsError,
                                          set_health_path)
from app.deploys.service import primary_web
from app.extensions import db
from app.forms import KeystoneForm, name_field
from app.models import Application, BuildArtifact, Environment, Registry, Server, Service
from app.models.enums import (BuildStrategy, DeployPolicy, OperationKind, OperationStatus,
                              RepositoryType, SchedulerMode, ServerStatus, ServiceCategory)
from app.operations.lifecycle import latest_operation, start_or_join
from app.repositories import (assign_deploy_key, deploy_key_instructions, forget_host_key,
                              parse_known_hosts)
from app.repositories import validation as rv
from app.scoping import current_org_id, get_child_or_404, get_for_org_or_404, org_query
from app.policy import requires

bp = Blueprint("applications", __name__, url_prefix="/applications")


def _repository_url(form, field):
    try:
        field.data = rv.validate_repository_url(field.data)
    except rv.ValidationError as exc:
        raise FormError(str(exc)) from None


def _branch(form, field):
    try:
        field.data = rv.validate_branch(field.data)
    except rv.ValidationError as exc:
        raise FormError(str(exc)) from None


class ApplicationForm(KeystoneForm):
    name = name_field("Name")
    repository_url = StringField("Repository SSH URL", validators=[
        DataRequired(), Length(max=rv.MAX_URL_LENGTH), _repository_url])
    repository_type = SelectField("Hosted on", choices=[
        ("auto", "Detect from the URL"), (RepositoryType.GITHUB.value, "GitHub"),
        (RepositoryType.GITEA.value, "Gitea"), (RepositoryType.GIT.value, "Other git server (SSH)")],
        default="auto")
    default_branch = StringField("Default branch", default="main", validators=[
        DataRequired(), Length(max=rv.MAX_BRANCH_LENGTH), _branch])


class EnvironmentForm(KeystoneForm):
    name = name_field("Environment name")
    branch = StringField("Branch", validators=[DataRequired(), Length(max=rv.MAX_BRANCH_LENGTH),
                                               _branch])


class BuildSettingsForm(KeystoneForm):
    branch = StringField("Branch", validators=[DataRequired(), Length(max=rv.MAX_BRANCH_LENGTH),
                                               _branch])
    strategy = SelectField("Build strategy", choices=[
        (BuildStrategy.TARGET_SERVER.value, "Build on the target server (single server default)"),
        (BuildStrategy.DEDICATED_BUILDER.value, "Build on a dedicated builder, then push"),
        (BuildStrategy.EXTERNAL_REGISTRY.value, "Pull a prebuilt image from a registry")])
    registry_id = SelectField("Registry", coerce=str, choices=[])
    php_version = StringField("PHP version", default="8.3", validators=[Length(max=8)])
    base_image = StringField("Base image override", validators=[Optional(), Length(max=255)])
    document_root = StringField("Document root", default="public", validators=[Length(max=100)])
    health_path = StringField("Health path", default="/up", validators=[Length(max=200)])
    js_tool = SelectField("JS build", choices=[(t, {"none": "None", "bun": "Bun",
                                                   "node": "Node (npm)"}[t]) for t in JS_TOOLS])
    js_command = StringField("JS build command", validators=[Optional(), Length(max=500)])
    image = StringField("Prebuilt image (external registry)", validators=[Optional(), Length(max=255)])
    builder_service_id = SelectField("Builder (dedicated builder)", coerce=str, choices=[])


def _load(application_id) -> Application:
    return get_for_org_or_404(Application, application_id)


def _load_env(application: Application, environment_id) -> Environment:
    return get_child_or_404(application, Environment, environment_id, "application_id")


def environment_servers(environment: Environment) -> list[Server]:
    """Servers the environment's application services are placed on (replicas or service.server)."""
    seen: dict[int, Server] = {}
    for service in environment.services:
        if service.category != ServiceCategory.APPLICATION:
            continue
        if service.server is not None:
            seen.setdefault(service.server.id, service.server)
        for replica in service.replicas:
            if replica.server is not None and str(replica.status) != "removed":
                seen.setdefault(replica.server.id, replica.server)
    return list(seen.values())


def sandbox_repository_url() -> str | None:
    """The local sandbox's sample repository, once the sandbox is ready for this organisation."""
    state = (current_user.organisation.onboarding_state or {}).get("sandbox") or {}
    return state.get("repository_url") if state.get("status") == "ready" else None


def start_verify(application: Application, sandbox_key: bool = False):
    """Start (or join) the application's ``repository_verify`` operation."""
    return start_or_join(OperationKind.REPOSITORY_VERIFY, target_type="application",
                         target_id=application.id, organisation_id=application.organisation_id,
                         user=current_user, params={"sandbox_key": True} if sandbox_key else {},
                         summary=("Add the deploy key to the sandbox git host and verify access"
                                  if sandbox_key else f"Verify access to {application.name}'s "
                                  f"repository"))


def _verification(application: Application) -> tuple:
    """(the running verification, the last finished one's result) of the application."""
    op = latest_operation(OperationKind.REPOSITORY_VERIFY, "application", application.id,
                          application.organisation_id)
    if op is None:
        return None, None
    if not op.is_terminal:
        return op, None
    ok = OperationStatus(op.status) is OperationStatus.SUCCEEDED
    if ok and application.deploy_key_installed_at is None:
        return None, None  # a new key since: that success says nothing about it
    result = {"ok": ok, "message": (op.result or {}).get("message") or op.error or
              f"Verification {OperationStatus(op.status).value}.",
              "trusted_now": bool((op.result or {}).get("trusted_now")), "operation": op}
    return None, result


def _access_context(application: Application) -> dict:
    sandbox_repo = bool(application.repository_url) and \
        application.repository_url == sandbox_repository_url()
    verifying, result = _verification(application)
    return {"application": application, "result": result, "verifying": verifying,
            "host_keys": parse_known_hosts(application.repository_known_hosts),
            "sandbox_repository": sandbox_repo,
            # GitHub/Gitea steps mean nothing for the sandbox's own git host
            "instructions": [] if sandbox_repo else deploy_key_instructions(application)}


@bp.route("/")
@requires("read")
def index():
    apps = db.session.execute(org_query(Application).order_by(Application.name)).scalars().all()
    return render_template("applications/index.html", applications=apps)


@bp.route("/new", methods=["GET", "POST"])
@requires("resources.manage")
def new():
    form = ApplicationForm()
    sandbox_url = sandbox_repository_url()
    if request.method == "GET" and sandbox_url:
        # Trying Keystone on the local sandbox: its sample repository is the one to use.
        form.repository_url.data = sandbox_url
        taken = db.session.execute(sa.select(Application.id).where(
            Application.organisation_id == current_org_id(), Application.name == "sample")).first()
        if not taken:
            form.name.data = "sample"
    if form.validate_on_submit():
        org_id = current_org_id()
        exists = db.session.execute(sa.select(Application.id).where(
            Application.organisation_id == org_id, Application.name == form.name.data)).first()
        if exists:
            form.name.errors.append("An application with this name already exists.")
        else:
            application = create_application(org_id, form.name.data, form.repository_url.data,
                                             form.default_branch.data, form.repository_type.data)
            db.session.commit()
            back_to_wizard = request.form.get("next") == "onboarding"
            if sandbox_url and application.repository_url == sandbox_url:
                # Keystone owns the sandbox's git host: it authorises the deploy key there
                # itself (read-only) and verifies access, in one operation.
                op = start_verify(application, sandbox_key=True)
                flash(f"Application created. Keystone is adding its deploy key to the sandbox "
                      f"git host and verifying access (operation #{op.id}).", "success")
            else:
                flash("Application created. Add the deploy key below to the repository "
                      "(read-only), then verify access.", "success")
                back_to_wizard = False  # the key and its instructions are on the app page
            if back_to_wizard:
                return redirect(url_for("onboarding.start"))
            return redirect(url_for("applications.show", application_id=application.id))
    return render_template("applications/new.html", form=form, sandbox_url=sandbox_url), \
        (400 if form.errors else 200)


@bp.route("/<int:application_id>")
@requires("read")
def show(application_id):
    application = _load(application_id)
    environments = []
    for env in application.environments:
        servers = environment_servers(env)
        artifacts = db.session.execute(
            sa.select(BuildArtifact).where(BuildArtifact.environment_id == env.id)
            .order_by(BuildArtifact.id.desc()).limit(5)).scalars().all()
        environments.append({"env": env, "servers": servers, "artifacts": artifacts,
                             "problems": check_build_plan(env, servers) if servers else []})
    return render_template("applications/show.html", environments=environments,
                           env_form=EnvironmentForm(formdata=None, branch=application.default_branch),
                           image_ref=image_ref, **_access_context(application))


@bp.route("/<int:application_id>/verify", methods=["POST"])
@requires("resources.manage")
def verify(application_id):
    application = _load(application_id)
    op = start_verify(application)
    if request.htmx:
        return render_template("applications/_access.html", **_access_context(application))
    flash(f"Verifying access (operation #{op.id}): the result appears below.", "success")
    return redirect(url_for("applications.show", application_id=application.id))


@bp.route("/<int:application_id>/access")
@requires("read")
def access(application_id):
    """The access component, polled while a verification runs."""
    application = _load(application_id)
    return render_template("applications/_access.html", **_access_context(application))


@bp.route("/<int:application_id>/forget-host-key", methods=["POST"])
@requires("resources.manage")
def forget_host(application_id):
    application = _load(application_id)
    forget_host_key(application)
    db.session.commit()
    if request.htmx:
        return render_template("applications/_access.html", **_access_context(application))
    flash("The stored host key was forgotten; the next verification trusts the key the host "
          "presents then.", "success")
    return redirect(url_for("applications.show", application_id=application.id))


@bp.route("/<int:application_id>/rotate-key", methods=["POST"])
@requires("resources.manage")
def rotate_key(application_id):
    application = _load(application_id)
    assign_deploy_key(application)
    db.session.commit()
    flash("A new deploy key was generated. Replace the old key on the git host with the one "
          "below, then verify access.", "success")
    return redirect(url_for("applications.show", application_id=application.id))


@bp.route("/<int:application_id>/environments", methods=["POST"])
@requires("resources.manage")
def add_environment(application_id):
    application = _load(application_id)
    form = EnvironmentForm()
    if form.validate_on_submit():
        if any(e.name == form.name.data for e in application.environments):
            flash(f"Environment {form.name.data!r} already exists.", "error")
        else:
            create_environment(application, form.name.data, form.branch.data)
            db.session.commit()
            flash(f"Environment {form.name.data} created.", "success")
    else:
        for field, errors in form.errors.items():
            for error in errors:
                flash(f"{getattr(form, field).label.text}: {error}", "error")
    return redirect(url_for("applications.show", application_id=application.id))


def _registry_choices() -> list[tuple[str, str]]:
    registries = db.session.execute(org_query(Registry).order_by(Registry.name)).scalars().all()
    return [("", "None (single server only)")] + [(str(r.id), f"{r.name} ({r.url})")
                                                   for r in registries]


@bp.route("/<int:application_id>/environments/<int:environment_id>/build", methods=["GET", "POST"])
@requires("resources.manage")
def build_settings(application_id, environment_id):
    application = _load(application_id)
    environment = _load_env(application, environment_id)
    raw = dict(environment.build_config or {})
    web = primary_web(environment)
    form = BuildSettingsForm(data={
        "branch": environment.branch, "strategy": raw.get("strategy", "target_server"),
        "registry_id": str(environment.registry_id or ""),
        "php_version": raw.get("php_version", "8.3"), "base_image": raw.get("base_image", ""),
        "document_root": raw.get("document_root", "public"),
        "health_path": (HealthSettings.from_config(web.config or {}, web.name).path
                        if web is not None else DEFAULT_HEALTH_PATH),
        "js_tool": raw.get("js_tool", "none"),
        "js_command": raw.get("js_command", ""), "image": raw.get("image", ""),
        "builder_service_id": str(raw.get("builder_service_id") or "")})
    form.registry_id.choices = _registry_choices()
    form.builder_service_id.choices = _builder_choices()
    dockerfile = None
    if form.validate_on_submit():
        new_raw = {k: v for k, v in {
            "strategy": form.strategy.data, "php_version": form.php_version.data.strip(),
            "base_image": form.base_image.data.strip(), "document_root": form.document_root.data.strip(),
            "js_tool": form.js_tool.data,
            "js_command": form.js_command.data.strip(), "image": form.image.data.strip(),
            "builder_service_id": (get_for_org_or_404(Service, form.builder_service_id.data).id
                                   if form.builder_service_id.data else None),
        }.items() if v not in (None, "")}
        registry_id = None
        if form.registry_id.data:
            registry_id = get_for_org_or_404(Registry, form.registry_id.data).id
        web_config = None
        try:
            config = parse_build_config(new_raw)
            if web is not None:
                web_config = set_health_path(web.config, form.health_path.data.strip(),
                                             web.name)
        except BuildConfigError as exc:
            form.strategy.errors = list(form.strategy.errors) + [str(exc)]
        except SettingsError as exc:
            form.health_path.errors = list(form.health_path.errors) + [str(exc)]
        else:
            if web is not None:
                web.config = web_config  # the health path's one owner: the web service
            environment.build_config = config.to_json()
            environment.registry_id = registry_id
            environment.branch = form.branch.data
            db.session.commit()
            flash("Build settings saved.", "success")
            return redirect(url_for("applications.show", application_id=application.id))
    try:
        dockerfile = render_dockerfile(parse_build_config(environment.build_config))
    except BuildConfigError:
        dockerfile = None
    return render_template("applications/build.html", application=application,
                           environment=environment, form=form, dockerfile=dockerfile,
                           offload=_build_offload_hint(environment)), \
        (400 if form.errors else 200)


def _builder_choices() -> list[tuple[str, str]]:
    """The organisation's builder services (SPEC 6), for the dedicated_builder strategy."""
    builders = db.session.execute(org_query(Service).where(
        Service.category == ServiceCategory.BUILDER).order_by(Service.name)).scalars().all()
    return [("", "The organisation's builder (the only or first one)")] + [
        (str(b.id), f"{b.name} on {b.server.name if b.server else 'no server'} "
                    f"({b.status.value if b.status else 'new'})") for b in builders]


def _build_offload_hint(environment):
    """Servers that could build instead of the serving ones (a registry and another server).

    A build on a serving server runs at low CPU weight, but it still shares the machine;
    with a registry, a build elsewhere is pushed once and every server pulls the digest.
    """
    from app.deploys.service import environment_servers
    if environment.registry_id is None or \
            (environment.build_config or {}).get("strategy", "target_server") != "target_server":
        return []
    serving = {s.id for s in environment_servers(environment)}
    others = db.session.execute(sa.select(Server).where(
        Server.organisation_id == environment.application.organisation_id,
        Server.status == ServerStatus.ACTIVE).order_by(Server.name)).scalars().all()
    return [s for s in others if s.id not in serving]
