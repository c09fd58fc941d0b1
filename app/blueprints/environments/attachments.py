"""The attachments component's actions: attach Postgres, Valkey or a domain (an existing
service of the organisation, or a new one on a chosen server) and apply the attach
recommendations. Each answers with the component (HTMX) or the whole page.

Every change goes through :mod:`app.attachments`; a new managed service is created by
:mod:`app.managed_services` and deployed by its own ``service_deploy`` operation.
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from app import attachments as att
from app.blueprints.environments.blueprint import bp
from app.policy import requires
from app.blueprints.environments.components import (NEXT_TARGETS, _AttachForm,
                                                    attachment_forms, attachments_context,
                                                    posted_next_target, recommended_plan)
from app.blueprints.environments.page import load_environment, render_page
from app.drivers import get_driver
from app.drivers.base import DriverError
from app.extensions import db
from app.managed_services import free_name, new_service
from app.models import Environment, Operation, Server, Service
from app.models.enums import AttachmentRole, OperationKind, ServerStatus
from app.operations import OperationLocked
from app.registries.images import ImageError
from app.scoping import current_org_id, org_query, parse_id
from app.services_ops.deploy import start_service_deploy


def _resolve_target(form: _AttachForm, service_type: str, env: Environment) -> Service | None:
    """An existing service of the organisation, or a new one on the chosen server."""
    value = form.target.data or ""
    if value.startswith("new:"):
        server = db.session.execute(org_query(Server).where(
            Server.id == parse_id(value[4:]) if parse_id(value[4:]) is not None else sa.false())
        ).scalar_one_or_none()
        if server is None:
            form.target.errors.append("Choose a server of this organisation.")
            return None
        if server.status != ServerStatus.ACTIVE:
            form.target.errors.append(f"{server.name} is not provisioned yet: provision it "
                                      "first, or choose a server that is ready.")
            return None
        base = get_driver(service_type).name_base or service_type
        env_server = att._environment_server_id(env)
        try:
            return new_service(service_type, server, free_name(f"{base}-{server.name}"[:63]),
                               expose_private=env_server is not None and env_server != server.id)
        except (DriverError, ImageError) as exc:
            form.target.errors.append(str(exc))
            return None
    service = db.session.execute(org_query(Service).where(
        Service.id == parse_id(value) if parse_id(value) is not None else sa.false(),
        Service.type == service_type)).scalar_one_or_none()
    if service is None:
        form.target.errors.append("Choose a service from the list.")
    return service


def _deploy_if_new(service: Service) -> Operation | None:
    if service.replicas or service.current_image_digest:
        return None
    active = db.session.execute(sa.select(Operation.id).where(
        Operation.organisation_id == current_org_id(), Operation.target_type == "service",
        Operation.target_id == service.id,
        Operation.kind == OperationKind.SERVICE_DEPLOY)).first()
    if active is not None:
        return None
    return start_service_deploy(service, current_user)


def _attachments_done(env: Environment, forms: dict, message=None, error=None):
    nxt = posted_next_target()
    if request.htmx:
        env = load_environment(env.id)
        status = 400 if (error or any(f.errors for f in forms.values())) else 200
        ctx = attachments_context(env, forms if status == 400 else None,
                                  attach_message=message, attach_error=error)
        # htmx 2 swaps only 2xx answers: the errors are part of the component it swaps in.
        return render_template("environments/_attachments.html", c=ctx), 200
    if error or any(f.errors for f in forms.values()):
        if nxt in NEXT_TARGETS:
            for f in forms.values():
                for field, errs in f.errors.items():
                    for e in errs:
                        flash(f"{getattr(f, field).label.text}: {e}", "error")
            if error:
                flash(error, "error")
            return redirect(url_for(NEXT_TARGETS[nxt]))
        return render_page(env.id, attachments=attachments_context(
            load_environment(env.id), forms, attach_error=error), status=400)
    flash(message, "success")
    if nxt in NEXT_TARGETS:
        return redirect(url_for(NEXT_TARGETS[nxt]))
    return redirect(url_for("environments.show", environment_id=env.id) + "#attachments")


def _attach_existing(env, form, service_type: str) -> str | None:
    """The advanced choice: attach a slice that exists already (no operation: it is ready)."""
    slice_ = next((sl for sl in att.attachable_slices(env.application.organisation_id,
                                                      service_type, env)
                   if str(sl.id) == form.existing_slice.data), None)
    if slice_ is None:
        form.existing_slice.errors.append("Choose a slice from the list.")
        return None
    role = AttachmentRole(form.role.data) if hasattr(form, "role") else None
    try:
        att.attach_existing_slice(env, slice_, role)
    except (att.AttachmentError, DriverError) as exc:
        db.session.rollback()
        form.existing_slice.errors.append(str(exc))
        return None
    db.session.commit()
    return (f"{slice_.service.name} attached with the existing "
            f"{slice_.type.value.replace('_', ' ')} {slice_.name}: its variables are set, "
            "deploy to use them.")


def _attach_one(env, form, form_key: str, service_type: str, do_attach) -> str | None:
    """Attach what a validated form names; a message, or None with the errors on the form
    (an OperationLocked propagates)."""
    if getattr(form, "existing_slice", None) is not None and form.existing_slice.data:
        return _attach_existing(env, form, service_type)
    service = _resolve_target(form, service_type, env)
    if service is None:
        db.session.rollback()
        return None
    try:
        attachment, slice_ = do_attach(env, service, form)
    except (att.AttachmentError, DriverError) as exc:
        db.session.rollback()
        (form.hostname if form_key == "dom_form" else form.target).errors.append(str(exc))
        return None
    db.session.commit()
    deploy_op = _deploy_if_new(service)
    op = att.start_slice_provision(slice_, current_user)
    parts = [f"{service.name} attached ({slice_.type.value.replace('_', ' ')} "
             f"{slice_.name}): operation #{op.id} creates it on the server"]
    if deploy_op is not None:
        parts.append(f"after deploying {service.name} (operation #{deploy_op.id})")
    return " ".join(parts) + "."


def _attach(environment_id, form_key: str, service_type: str, do_attach):
    env = load_environment(environment_id)
    forms = attachment_forms(env, request.form)
    form = forms[form_key]
    if not form.validate_on_submit():
        return _attachments_done(env, forms)
    try:
        message = _attach_one(env, form, form_key, service_type, do_attach)
    except OperationLocked as exc:
        return _attachments_done(env, forms, error=str(exc))
    return _attachments_done(env, forms, message=message)


def _attach_valkey_cache(env, service, form):
    return att.attach_valkey(env, service, role=AttachmentRole.CACHE)


_RECOMMENDED_ATTACH = {"pg_form": lambda env, service, form: att.attach_postgres(env, service),
                      "vk_form": _attach_valkey_cache,
                      "dom_form": lambda env, service, form: _attach_domain(env, service, form)}


@bp.route("/<int:environment_id>/attachments/recommended", methods=["POST"])
@requires("resources.manage")
def attach_recommended(environment_id):
    """One action for what a Laravel app needs: Postgres, Valkey (cache) and, on the sandbox,
    its ``NAME.localhost`` domain. Each is the same attachment its own form makes."""
    from app.forms import ActionForm
    env = load_environment(environment_id)
    forms = attachment_forms(env)
    if not ActionForm().validate_on_submit():
        return _attachments_done(env, forms, error="The form expired: reload the page.")
    plan = recommended_plan(env, forms)  # [(form key, service type, label)]
    if not plan:
        return _attachments_done(env, forms, error="Nothing to attach: provision a server "
                                 "first, or everything recommended is attached already.")
    messages = []
    for form_key, service_type, _label in plan:
        do_attach = _RECOMMENDED_ATTACH[form_key]
        form = forms[form_key]
        form.target.data = form.target.choices[0][0]
        try:
            message = _attach_one(load_environment(env.id), form, form_key, service_type,
                                  do_attach)
        except OperationLocked as exc:
            return _attachments_done(env, forms, error=str(exc))
        if message is None:
            break
        messages.append(message)
    return _attachments_done(env, forms, message=" ".join(messages) or None)


@bp.route("/<int:environment_id>/attachments")
@requires("read")
def attachments_component(environment_id):
    env = load_environment(environment_id)
    return render_template("environments/_attachments.html", c=attachments_context(env))


@bp.route("/<int:environment_id>/attachments/postgres", methods=["POST"])
@requires("resources.manage")
def attach_postgres(environment_id):
    return _attach(environment_id, "pg_form", "postgres",
                   lambda env, service, form: att.attach_postgres(env, service))


@bp.route("/<int:environment_id>/attachments/valkey", methods=["POST"])
@requires("resources.manage")
def attach_valkey(environment_id):
    return _attach(environment_id, "vk_form", "valkey",
                   lambda env, service, form: att.attach_valkey(
                       env, service, role=AttachmentRole(form.role.data)))


def route_extras(gateway: Service, hostnames: list[str], tls: str) -> dict:
    """What the "your app is live at" link needs: the first hostname, scheme and port.

    Sandbox servers publish the gateway's port 80 on 127.0.0.1 at
    ``Server.facts["http_port"]``; elsewhere the standard ports apply.
    """
    facts = (gateway.server.facts or {}) if gateway.server else {}
    extras = {"hostname": hostnames[0], "scheme": "http" if tls == "off" else "https"}
    if facts.get("sandbox") and facts.get("http_port") and tls == "off":
        extras["public_port"] = int(facts["http_port"])
    return extras


def _attach_domain(env, gateway, form):
    hostname = (form.hostname.data or "").strip()
    facts = (gateway.server.facts or {}) if gateway.server else {}
    tls = form.tls.data or ("off" if facts.get("sandbox") else "auto")
    redirect_from = None
    if form.www_redirect.data:
        if hostname.lower().startswith("www."):
            raise att.AttachmentError("This domain already starts with www.: attach the apex "
                                      "domain with the www redirect instead.")
        redirect_from = [f"www.{hostname}"]
    if form.hsts.data and tls == "off":
        raise att.AttachmentError("HSTS needs HTTPS: choose automatic HTTPS for this domain.")
    attachment, slice_ = att.attach_domain(env, gateway, [hostname], tls=tls,
                                           redirect_from=redirect_from,
                                           hsts=bool(form.hsts.data))
    slice_.config = {**(slice_.config or {}),
                     **route_extras(gateway, slice_.config["hostnames"], tls)}
    return attachment, slice_


@bp.route("/<int:environment_id>/attachments/domain", methods=["POST"])
@requires("resources.manage")
def attach_domain(environment_id):
    return _attach(environment_id, "dom_form", "caddy", _attach_domain)


@bp.route("/<int:environment_id>/recommendations", methods=["POST"])
@requires("resources.manage")
def apply_recommendations(environment_id):
    env = load_environment(environment_id)
    forms = attachment_forms(env, request.form)
    form = forms["rec_form"]
    form.keys.choices = [(r.key, r.key) for r in att.recommendations_for(env)]
    if not form.validate_on_submit():
        return _attachments_done(env, forms)
    if not form.keys.data:
        form.keys.errors.append("Tick the settings to apply.")
        return _attachments_done(env, forms)
    if not form.confirm.data:
        form.confirm.errors.append("Confirm first: nothing is changed without it.")
        return _attachments_done(env, forms)
    applied = att.apply_recommendations(env, form.keys.data, confirmed=True)
    db.session.commit()
    return _attachments_done(env, attachment_forms(env), message=(
        f"Applied {', '.join(applied)}: it takes effect at the next deploy." if applied
        else "Nothing to apply."))
