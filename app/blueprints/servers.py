"""Servers and providers: list, connect Hetzner, create servers, add a custom server
(with host-key confirmation), a server's page with its provisioning history and live
log, re-run provisioning, re-pin the host key.

Views stay thin: provider calls go through :mod:`app.providers`, changes to a
server's state through the ``server_provision`` operation. Every object comes
from :func:`app.scoping.get_for_org_or_404`. Forms swap only their own
component under HTMX (``hx-target="this"``); a success answers ``HX-Redirect``.
"""
from __future__ import annotations

import re

import sqlalchemy as sa
from flask import (Blueprint, abort, flash, redirect, render_template, request,
                   url_for)
from flask_login import current_user
from wtforms import (BooleanField, HiddenField, IntegerField, PasswordField, SelectField,
                     StringField, TextAreaField)
from wtforms.validators import (DataRequired, Length, NumberRange, Optional,
                                ValidationError)

from app.blueprints.helpers import hx_redirect
from app.extensions import db, limiter
from app.forms import FullMatch, KeystoneForm, name_field
from app import audit
from app.models import (Operation, Organisation, Provider, Server, Service,
                        ServiceReplica)
from app.models.enums import OperationKind, OperationStatus, ProviderType, ServerStatus
from app.operations.lifecycle import latest_operation, start_or_join
from app.providers import ProviderError
from app.providers.custom import check_private_key
from app.providers.keys import ensure_management_key
from app.scoping import current_org_id, get_for_org_or_404
from app.security import SERVER_CHECK_PER_USER, current_user_key
from app.policy import requires

bp = Blueprint("servers", __name__, url_prefix="/servers")

HOST_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


# --------------------------------------------------------------------------- forms

def _host(form, field):
    import ipaddress
    value = (field.data or "").strip()
    field.data = value
    try:
        ipaddress.ip_address(value)
        return
    except ValueError:
        pass
    if not HOST_RE.fullmatch(value):
        raise ValidationError("Enter an IP address or a host name (letters, digits, dots, hyphens).")


class HetznerProviderForm(KeystoneForm):
    name = name_field("Name")
    token = PasswordField("API token", validators=[DataRequired(), Length(max=200)])


class HetznerServerForm(KeystoneForm):
    name = name_field("Server name")
    server_type = SelectField("Server type", validators=[DataRequired()], choices=[])
    image = SelectField("Image", validators=[DataRequired()], choices=[])
    location = SelectField("Location", validators=[DataRequired()], choices=[])
    # "" is a listed choice ("No private network"); anything else must be listed too,
    # so whitespace is refused rather than sent to Hetzner.
    network = SelectField("Private network", choices=[])


class CustomServerForm(KeystoneForm):
    name = name_field("Server name")
    host = StringField("Address", validators=[DataRequired(), Length(max=253), _host])
    port = IntegerField("SSH port", default=22,
                        validators=[DataRequired(), NumberRange(min=1, max=65535)])
    user = StringField("Login", default="root", validators=[
        DataRequired(), FullMatch(r"[a-z_][a-z0-9_-]{0,31}",
                               message="A Unix user name: lower-case letters, digits, _ and -.")])
    private_key = TextAreaField("Private key", validators=[DataRequired(), Length(max=20000)])


class ConfirmHostKeyForm(KeystoneForm):
    fingerprint = HiddenField(validators=[DataRequired()])


class ActionForm(KeystoneForm):
    """CSRF only (re-run provisioning, delete)."""


class NetworkingForm(KeystoneForm):
    """SPEC 14's explicit opt-in: the public-network fallback of a server (app.endpoints)."""

    public_fallback = BooleanField("Allow the public-network fallback: offer this server's "
                                   "services to the organisation's other servers on its public "
                                   "IP (only when it has no private network)")


# --------------------------------------------------------------------------- helpers

def _org() -> Organisation:
    return db.session.get(Organisation, current_org_id())


def _name_taken(model, name: str, org_id: int) -> bool:
    return db.session.execute(sa.select(model.id).where(model.organisation_id == org_id,
                                                        model.name == name)).first() is not None


def start_provisioning(server: Server, summary: str | None = None) -> Operation:
    from app.operations import start_operation
    return start_operation(OperationKind.SERVER_PROVISION, target_type="server",
                           target_id=server.id, organisation_id=server.organisation_id,
                           user=current_user, lock_keys=[f"server:{server.id}"],
                           summary=summary or f"Provision {server.name}", on_conflict="refuse")


def _provision_or_flash(server: Server, summary: str | None = None) -> Operation | None:
    from app.operations import OperationLocked
    try:
        return start_provisioning(server, summary)
    except OperationLocked as exc:
        flash(str(exc), "error")
        return None


def _provisioning_history(server: Server) -> list[Operation]:
    return db.session.execute(
        sa.select(Operation).where(Operation.target_type == "server",
                                   Operation.target_id == server.id,
                                   Operation.organisation_id == server.organisation_id)
        .order_by(Operation.id.desc()).limit(20)).scalars().all()


# --------------------------------------------------------------------------- list

@bp.route("/")
@requires("read")
def index():
    org = _org()
    ensure_management_key(org)
    servers = db.session.execute(sa.select(Server).where(Server.organisation_id == org.id)
                                 .order_by(Server.name)).scalars().all()
    providers = db.session.execute(sa.select(Provider).where(Provider.organisation_id == org.id)
                                   .order_by(Provider.name)).scalars().all()
    return render_template("servers/index.html", servers=servers, providers=providers, org=org,
                           ProviderType=ProviderType)


# --------------------------------------------------------------------------- Hetzner

@bp.route("/providers/hetzner/new", methods=["GET", "POST"])
@requires("servers.manage")
def new_hetzner():
    """Save the token (encrypted) and start a ``provider_sync`` operation that checks it with
    Hetzner and lists what the create-server form offers."""
    org = _org()
    form = HetznerProviderForm()
    if form.validate_on_submit():
        if _name_taken(Provider, form.name.data, org.id):
            form.name.errors.append("A provider with this name exists already.")
        else:
            provider = Provider(organisation_id=org.id, name=form.name.data,
                                type=ProviderType.HETZNER, api_token=form.token.data.strip(),
                                config={})
            db.session.add(provider)
            db.session.flush()
            start_provider_sync(provider)    # commits the provider with the operation
            return hx_redirect(url_for("servers.create_hetzner", provider_id=provider.id))
    template = "servers/_hetzner_provider_form.html" if request.htmx else "servers/new_hetzner.html"
    return render_template(template, form=form)


def start_provider_sync(provider: Provider) -> Operation:
    return start_or_join(OperationKind.PROVIDER_SYNC, target_type="provider",
                         target_id=provider.id, organisation_id=provider.organisation_id,
                         user=current_user, summary=f"Check the Hetzner token of {provider.name} "
                                                    f"and list what it offers")


def _hetzner_choices(provider: Provider, form: HetznerServerForm) -> None:
    """Fill the form's choices from what the last provider_sync recorded (no API call)."""
    choices = (provider.config or {}).get("choices") or {}
    form.server_type.choices = [(n, f"{label} — {detail}")
                                for n, label, detail in choices.get("server_types", [])]
    form.image.choices = [(n, label) for n, label, _ in choices.get("images", [])]
    form.location.choices = [(n, label) for n, label, _ in choices.get("locations", [])]
    form.network.choices = [("", "No private network")] + [
        (n, f"{label} ({detail})") for n, label, detail in choices.get("networks", [])]


def _sync_state(provider: Provider) -> dict:
    op = latest_operation(OperationKind.PROVIDER_SYNC, "provider", provider.id,
                          provider.organisation_id)
    syncing = op if op is not None and not op.is_terminal else None
    api_error = None
    if op is not None and op.is_terminal and op.status != OperationStatus.SUCCEEDED:
        api_error = op.error or f"Checking with Hetzner {op.status.value}."
    return {"syncing": syncing, "sync": op, "api_error": api_error,
            "action_form": ActionForm(formdata=None)}


@bp.route("/providers/<int:provider_id>/servers/new", methods=["GET", "POST"])
@requires("servers.manage")
def create_hetzner(provider_id: int):
    provider = get_for_org_or_404(Provider, provider_id)
    if provider.type != ProviderType.HETZNER:
        abort(404)
    org = _org()
    form = HetznerServerForm()
    _hetzner_choices(provider, form)
    state = _sync_state(provider)
    if state["syncing"] is None and form.server_type.choices and form.validate_on_submit():
        if _name_taken(Server, form.name.data, org.id):
            form.name.errors.append("A server with this name exists already.")
        else:
            # Hetzner creates the server inside the provisioning operation (its first
            # step): the request only records what to create.
            ensure_management_key(org)
            server = Server(organisation_id=org.id, provider_id=provider.id,
                            name=form.name.data, status=ServerStatus.CREATING,
                            facts={"hetzner": {"server_type": form.server_type.data,
                                               "image": form.image.data,
                                               "location": form.location.data,
                                               "network_id": form.network.data or None}})
            db.session.add(server)
            db.session.flush()
            audit.record("server.create", server, {"name": server.name, "provider": "hetzner",
                                                   "server_type": form.server_type.data,
                                                   "location": form.location.data},
                         target_type="server")
            db.session.commit()
            op = _provision_or_flash(server, f"Create and provision {server.name}")
            if op is not None:
                flash(f"Creating {server.name} at Hetzner (operation #{op.id}); Keystone "
                      f"provisions it as soon as it answers over SSH.", "success")
            return hx_redirect(url_for("servers.show", server_id=server.id))
    template = "servers/_hetzner_server_form.html" if request.htmx else "servers/create_hetzner.html"
    return render_template(template, form=form, provider=provider, **state)


@bp.route("/providers/<int:provider_id>/sync", methods=["POST"])
@requires("servers.manage")
def sync_provider(provider_id: int):
    provider = get_for_org_or_404(Provider, provider_id)
    if provider.type != ProviderType.HETZNER:
        abort(404)
    if not ActionForm().validate_on_submit():
        abort(400)
    start_provider_sync(provider)
    return hx_redirect(url_for("servers.create_hetzner", provider_id=provider.id))


@bp.route("/providers/<int:provider_id>/delete", methods=["POST"])
@requires("servers.manage")
def delete_provider(provider_id: int):
    provider = get_for_org_or_404(Provider, provider_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    if provider.servers:
        flash(f"{provider.name} still has servers; delete them first.", "error")
    else:
        audit.record("provider.delete", provider, {"name": provider.name},
                     target_type="provider")
        db.session.delete(provider)
        db.session.commit()
        flash(f"Provider {provider.name} removed (its token is deleted from Keystone).", "success")
    return redirect(url_for("servers.index"))


# --------------------------------------------------------------------------- custom servers

@bp.route("/custom/new", methods=["GET", "POST"])
@requires("servers.manage")
@limiter.limit(SERVER_CHECK_PER_USER, methods=["POST"], key_func=current_user_key)
def new_custom():
    org = _org()
    public_key = ensure_management_key(org)
    form = CustomServerForm()
    if form.validate_on_submit():
        if _name_taken(Server, form.name.data, org.id):
            form.name.errors.append("A server with this name exists already.")
        else:
            try:
                check_private_key(form.private_key.data)
            except ProviderError as exc:
                form.private_key.errors.append(str(exc))
            else:
                server = Server(organisation_id=org.id, name=form.name.data,
                                status=ServerStatus.NEW, public_ip=form.host.data,
                                ssh_port=form.port.data, bootstrap_user=form.user.data,
                                bootstrap_private_key=form.private_key.data.strip() + "\n",
                                facts={})
                db.session.add(server)
                db.session.flush()
                audit.record("server.create", server,
                             {"name": server.name, "provider": "custom",
                              "host": server.public_ip, "port": server.ssh_port},
                             target_type="server")
                start_host_key_scan(server)   # commits the server with the operation
                return hx_redirect(url_for("servers.confirm_host_key", server_id=server.id))
    if request.method == "POST":
        # Never send a submitted private key back to the browser (as the variables form
        # does with secret values): the user pastes it again.
        form.private_key.data = ""
        form.private_key.raw_data = []
    template = "servers/_custom_form.html" if request.htmx else "servers/new_custom.html"
    return render_template(template, form=form, public_key=public_key, org=org)


def start_host_key_scan(server: Server) -> Operation:
    """Read the host key the server presents, in a ``host_key_scan`` operation (no login)."""
    return start_or_join(OperationKind.HOST_KEY_SCAN, target_type="server",
                         target_id=server.id, organisation_id=server.organisation_id,
                         user=current_user, summary=f"Read the SSH host key of {server.name}")


def _host_key_context(server: Server, form, error=None) -> dict:
    scan = latest_operation(OperationKind.HOST_KEY_SCAN, "server", server.id,
                            server.organisation_id)
    scanning = scan if scan is not None and not scan.is_terminal else None
    presented = (server.facts or {}).get("presented_host_key") if scanning is None else None
    if scan is not None and scan.is_terminal and scan.status != OperationStatus.SUCCEEDED:
        error = error or scan.error or f"Reading the host key {scan.status.value}."
    return {"server": server, "form": form, "presented": presented, "error": error,
            "scanning": scanning, "scan": scan, "action_form": ActionForm(formdata=None)}


@bp.route("/<int:server_id>/host-key", methods=["GET", "POST"])
@requires("servers.manage")
def confirm_host_key(server_id: int):
    """Confirm (first time) or re-pin (explicit, recorded) the host key the last scan read.

    Reading the key is a ``host_key_scan`` operation (started by the custom-server form
    or by "Read the host key again"); this page polls its component while it runs.
    """
    server = get_for_org_or_404(Server, server_id)
    form = ConfirmHostKeyForm()
    context = _host_key_context(server, form)
    presented = context["presented"]
    if presented and form.validate_on_submit():
        if form.fingerprint.data != presented:
            context["error"] = ("The server now presents a different key than the one you "
                                "confirmed. Compare the fingerprint below again.")
        else:
            return _pin_host_key(server, presented)
    if presented:
        form.fingerprint.data = presented
    template = "servers/_host_key.html" if request.htmx else "servers/host_key.html"
    return render_template(template, **context)


@bp.route("/<int:server_id>/host-key/scan", methods=["POST"])
@requires("servers.manage")
@limiter.limit(SERVER_CHECK_PER_USER, key_func=current_user_key)
def scan_host_key(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    start_host_key_scan(server)
    return hx_redirect(url_for("servers.confirm_host_key", server_id=server.id))


def _pin_host_key(server: Server, presented: str):
    previous = server.host_key_fingerprint
    server.host_key_fingerprint = presented
    facts = dict(server.facts or {})
    facts.pop("presented_host_key", None)
    facts["host_key_pinned"] = "confirmed by user" if previous is None else "re-pinned by user"
    server.facts = facts
    if previous is not None and previous != presented:
        audit.record("server.host_key_repinned", server,
                     {"previous": previous, "new": presented}, target_type="server")
    elif previous is None:
        audit.record("server.host_key_confirmed", server, {"fingerprint": presented},
                     target_type="server")
    if server.status == ServerStatus.UNREACHABLE:
        server.status = ServerStatus.NEW if not server.provisioned_at else ServerStatus.FAILED
    db.session.commit()
    if previous is None and not server.provisioned_at:
        op = _provision_or_flash(server)
        if op is not None:
            flash(f"Host key pinned. Provisioning {server.name}.", "success")
    else:
        flash(f"Host key of {server.name} re-pinned to {presented}.", "success")
    return hx_redirect(url_for("servers.show", server_id=server.id))


# --------------------------------------------------------------------------- a server

@bp.route("/<int:server_id>")
@requires("read")
def show(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    history = _provisioning_history(server)
    latest = history[0] if history else None
    replay = []
    if latest is not None and latest.is_terminal:
        from app.operations import sse
        replay = sse.replay_lines(latest)
    from app import metrics
    resolution = "hour" if request.args.get("range") == "30d" else "minute"
    rows = metrics.series(db.session, server.id, resolution)
    return render_template("servers/show.html", server=server, history=history, latest=latest,
                           replay=replay, metric_charts=metrics.charts(rows),
                           metric_range=resolution, metric_last=rows[-1] if rows else None,
                           metric_warnings=metrics.warnings_for(rows[-1] if rows else None), action_form=ActionForm(), ProviderType=ProviderType,
                           networking_form=NetworkingForm(public_fallback=server.public_fallback))


@bp.route("/<int:server_id>/networking", methods=["POST"])
@requires("servers.manage")
def networking(server_id: int):
    """Turn the public-network fallback on or off (SPEC 14: only if explicitly allowed).
    It takes effect at the next deploy of what runs there (the endpoints and the firewall
    rules are written by deploys)."""
    server = get_for_org_or_404(Server, server_id)
    form = NetworkingForm()
    if not form.validate_on_submit():
        abort(400)
    wanted = bool(form.public_fallback.data)
    if wanted != server.public_fallback:
        server.public_fallback = wanted
        audit.record("server.public_fallback", server, {"name": server.name,
                                                        "public_fallback": wanted})
        db.session.commit()
    if wanted and server.private_ip:
        flash(f"{server.name} has a private IP: other servers keep using it; the public "
              "fallback applies only to a server without one.", "success")
    elif wanted:
        flash(f"Public-network fallback allowed on {server.name}: redeploy its services to "
              "publish them on its public IP (opened to the organisation's servers' public "
              "IPs only).", "success")
    else:
        flash(f"Public-network fallback off on {server.name}: without a private IP, other "
              "servers cannot reach its services (from its next deploy on).", "success")
    return redirect(url_for("servers.show", server_id=server.id))


@bp.route("/<int:server_id>/status")
@requires("read")
def status(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    return render_template("servers/_status.html", server=server)


@bp.route("/<int:server_id>/provision", methods=["POST"])
@requires("servers.manage")
def provision(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    if not server.host_key_fingerprint and (server.provider is None
                                            or server.provider.type == ProviderType.CUSTOM):
        flash("Confirm the server's host key first.", "error")
        return redirect(url_for("servers.confirm_host_key", server_id=server.id))
    op = _provision_or_flash(server, f"Re-provision {server.name}" if server.provisioned_at else None)
    if op is not None:
        flash(f"Provisioning {server.name} (operation #{op.id}).", "success")
    return redirect(url_for("servers.show", server_id=server.id))


@bp.route("/provision-all", methods=["POST"])
@requires("servers.manage")
def provision_all():
    """Provision every server of the organisation that is not provisioned yet, in one action
    (the sandbox hands over several servers; each needs provisioning once)."""
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    servers = db.session.execute(sa.select(Server).where(Server.organisation_id == _org().id)
                                 .order_by(Server.name)).scalars().all()
    todo = [s for s in servers
            if s.status in (ServerStatus.NEW, ServerStatus.FAILED, ServerStatus.UNREACHABLE)]
    started = []
    for server in todo:
        if not server.host_key_fingerprint:
            flash(f"{server.name}: confirm its host key first.", "error")
            continue
        op = _provision_or_flash(server)
        if op is not None:
            started.append((server, op))
    if not started:
        if not todo:
            flash("Every server is provisioned or being provisioned.", "success")
        return redirect(url_for("servers.index"))
    flash("Provisioning " + ", ".join(f"{s.name} (operation #{op.id})" for s, op in started)
          + ".", "success")
    if request.form.get("next") == "onboarding":
        # The wizard lists each server's status and log and continues on its own.
        return redirect(url_for("onboarding.start"))
    return redirect(url_for("servers.show", server_id=started[0][0].id))


@bp.route("/<int:server_id>/delete", methods=["POST"])
@requires("servers.manage")
def delete(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    in_use = db.session.execute(sa.select(sa.func.count()).select_from(ServiceReplica)
                                .where(ServiceReplica.server_id == server.id)).scalar() or 0
    in_use += db.session.execute(sa.select(sa.func.count()).select_from(Service)
                                 .where(Service.server_id == server.id)).scalar() or 0
    if in_use:
        flash(f"{server.name} still runs services; move or remove them first.", "error")
        return redirect(url_for("servers.show", server_id=server.id))
    if server.provider is not None and server.provider.type == ProviderType.HETZNER \
            and server.provider_server_id:
        # Hetzner deletes it inside a server_delete operation; the row goes after it.
        from app.operations import OperationLocked, start_operation
        previous = server.status
        try:
            op = start_operation(OperationKind.SERVER_DELETE, target_type="server",
                                 target_id=server.id, organisation_id=server.organisation_id,
                                 user=current_user, lock_keys=[f"server:{server.id}"],
                                 params={"previous_status": previous.value},
                                 summary=f"Delete {server.name} at Hetzner",
                                 on_conflict="refuse")
        except OperationLocked as exc:
            flash(str(exc), "error")
            return redirect(url_for("servers.show", server_id=server.id))
        server.status = ServerStatus.DELETING
        db.session.commit()
        flash(f"Deleting {server.name} at Hetzner (operation #{op.id}).", "success")
        return redirect(url_for("operations.show", operation_id=op.id))
    name = server.name
    audit.record("server.delete", server, {"name": name}, target_type="server")
    db.session.delete(server)
    db.session.commit()
    flash(f"Server {name} removed from Keystone.", "success")
    return redirect(url_for("servers.index"))
