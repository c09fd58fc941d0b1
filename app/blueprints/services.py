"""Managed services (Postgres 18, Valkey 8, the Caddy gateway: SPEC 9-13).

* ``/services``: the organisation's services, "New service" (type, server,
  image override under "advanced") -> ``service_deploy`` -> the operation page.
* ``/services/<service_id>``: status, replicas, digests with an update badge,
  "Check for updates", "Update / redeploy" (the SPEC 11 downtime warning and a
  required confirmation), slices (create, delete with a typed name), operations.

The environment's attachments and variables components are the environment
blueprint's (:mod:`app.blueprints.environments`). Views stay thin: a service is
created by :mod:`app.managed_services`, every change goes through
:mod:`app.attachments` or :mod:`app.services_ops`, every object through
:mod:`app.scoping`. Which service types exist, their labels and slices are the
drivers' (:mod:`app.drivers`).
"""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app import attachments as att
from app import audit
from app.blueprints.helpers import hx_redirect
from app.drivers import drivers, get_driver
from app.drivers.base import DriverError
from app.extensions import db
from app.forms import ActionForm, KeystoneForm, name_field
from app.managed_services import name_taken, new_service, org_servers, service_stand_in
from app.models import Operation, Server, Service, ServiceSlice
from app.models.enums import OperationKind, OperationStatus, ReplicaStatus, SliceStatus
from app.operations import OperationLocked, StepFailed
from app.operations.lifecycle import latest_operation, start_or_join
from app.registries.images import ImageError
from app.services_ops.deploy import start_service_deploy, update_warning
from app.scoping import current_org_id, get_child_or_404, get_for_org_or_404, org_query
from app.policy import requires

bp = Blueprint("services", __name__)
bp.add_app_template_global(service_stand_in)


# --------------------------------------------------------------------------- forms

class NewServiceForm(KeystoneForm):
    type = SelectField("Service", choices=[], default="postgres")
    name = name_field("Name")
    server_id = SelectField("Server", coerce=str, choices=[], validators=[DataRequired()])
    image = StringField("Image override", validators=[Optional(), Length(max=255)])
    expose_private = BooleanField("Reachable from the private network (for environments on "
                                  "other servers)")


class DeployForm(KeystoneForm):
    use_available = BooleanField("Update to the available image")
    confirm_downtime = BooleanField("I understand the downtime and the risk to data")
    backup_first = BooleanField("Back up first")


class SliceForm(KeystoneForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=50)])


class DeleteSliceForm(KeystoneForm):
    confirm = StringField("Type the slice's name to confirm", validators=[DataRequired()])
    drop_data = BooleanField("Also drop the data (cannot be undone)")


# --------------------------------------------------------------------------- services list

def _fill_new_service(form: NewServiceForm, servers: list[Server]) -> None:
    form.type.choices = list(drivers.labels().items())
    form.server_id.choices = [(str(s.id), f"{s.name} ({s.status.value})") for s in servers]


@bp.route("/services/")
@requires("read")
def index():
    services = db.session.execute(
        org_query(Service).order_by(Service.type, Service.name)).scalars().all()
    labels = drivers.labels()
    managed = [s for s in services if s.type in labels]
    app_services = [s for s in services if s.type not in labels]
    return render_template("services/index.html", managed=managed, app_services=app_services,
                           labels=labels)


@bp.route("/services/new", methods=["GET", "POST"])
@requires("resources.manage")
def new():
    servers = org_servers()
    form = NewServiceForm()
    _fill_new_service(form, servers)
    if request.method == "GET" and request.args.get("type") in drivers.offered():
        form.type.data = request.args["type"]
    error = None
    if form.validate_on_submit():
        server = next(s for s in servers if str(s.id) == form.server_id.data)
        if name_taken(form.name.data):
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
                db.session.flush()
                audit.record("service.create", service,
                             {"name": service.name, "type": form.type.data,
                              "server_id": server.id, "image": form.image.data or ""},
                             target_type="service")
                db.session.commit()
                op = start_service_deploy(service, current_user)
                flash(f"{service.name} created; deploying it on {server.name}.", "success")
                return hx_redirect(url_for("operations.show", operation_id=op.id))
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
    if service.type == "caddy":
        ctx.update(certificates_context(service))
    if service.type == "postgres":
        from app.blueprints.backups import section_context
        ctx.update({k: v for k, v in section_context(service).items()
                    if k not in ("service", "action_form")})
    ctx.update(kw)
    return ctx


@bp.route("/services/<int:service_id>")
@requires("read")
def show(service_id):
    service = get_for_org_or_404(Service, service_id)
    if service.type not in drivers.offered() and service.environment_id:
        return redirect(url_for("environments.show", environment_id=service.environment_id))
    return render_template("services/show.html", **_service_context(service))


def _image_check(service: Service) -> dict:
    """The running image check of the service, or the last one's message (image_check op)."""
    op = latest_operation(OperationKind.IMAGE_CHECK, "service", service.id,
                          service.organisation_id)
    if op is None:
        return {}
    if not op.is_terminal:
        return {"image_checking": op}
    if op.status == OperationStatus.SUCCEEDED:
        return {"image_message": (op.result or {}).get("message"), "image_check": op}
    return {"image_error": op.error or f"The check {op.status.value}.", "image_check": op}


def certificates_context(service: Service) -> dict:
    """What the gateway's Certificates card shows: stored rows only (no network here)."""
    from app.certificates import WARN_DAYS, renewal_failing, rows_for
    from app.drivers.caddy.caddyfile import CaddyfileError
    from app.drivers.caddy.tls import AcmeSettings
    rows = rows_for(db.session, service.id)
    for r in rows:
        r.warn = renewal_failing(r)
    try:
        acme = AcmeSettings.for_gateway(service)
    except CaddyfileError:
        acme = AcmeSettings()
    form = AcmeEmailForm(formdata=None, email=(service.config or {}).get("acme_email", ""))
    return {"certificates": rows, "warn_days": WARN_DAYS, "acme": acme, "cert_message": None,
            "acme_form": form, "acme_error": None}


class AcmeEmailForm(KeystoneForm):
    email = StringField("ACME account email", validators=[Optional(), Length(max=254)])
    every_gateway = BooleanField("Set it on every gateway of the organisation")


@bp.route("/services/<int:service_id>/acme-email", methods=["POST"])
@requires("resources.manage")
def acme_email(service_id):
    """Save the ACME account emails and reinstall the gateway's Caddyfile (an operation)."""
    from app.drivers.caddy.caddyfile import CaddyfileError, validate_email
    service = get_for_org_or_404(Service, service_id)
    if service.type != "caddy":
        abort(400)
    form = AcmeEmailForm()
    message, error = None, None
    if form.validate_on_submit():
        try:
            email = (form.email.data or "").strip()
            email = validate_email(email) if email else None
        except CaddyfileError as exc:
            error = str(exc)
        else:
            gateways = [service]
            if form.every_gateway.data:
                gateways = db.session.execute(org_query(Service).where(
                    Service.type == "caddy")).scalars().all()
            ops = []
            for gw in gateways:
                cfg = dict(gw.config or {})
                if email:
                    cfg["acme_email"] = email
                else:
                    cfg.pop("acme_email", None)
                gw.config = cfg
            db.session.commit()
            for gw in gateways:
                op = att.start_gateway_reinstall(gw, current_user)
                if op is not None:
                    ops.append(f"#{op.id}")
            message = (f"Saved on {len(gateways)} gateway(s); installing "
                       f"(operation {', '.join(ops)})." if ops else
                       "Saved; a gateway uses it from its first route.")
    else:
        error = "; ".join(e for errs in form.errors.values() for e in errs)
    if request.htmx:
        ctx = _service_context(service)
        ctx.update(cert_message=message or None, acme_error=error, acme_form=form)
        return render_template("services/_certificates.html", **ctx)
    flash(message or error, "success" if message else "error")
    return redirect(url_for("services.show", service_id=service.id))


@bp.route("/services/<int:service_id>/certificates", methods=["POST"])
@requires("read")  # only queues a read of the gateway's certificates
def check_certificates(service_id):
    """Enqueue a certificate check of this gateway; the card shows the stored rows."""
    from app.certificates import enqueue_check
    service = get_for_org_or_404(Service, service_id)
    if service.type != "caddy" or not ActionForm().validate_on_submit():
        abort(400)
    queued = enqueue_check(service.id)
    message = ("Checking the certificates on the server; reload in a few seconds."
               if queued else "The worker queue is not reachable; try again later.")
    if request.htmx:
        ctx = _service_context(service)
        ctx["cert_message"] = message
        return render_template("services/_certificates.html", **ctx)
    flash(message, "success" if queued else "error")
    return redirect(url_for("services.show", service_id=service.id))


@bp.route("/services/<int:service_id>/check-updates", methods=["POST"])
@requires("deploy")
def check_updates(service_id):
    """Start an ``image_check`` operation: the registry is asked in the worker."""
    service = get_for_org_or_404(Service, service_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    op = start_or_join(OperationKind.IMAGE_CHECK, target_type="service", target_id=service.id,
                       organisation_id=service.organisation_id, user=current_user,
                       summary=f"Check {service.name} for a newer image")
    if request.htmx:
        return render_template("services/_image.html", **_service_context(service))
    flash(f"Checking for a newer image (operation #{op.id}).", "success")
    return redirect(url_for("services.show", service_id=service.id))


@bp.route("/services/<int:service_id>/image")
@requires("read")
def image_component(service_id):
    """The image component, polled while an image check runs."""
    service = get_for_org_or_404(Service, service_id)
    return render_template("services/_image.html", **_service_context(service))


@bp.route("/services/<int:service_id>/deploy", methods=["POST"])
@requires("deploy")
def deploy(service_id):
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
                after = _backups_first(service) if (form.backup_first.data and
                                                    ctx["running"]) else None
                op = start_service_deploy(service, current_user, image_digest=digest,
                                          confirm_downtime=bool(form.confirm_downtime.data),
                                          after_backups=after)
            except (StepFailed, OperationLocked) as exc:
                ctx["deploy_error"] = str(exc)
            else:
                return hx_redirect(url_for("operations.show", operation_id=op.id))
    return render_template("services/show.html", **ctx), 400


def _backups_first(service: Service) -> list[int]:
    """Start one backup per ready database (its schedule's target, else the first target)."""
    from app.backups.handlers import start_backup
    from app.models.backup import BackupPolicy, BackupTarget
    targets = db.session.execute(sa.select(BackupTarget).where(
        BackupTarget.organisation_id == service.organisation_id)
        .order_by(BackupTarget.name)).scalars().all()
    if not targets:
        raise StepFailed("Add a backup target first (Backups section).")
    ids = []
    for sl in service.slices:
        if sl.type.value != "postgres_database" or sl.status != SliceStatus.READY:
            continue
        policy = db.session.execute(sa.select(BackupPolicy).where(
            BackupPolicy.slice_id == sl.id)).scalar_one_or_none()
        ids.append(start_backup(sl, policy.target if policy else targets[0], user=current_user,
                                trigger="before_update").id)
    return ids


@bp.route("/services/<int:service_id>/slices", methods=["POST"])
@requires("resources.manage")
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
                return hx_redirect(url_for("operations.show", operation_id=op.id))
    return render_template("services/show.html", **_service_context(service, slice_form=form)), 400


def _service_slice(service_id, slice_id) -> tuple[Service, ServiceSlice]:
    service = get_for_org_or_404(Service, service_id)
    return service, get_child_or_404(service, ServiceSlice, slice_id, "service_id")


@bp.route("/services/<int:service_id>/slices/<int:slice_id>/delete", methods=["GET", "POST"])
@requires("resources.manage")
def delete_slice(service_id, slice_id):
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
            return hx_redirect(url_for("operations.show", operation_id=op.id))
    status = 400 if request.method == "POST" else 200
    return render_template("services/delete_slice.html", service=service, slice=slice_,
                           form=form, error=error), status


@bp.route("/services/<int:service_id>/slices/<int:slice_id>/rotate", methods=["POST"])
@requires("resources.manage")
def rotate_slice(service_id, slice_id):
    """New credentials for a slice: a ``credential_rotation`` operation."""
    service, slice_ = _service_slice(service_id, slice_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        op = att.start_credential_rotation(slice_, current_user)
    except (att.AttachmentError, OperationLocked) as exc:
        flash(str(exc), "error")
        return hx_redirect(url_for("services.show", service_id=service.id))
    return hx_redirect(url_for("operations.show", operation_id=op.id))


# --------------------------------------------------------------------------- live logs

LOG_TAIL_CHOICES = (100, 200, 1000)


def _log_params() -> tuple[str | None, int]:
    """("since", tail) from the query string, allowlisted (anything else: the defaults)."""
    from app.shell import LOG_SINCE
    since = request.args.get("since") or None
    if since not in LOG_SINCE:
        since = None
    tail = request.args.get("tail", "")
    tail_n = int(tail) if tail.isdigit() and int(tail) in LOG_TAIL_CHOICES else 200
    return since, tail_n


@bp.route("/services/<int:service_id>/logs")
@requires("read")
def logs(service_id):
    """The live log of every running replica of a service (app.logtail)."""
    from app.shell import LOG_SINCE
    service = get_for_org_or_404(Service, service_id)
    since, tail = _log_params()
    replicas = [r for r in service.replicas if r.status == ReplicaStatus.RUNNING]
    return render_template("services/logs.html", service=service, replicas=replicas,
                           since=since, tail=tail, since_choices=list(LOG_SINCE),
                           gateway=service.type == "caddy")


@bp.route("/services/<int:service_id>/logs/events")
@requires("read")
def log_events(service_id):
    """SSE of the live log. Only Redis here: the tail itself runs in the logs worker."""
    from flask import Response, current_app

    from app import logtail
    from app.operations import logstream
    service = get_for_org_or_404(Service, service_id)
    since, tail = _log_params()
    if request.headers.get("Last-Event-ID"):
        since, tail = None, logtail.RECONNECT_TAIL  # the browser has the earlier lines
    client = logstream.redis_client(blocking=True)
    sid = logtail.open_session(client, service.id, since=since, tail=tail)
    logtail.ensure_tailer(client, current_app.config)
    gateway = service.type == "caddy"
    db.session.remove()  # the generator never uses the session
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return Response(logtail.follow(client, sid, gateway=gateway), mimetype="text/event-stream",
                    headers=headers)
