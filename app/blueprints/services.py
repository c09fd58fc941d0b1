"""Managed services (Postgres 18, Valkey 8, the Caddy gateway) and the environment's
attachment and variable components (SPEC 9-13, phase 6 of 20).

* ``/services``: the organisation's services, "New service" (type, server,
  image override under "advanced") -> ``service_deploy`` -> the operation page.
* ``/services/<service_id>``: status, replicas, digests with an update badge,
  "Check for updates", "Update / redeploy" (the SPEC 11 downtime warning and a
  required confirmation), slices (create, delete with a typed name), operations.
* Environment components, each one HTMX target (``hx-target="this"``) returned
  by the actions that change it (architecture example 9):
  ``services/_attachments.html`` (attach Postgres / Valkey / a domain,
  recommendations) and ``services/_variables.html`` (user variables).

Views stay thin: every change goes through :mod:`app.attachments` or
:mod:`app.services_ops`; every object through :mod:`app.scoping`. Which
service types exist, their labels and slices are the drivers' (:mod:`app.drivers`).
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import (Blueprint, Response, abort, flash, redirect, render_template, request,
                   url_for)
from flask_login import current_user, login_required
from wtforms import (BooleanField, HiddenField, SelectField, SelectMultipleField, StringField,
                     TextAreaField, widgets)
from wtforms.validators import DataRequired, Length, Optional

from app import attachments as att
from app.drivers import drivers, get_driver
from app.drivers.base import DriverError
from app.registries.images import ImageError
from app.services_ops.create import build_service
from app.services_ops.deploy import start_service_deploy, update_warning
from app.extensions import db
from app.forms import KeystoneForm, name_field
from app.models import (Environment, EnvironmentVariable, Operation, Server, Service,
                        ServiceSlice)
from app.models.enums import (AttachmentRole, OperationKind, OperationStatus, ReplicaStatus,
                              ServerStatus, SliceStatus, VariableSource)
from app.scoping import current_org_id, get_for_org_or_404, org_query, parse_id

bp = Blueprint("services", __name__)

TLS_CHOICES = [("auto", "Automatic HTTPS (Let's Encrypt)"),
               ("internal", "HTTPS with Caddy's internal CA"),
               ("off", "Plain HTTP only")]
NEXT_TARGETS = {"onboarding": "onboarding.start"}


# --------------------------------------------------------------------------- helpers

def _is_htmx() -> bool:
    return bool(request.headers.get("HX-Request"))


def _next() -> str | None:
    """Where a full-reload form post returns to: only a known name (no open redirect)."""
    for name in ("next", "pg-next", "vk-next", "dom-next", "rec-next"):
        value = request.values.get(name)
        if value in NEXT_TARGETS:
            return value
    return None


def _redirect(url: str):
    if _is_htmx():
        return Response(status=204, headers={"HX-Redirect": url})
    return redirect(url)


def _servers() -> list[Server]:
    return db.session.execute(org_query(Server).order_by(Server.name)).scalars().all()


def _managed_services() -> list[Service]:
    return db.session.execute(
        org_query(Service).where(Service.type.in_(list(drivers.offered()))).order_by(Service.name)
    ).scalars().all()


def _name_taken(name: str) -> bool:
    return db.session.execute(sa.select(Service.id).where(
        Service.organisation_id == current_org_id(), Service.environment_id.is_(None),
        Service.name == name)).first() is not None


def _free_name(base: str) -> str:
    name, n = base, 2
    while _name_taken(name):
        name = f"{base[:58]}-{n}"
        n += 1
    return name


def sandbox_image(server: Server | None, service_type: str) -> str | None:
    """Sandbox servers pull the stand-in images from the sandbox registry when it has them."""
    if server is None:
        return None
    return ((server.facts or {}).get("images") or {}).get(service_type)


def stand_in_note(service_type: str, server: Server | None, image: str | None = None) -> str:
    """" (sandbox stand-in: PostgreSQL 15)" when the sandbox's stand-in image is what runs."""
    from app.sandbox.images import STAND_IN_RUNS
    stand_in = sandbox_image(server, service_type)
    if not stand_in or service_type not in STAND_IN_RUNS or (image and image != stand_in):
        return ""
    return f" (sandbox stand-in: {STAND_IN_RUNS[service_type]})"


@bp.app_template_global()
def service_stand_in(service: Service) -> str:
    return stand_in_note(service.type, service.server, (service.config or {}).get("image"))


def new_service(service_type: str, server: Server, name: str, image: str | None = None,
                expose_private: bool = False) -> Service:
    """A service of an offered driver placed on ``server`` (flushed, not committed).

    Raises DriverError (GatewayConflict: a second gateway on one server) or ImageError.
    """
    image = (image or "").strip() or sandbox_image(server, service_type)
    with db.session.no_autoflush:
        service = build_service(service_type, server, name, organisation_id=current_org_id(),
                                settings={"image": image or "", "expose_private": expose_private})
    db.session.add(service)
    db.session.flush()
    return service


def _latest_ops(target_type: str, ids) -> dict[int, Operation]:
    ids = [i for i in ids if i]
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == current_org_id(),
                                   Operation.target_type == target_type,
                                   Operation.target_id.in_(ids),
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id)).scalars().all()
    return {op.target_id: op for op in rows}  # the last one per target wins


# --------------------------------------------------------------------------- forms

class NewServiceForm(KeystoneForm):
    type = SelectField("Service", choices=[], default="postgres")
    name = name_field("Name")
    server_id = SelectField("Server", coerce=str, choices=[], validators=[DataRequired()])
    image = StringField("Image override", validators=[Optional(), Length(max=255)])
    expose_private = BooleanField("Reachable from the private network (for environments on "
                                  "other servers)")


class ActionForm(KeystoneForm):
    """CSRF only."""


class DeployForm(KeystoneForm):
    use_available = BooleanField("Update to the available image")
    confirm_downtime = BooleanField("I understand the downtime and the risk to data")


class SliceForm(KeystoneForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=50)])


class DeleteSliceForm(KeystoneForm):
    confirm = StringField("Type the slice's name to confirm", validators=[DataRequired()])
    drop_data = BooleanField("Also drop the data (cannot be undone)")


class _AttachForm(KeystoneForm):
    next = HiddenField()
    target = SelectField("Service", coerce=str, choices=[], validators=[DataRequired()])


class AttachPostgresForm(_AttachForm):
    pass


class AttachValkeyForm(_AttachForm):
    role = SelectField("Use it for", choices=[("cache", "Cache and sessions"),
                                               ("queue", "Queues")], default="cache")


class AttachDomainForm(_AttachForm):
    hostname = StringField("Domain", validators=[DataRequired(), Length(max=253)])
    target = SelectField("Gateway", coerce=str, choices=[], validators=[DataRequired()])
    tls = SelectField("TLS", choices=[("", "Default for the server")] + TLS_CHOICES, default="")
    www_redirect = BooleanField("Also answer www. of this domain with a permanent redirect to it")


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class RecommendationsForm(KeystoneForm):
    next = HiddenField()
    keys = MultiCheckboxField("Apply", choices=[])
    confirm = BooleanField("I understand this changes how the application behaves")


class VariableForm(KeystoneForm):
    key = StringField("Name", validators=[DataRequired(message="Give the variable a name."),
                                         Length(max=255)])
    value = TextAreaField("Value", validators=[Length(max=65536)])
    is_secret = BooleanField("Secret (masked on this page)")


class EditVariableForm(KeystoneForm):
    value = TextAreaField("Value", validators=[Length(max=65536)])
    is_secret = BooleanField("Secret")


# --------------------------------------------------------------------------- services list

def _fill_new_service(form: NewServiceForm, servers: list[Server]) -> None:
    form.type.choices = list(drivers.labels().items())
    form.server_id.choices = [(str(s.id), f"{s.name} ({s.status.value})") for s in servers]


@bp.route("/services/")
@login_required
def index():
    services = db.session.execute(
        org_query(Service).order_by(Service.type, Service.name)).scalars().all()
    labels = drivers.labels()
    managed = [s for s in services if s.type in labels]
    app_services = [s for s in services if s.type not in labels]
    return render_template("services/index.html", managed=managed, app_services=app_services,
                           labels=labels)


@bp.route("/services/new", methods=["GET", "POST"])
@login_required
def new():
    servers = _servers()
    form = NewServiceForm()
    _fill_new_service(form, servers)
    if request.method == "GET" and request.args.get("type") in drivers.offered():
        form.type.data = request.args["type"]
    error = None
    if form.validate_on_submit():
        server = next(s for s in servers if str(s.id) == form.server_id.data)
        if _name_taken(form.name.data):
            form.name.errors.append("A service with this name exists already.")
        else:
            try:
                service = new_service(form.type.data, server, form.name.data, form.image.data,
                                      form.expose_private.data)
            except ImageError as exc:
                form.image.errors.append(str(exc))
            except DriverError as exc:
                db.session.rollback()
                error = str(exc)
                form.server_id.errors.append(error)
            else:
                db.session.commit()
                op = start_service_deploy(service, current_user)
                flash(f"{service.name} created; deploying it on {server.name}.", "success")
                return _redirect(url_for("operations.show", operation_id=op.id))
    return render_template("services/new.html", form=form, servers=servers,
                           labels=drivers.labels()), \
        (400 if form.errors else 200)


# --------------------------------------------------------------------------- service page

def _service_context(service: Service, **kw) -> dict:
    slices = [s for s in service.slices]
    ops = db.session.execute(
        sa.select(Operation).where(
            Operation.organisation_id == current_org_id(), Operation.parent_id.is_(None),
            sa.or_(sa.and_(Operation.target_type == "service", Operation.target_id == service.id),
                   sa.and_(Operation.target_type == "service_slice",
                           Operation.target_id.in_([s.id for s in slices] or [-1]))))
        .order_by(Operation.id.desc()).limit(20)).scalars().all()
    running = any(r.status == ReplicaStatus.RUNNING for r in service.replicas)
    driver = get_driver(service)
    ctx = {"service": service, "driver": driver, "slices": slices, "operations": ops,
           "running": running, "warning": update_warning(service),
           "needs_confirm": bool(running and update_warning(service)),
           "deploy_form": kw.pop("deploy_form", None) or DeployForm(formdata=None),
           "slice_form": kw.pop("slice_form", None) or SliceForm(formdata=None),
           "action_form": ActionForm(formdata=None),
           "can_slice": driver.user_slice_type is not None,
           "update_available": bool(service.available_image_digest and
                                    service.available_image_digest != service.current_image_digest),
           "image_message": None, "image_error": None, "image_checking": None,
           "deploy_error": None}
    ctx.update(_image_check(service))
    ctx.update(kw)
    return ctx


@bp.route("/services/<int:service_id>")
@login_required
def show(service_id):
    service = get_for_org_or_404(Service, service_id)
    if service.type not in drivers.offered() and service.environment_id:
        return redirect(url_for("environments.show", environment_id=service.environment_id))
    return render_template("services/show.html", **_service_context(service))


def _image_check(service: Service) -> dict:
    """The running image check of the service, or the last one's message (image_check op)."""
    from app.operations.lifecycle import latest_operation
    op = latest_operation(OperationKind.IMAGE_CHECK, "service", service.id,
                          service.organisation_id)
    if op is None:
        return {}
    if not op.is_terminal:
        return {"image_checking": op}
    if op.status == OperationStatus.SUCCEEDED:
        return {"image_message": (op.result or {}).get("message"), "image_check": op}
    return {"image_error": op.error or f"The check {op.status.value}.", "image_check": op}


@bp.route("/services/<int:service_id>/check-updates", methods=["POST"])
@login_required
def check_updates(service_id):
    """Start an ``image_check`` operation: the registry is asked in the worker."""
    from app.operations.lifecycle import start_or_join
    service = get_for_org_or_404(Service, service_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    op = start_or_join(OperationKind.IMAGE_CHECK, target_type="service", target_id=service.id,
                       organisation_id=service.organisation_id, user=current_user,
                       summary=f"Check {service.name} for a newer image")
    if _is_htmx():
        return render_template("services/_image.html", **_service_context(service))
    flash(f"Checking for a newer image (operation #{op.id}).", "success")
    return redirect(url_for("services.show", service_id=service.id))


@bp.route("/services/<int:service_id>/image")
@login_required
def image_component(service_id):
    """The image component, polled while an image check runs."""
    service = get_for_org_or_404(Service, service_id)
    return render_template("services/_image.html", **_service_context(service))


@bp.route("/services/<int:service_id>/deploy", methods=["POST"])
@login_required
def deploy(service_id):
    from app.operations import OperationLocked, StepFailed
    service = get_for_org_or_404(Service, service_id)
    if service.type not in drivers.offered():
        abort(404)
    form = DeployForm()
    ctx = _service_context(service, deploy_form=form)
    if form.validate_on_submit():
        if ctx["needs_confirm"] and not form.confirm_downtime.data:
            form.confirm_downtime.errors.append("Tick this box to accept the downtime: "
                                                "nothing is stopped without it.")
        else:
            digest = service.available_image_digest if (form.use_available.data and
                                                        ctx["update_available"]) else None
            try:
                op = start_service_deploy(service, current_user, image_digest=digest,
                                          confirm_downtime=bool(form.confirm_downtime.data))
            except (StepFailed, OperationLocked) as exc:
                ctx["deploy_error"] = str(exc)
            else:
                return _redirect(url_for("operations.show", operation_id=op.id))
    return render_template("services/show.html", **ctx), 400


@bp.route("/services/<int:service_id>/slices", methods=["POST"])
@login_required
def create_slice(service_id):
    service = get_for_org_or_404(Service, service_id)
    slice_type = get_driver(service).user_slice_type
    if slice_type is None:
        abort(404)
    form = SliceForm()
    if form.validate_on_submit():
        name = form.name.data.strip()
        taken = any(s.name == name and s.type == slice_type for s in service.slices)
        if taken:
            form.name.errors.append("This service already has a slice with this name.")
        else:
            try:
                config, credentials = get_driver(service).new_slice_config(name)
            except (ValueError, DriverError) as exc:
                form.name.errors.append(str(exc))
            else:
                slice_ = ServiceSlice(service=service, name=name, type=slice_type,
                                      status=SliceStatus.PENDING, config=config,
                                      credentials=credentials)
                db.session.add(slice_)
                db.session.commit()
                op = att.start_slice_provision(slice_, current_user)
                return _redirect(url_for("operations.show", operation_id=op.id))
    return render_template("services/show.html", **_service_context(service, slice_form=form)), 400


def _service_slice(service_id, slice_id) -> tuple[Service, ServiceSlice]:
    service = get_for_org_or_404(Service, service_id)
    slice_ = get_for_org_or_404(ServiceSlice, slice_id)
    if slice_.service_id != service.id:
        abort(404)
    return service, slice_


@bp.route("/services/<int:service_id>/slices/<int:slice_id>/delete", methods=["GET", "POST"])
@login_required
def delete_slice(service_id, slice_id):
    from app.operations import OperationLocked
    service, slice_ = _service_slice(service_id, slice_id)
    form = DeleteSliceForm()
    error = None
    if slice_.status in (SliceStatus.DELETED, SliceStatus.DELETING):
        error = "This slice is already deleted."
    elif form.validate_on_submit():
        try:
            op = att.request_slice_delete(slice_, confirm=form.confirm.data.strip(),
                                          drop_data=bool(form.drop_data.data), user=current_user)
        except att.AttachmentError as exc:
            form.confirm.errors.append(str(exc))
        except OperationLocked as exc:
            error = str(exc)
        else:
            return _redirect(url_for("operations.show", operation_id=op.id))
    status = 400 if request.method == "POST" else 200
    return render_template("services/delete_slice.html", service=service, slice=slice_,
                           form=form, error=error), status


# --------------------------------------------------------------------------- environment: attachments

def _environment(environment_id) -> Environment:
    from app.blueprints.environments import load_environment
    return load_environment(environment_id)


def _server_label(server: Server | None) -> str:
    return server.name if server is not None else "no server"


def _choices(services: list[Service], servers: list[Server], service_type: str,
             skip_servers=frozenset()) -> list[tuple[str, str]]:
    """Existing services, then "New ... on <server>" for each server that is provisioned
    (a service cannot start on a server Keystone has not set up)."""
    label = get_driver(service_type).short_label
    out = [(str(s.id), f"{s.name} on {_server_label(s.server)}{service_stand_in(s)}")
           for s in services]
    out += [(f"new:{srv.id}", f"New {label} on {srv.name}{stand_in_note(service_type, srv)}")
            for srv in servers if srv.id not in skip_servers and srv.status == ServerStatus.ACTIVE]
    return out


def attachment_forms(env: Environment, formdata=None) -> dict:
    services = _managed_services()
    servers = _servers()
    by_type = {t: [s for s in services if s.type == t] for t in drivers.offered()}
    gateway_servers = {s.server_id for s in by_type["caddy"]}
    pg = AttachPostgresForm(formdata=formdata, prefix="pg")
    pg.target.choices = _choices(by_type["postgres"], servers, "postgres")
    vk = AttachValkeyForm(formdata=formdata, prefix="vk")
    vk.target.choices = _choices(by_type["valkey"], servers, "valkey")
    dom = AttachDomainForm(formdata=formdata, prefix="dom")
    dom.target.choices = _choices(by_type["caddy"], servers, "caddy", gateway_servers)
    if formdata is None and not dom.hostname.data and env.application is not None:
        if any((s.facts or {}).get("sandbox") for s in servers):
            dom.hostname.data = f"{env.application.name}.localhost"
    rec = RecommendationsForm(formdata=formdata, prefix="rec")
    return {"pg_form": pg, "vk_form": vk, "dom_form": dom, "rec_form": rec}


def attachments_context(env: Environment, forms: dict | None = None,
                        next_target: str | None = None, **kw) -> dict:
    """The attachments component's context; ``next_target="onboarding"`` sends full-reload
    form posts back to the wizard."""
    forms = forms or attachment_forms(env)
    recs = att.recommendations_for(env)
    forms["rec_form"].keys.choices = [(r.key, f"{r.key}={r.value}") for r in recs]
    slice_ids = [a.service_slice_id for a in env.attachments]
    ops = _latest_ops("service_slice", slice_ids)
    busy = any(a.service_slice is not None and a.service_slice.status in
               (SliceStatus.PENDING, SliceStatus.PROVISIONING, SliceStatus.DELETING)
               and a.service_slice_id in ops and not ops[a.service_slice_id].is_terminal
               for a in env.attachments)
    nxt = next_target or _next()
    for f in forms.values():
        f.next.data = nxt if nxt in NEXT_TARGETS else ""
    ctx = {"env": env, "recommendations": recs, "slice_ops": ops, "busy": busy,
           "attach_message": None, "attach_error": None,
           "next": nxt if nxt in NEXT_TARGETS else None}
    ctx.update(forms)
    ctx.update(kw)
    return ctx


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
            return new_service(service_type, server, _free_name(f"{base}-{server.name}"[:63]),
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
    nxt = _next()
    if _is_htmx():
        env = _environment(env.id)
        status = 400 if (error or any(f.errors for f in forms.values())) else 200
        ctx = attachments_context(env, forms if status == 400 else None,
                                  attach_message=message, attach_error=error)
        # htmx 2 swaps only 2xx answers: the errors are part of the component it swaps in.
        return render_template("services/_attachments.html", c=ctx), 200
    if error or any(f.errors for f in forms.values()):
        if nxt in NEXT_TARGETS:
            for f in forms.values():
                for field, errs in f.errors.items():
                    for e in errs:
                        flash(f"{getattr(f, field).label.text}: {e}", "error")
            if error:
                flash(error, "error")
            return redirect(url_for(NEXT_TARGETS[nxt]))
        from app.blueprints.environments import render_page
        return render_page(env.id, attachments=attachments_context(
            _environment(env.id), forms, attach_error=error), status=400)
    flash(message, "success")
    if nxt in NEXT_TARGETS:
        return redirect(url_for(NEXT_TARGETS[nxt]))
    return redirect(url_for("environments.show", environment_id=env.id) + "#attachments")


def _attach(environment_id, form_key: str, service_type: str, do_attach):
    from app.operations import OperationLocked
    env = _environment(environment_id)
    forms = attachment_forms(env, request.form)
    form = forms[form_key]
    if not form.validate_on_submit():
        return _attachments_done(env, forms)
    service = _resolve_target(form, service_type, env)
    if service is None:
        db.session.rollback()
        return _attachments_done(env, forms)
    try:
        attachment, slice_ = do_attach(env, service, form)
    except (att.AttachmentError, DriverError) as exc:
        db.session.rollback()
        (form.hostname if form_key == "dom_form" else form.target).errors.append(str(exc))
        return _attachments_done(env, forms)
    db.session.commit()
    try:
        deploy_op = _deploy_if_new(service)
        op = att.start_slice_provision(slice_, current_user)
    except OperationLocked as exc:
        return _attachments_done(env, forms, error=str(exc))
    parts = [f"{service.name} attached ({slice_.type.value.replace('_', ' ')} "
             f"{slice_.name}): operation #{op.id} creates it on the server"]
    if deploy_op is not None:
        parts.append(f"after deploying {service.name} (operation #{deploy_op.id})")
    return _attachments_done(env, forms, message=" ".join(parts) + ".")


@bp.route("/environments/<int:environment_id>/attachments")
@login_required
def attachments_component(environment_id):
    env = _environment(environment_id)
    return render_template("services/_attachments.html", c=attachments_context(env))


@bp.route("/environments/<int:environment_id>/attachments/postgres", methods=["POST"])
@login_required
def attach_postgres(environment_id):
    return _attach(environment_id, "pg_form", "postgres",
                   lambda env, service, form: att.attach_postgres(env, service))


@bp.route("/environments/<int:environment_id>/attachments/valkey", methods=["POST"])
@login_required
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
    attachment, slice_ = att.attach_domain(env, gateway, [hostname], tls=tls,
                                           redirect_from=redirect_from)
    slice_.config = {**(slice_.config or {}),
                     **route_extras(gateway, slice_.config["hostnames"], tls)}
    return attachment, slice_


@bp.route("/environments/<int:environment_id>/attachments/domain", methods=["POST"])
@login_required
def attach_domain(environment_id):
    return _attach(environment_id, "dom_form", "caddy", _attach_domain)


@bp.route("/environments/<int:environment_id>/recommendations", methods=["POST"])
@login_required
def apply_recommendations(environment_id):
    env = _environment(environment_id)
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


# --------------------------------------------------------------------------- environment: variables

def variables_context(env: Environment, form: VariableForm | None = None, **kw) -> dict:
    slices = {a.service_slice_id: a for a in env.attachments if a.service_slice_id}
    rows = att.variable_rows(env)
    override = request.args.get("override") if request.method == "GET" else None
    if form is None:
        form = VariableForm(formdata=None)
        if override:
            form.key.data = override
    edit_forms = kw.pop("edit_forms", {})
    for row in rows:
        var = row.variable
        if var.source == VariableSource.USER and var.id not in edit_forms:
            edit_forms[var.id] = EditVariableForm(
                formdata=None, prefix=f"v{var.id}", is_secret=var.is_secret,
                value="" if var.is_secret else var.value)
    ctx = {"env": env, "rows": rows, "var_form": form, "slice_attachments": slices,
           "var_message": None, "var_error": None, "edit_forms": edit_forms,
           "action_form": ActionForm(formdata=None)}
    ctx.update(kw)
    return ctx


def _variables_done(env: Environment, form: VariableForm | None = None, status: int = 200,
                    **kw):
    env = _environment(env.id)
    ctx = variables_context(env, form, **kw)
    if _is_htmx():
        return render_template("services/_variables.html", c=ctx), 200  # htmx swaps 2xx only
    if status != 200:
        from app.blueprints.environments import render_page
        return render_page(env.id, variables=ctx, status=status)
    flash(kw.get("var_message") or "Saved.", "success")
    return redirect(url_for("environments.show", environment_id=env.id) + "#variables")


def _blank_value_on_error(form: VariableForm) -> None:
    # A submitted value is never sent back with an error (it may be a secret typed without
    # ticking "secret"); the error names the key only.
    form.value.data = ""
    if form.errors:
        form.value.errors = list(form.value.errors) + ["Enter the value again."]


@bp.route("/environments/<int:environment_id>/variables", methods=["POST"])
@login_required
def set_variable(environment_id):
    env = _environment(environment_id)
    form = VariableForm()
    if form.validate_on_submit():
        key = form.key.data.strip()
        try:
            att.set_user_variable(env, key, form.value.data or "", is_secret=form.is_secret.data)
        except att.EnvKeyError as exc:
            db.session.rollback()
            form.key.errors.append(str(exc))
        except (att.AttachmentError, ValueError) as exc:
            db.session.rollback()
            # The back end's value errors name the key only; the value is never shown.
            form.key.errors.append(str(exc))
        else:
            db.session.commit()
            return _variables_done(env, var_message=f"{key} saved; it takes effect at the "
                                                    "next deploy.")
    _blank_value_on_error(form)
    return _variables_done(env, form, status=400)


def _user_variable(environment_id, variable_id) -> tuple[Environment, EnvironmentVariable]:
    get_for_org_or_404(Environment, environment_id)
    var = get_for_org_or_404(EnvironmentVariable, variable_id)
    if var.environment_id != int(environment_id):
        abort(404)
    env = _environment(environment_id)
    var = next(v for v in env.variables if v.id == var.id)
    return env, var


@bp.route("/environments/<int:environment_id>/variables/<int:variable_id>", methods=["POST"])
@login_required
def edit_variable(environment_id, variable_id):
    env, var = _user_variable(environment_id, variable_id)
    if var.source != VariableSource.USER:
        return _variables_done(env, status=400, var_error=(
            f"{var.key} is managed by an attachment: add a variable of the same name to "
            "override it" if var.overridable else
            f"{var.key} is managed by an attachment and cannot be overridden."))
    form = EditVariableForm(prefix=f"v{var.id}")
    if form.validate_on_submit():
        value = form.value.data or ""
        if var.is_secret and value == "":
            value = var.value  # left empty: keep the stored secret
        try:
            att.set_user_variable(env, var.key, value, is_secret=form.is_secret.data)
        except (att.AttachmentError, ValueError) as exc:
            db.session.rollback()
            form.value.errors.append(str(exc))
        else:
            db.session.commit()
            return _variables_done(env, var_message=f"{var.key} saved; it takes effect at the "
                                                    "next deploy.")
    form.value.data = ""
    return _variables_done(env, status=400, edit_forms={var.id: form})


@bp.route("/environments/<int:environment_id>/variables/<int:variable_id>/delete",
          methods=["POST"])
@login_required
def delete_variable(environment_id, variable_id):
    env, var = _user_variable(environment_id, variable_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    if var.source != VariableSource.USER:
        return _variables_done(env, status=400, var_error=(
            f"{var.key} is managed by an attachment: it goes away when the attachment does."))
    att.delete_user_variable(env, var.key)
    db.session.commit()
    return _variables_done(env, var_message=f"{var.key} deleted; it takes effect at the next "
                                            "deploy.")
