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
from flask_login import current_user, login_required
from wtforms import (HiddenField, IntegerField, PasswordField, SelectField, StringField,
                     TextAreaField)
from wtforms.validators import (DataRequired, Length, NumberRange, Optional,
                                ValidationError)

from app.blueprints.helpers import hx_redirect
from app.extensions import db, limiter
from app.forms import FullMatch, KeystoneForm, name_field
from app.models import (AuditEvent, Operation, Organisation, Provider, Server, Service,
                        ServiceReplica)
from app.models.enums import OperationKind, ProviderType, ServerStatus
from app.providers import ProviderError, cloud_provider
from app.providers.keys import ensure_management_key
from app.scoping import current_org_id, get_for_org_or_404
from app.security import SERVER_CHECK_PER_USER, current_user_key

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
@login_required
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
@login_required
def new_hetzner():
    org = _org()
    form = HetznerProviderForm()
    if form.validate_on_submit():
        if _name_taken(Provider, form.name.data, org.id):
            form.name.errors.append("A provider with this name exists already.")
        else:
            provider = Provider(organisation_id=org.id, name=form.name.data,
                                type=ProviderType.HETZNER, api_token=form.token.data.strip(),
                                config={})
            try:
                cloud_provider(provider).verify()
            except ProviderError as exc:
                form.token.errors.append(str(exc))
            else:
                db.session.add(provider)
                db.session.commit()
                flash(f"Hetzner project connected as {provider.name}.", "success")
                return hx_redirect(url_for("servers.create_hetzner", provider_id=provider.id))
    template = "servers/_hetzner_provider_form.html" if request.htmx else "servers/new_hetzner.html"
    return render_template(template, form=form)


def _hetzner_choices(provider: Provider, form: HetznerServerForm) -> str | None:
    """Fill the form's choices from the API; return an error message or None."""
    try:
        api = cloud_provider(provider)
        form.server_type.choices = [(c.name, f"{c.label} — {c.detail}") for c in api.server_types()]
        form.image.choices = [(c.name, c.label) for c in api.images()]
        form.location.choices = [(c.name, c.label) for c in api.locations()]
        form.network.choices = [("", "No private network")] + [
            (c.name, f"{c.label} ({c.detail})") for c in api.networks()]
    except ProviderError as exc:
        return str(exc)
    return None


@bp.route("/providers/<int:provider_id>/servers/new", methods=["GET", "POST"])
@login_required
def create_hetzner(provider_id: int):
    provider = get_for_org_or_404(Provider, provider_id)
    if provider.type != ProviderType.HETZNER:
        abort(404)
    org = _org()
    form = HetznerServerForm()
    api_error = _hetzner_choices(provider, form)
    if api_error is None and form.validate_on_submit():
        if _name_taken(Server, form.name.data, org.id):
            form.name.errors.append("A server with this name exists already.")
        else:
            public_key = ensure_management_key(org)
            try:
                api = cloud_provider(provider)
                key_id = api.ensure_ssh_key(public_key, f"keystone-{org.slug}"[:60])
                created = api.create_server(
                    name=form.name.data, server_type=form.server_type.data,
                    image=form.image.data, location=form.location.data, ssh_key_id=key_id,
                    network_id=form.network.data or None,
                    labels={"keystone-organisation": org.slug[:60]})
            except ProviderError as exc:
                api_error = str(exc)
            else:
                server = Server(organisation_id=org.id, provider_id=provider.id,
                                name=form.name.data, status=ServerStatus.CREATING,
                                provider_server_id=created.provider_server_id,
                                public_ip=created.public_ip, private_ip=created.private_ip,
                                facts={"hetzner": {"server_type": form.server_type.data,
                                                   "image": form.image.data,
                                                   "location": form.location.data,
                                                   "network_id": form.network.data or None}})
                db.session.add(server)
                db.session.commit()
                op = _provision_or_flash(server, f"Create and provision {server.name}")
                if op is not None:
                    flash(f"Hetzner is creating {server.name}; Keystone provisions it as soon "
                          f"as it answers over SSH.", "success")
                return hx_redirect(url_for("servers.show", server_id=server.id))
    template = "servers/_hetzner_server_form.html" if request.htmx else "servers/create_hetzner.html"
    return render_template(template, form=form, provider=provider, api_error=api_error)


@bp.route("/providers/<int:provider_id>/delete", methods=["POST"])
@login_required
def delete_provider(provider_id: int):
    provider = get_for_org_or_404(Provider, provider_id)
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    if provider.servers:
        flash(f"{provider.name} still has servers; delete them first.", "error")
    else:
        db.session.delete(provider)
        db.session.commit()
        flash(f"Provider {provider.name} removed (its token is deleted from Keystone).", "success")
    return redirect(url_for("servers.index"))


# --------------------------------------------------------------------------- custom servers

@bp.route("/custom/new", methods=["GET", "POST"])
@login_required
@limiter.limit(SERVER_CHECK_PER_USER, methods=["POST"], key_func=current_user_key)
def new_custom():
    from app.providers.custom import check_private_key, probe_host_key
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
                try:
                    probe = probe_host_key(form.host.data, form.port.data)
                except ProviderError as exc:
                    form.host.errors.append(str(exc))
                else:
                    server = Server(organisation_id=org.id, name=form.name.data,
                                    status=ServerStatus.NEW, public_ip=form.host.data,
                                    ssh_port=form.port.data, bootstrap_user=form.user.data,
                                    bootstrap_private_key=form.private_key.data.strip() + "\n",
                                    facts={"presented_host_key": probe.fingerprint})
                    db.session.add(server)
                    db.session.commit()
                    return hx_redirect(url_for("servers.confirm_host_key", server_id=server.id))
    if request.method == "POST":
        # Never send a submitted private key back to the browser (as the variables form
        # does with secret values): the user pastes it again.
        form.private_key.data = ""
        form.private_key.raw_data = []
    template = "servers/_custom_form.html" if request.htmx else "servers/new_custom.html"
    return render_template(template, form=form, public_key=public_key, org=org)


@bp.route("/<int:server_id>/host-key", methods=["GET", "POST"])
@login_required
def confirm_host_key(server_id: int):
    """Confirm (first time) or re-pin (explicit, recorded) the server's host key."""
    from app.providers.custom import probe_host_key
    server = get_for_org_or_404(Server, server_id)
    form = ConfirmHostKeyForm()
    error = None
    try:
        presented = probe_host_key(server.public_ip or server.private_ip, server.ssh_port).fingerprint
    except ProviderError as exc:
        presented, error = None, str(exc)
    if presented and form.validate_on_submit():
        if form.fingerprint.data != presented:
            error = ("The server now presents a different key than the one you confirmed. "
                     "Compare the fingerprint below again.")
        else:
            previous = server.host_key_fingerprint
            server.host_key_fingerprint = presented
            facts = dict(server.facts or {})
            facts.pop("presented_host_key", None)
            facts["host_key_pinned"] = "confirmed by user" if previous is None else "re-pinned by user"
            server.facts = facts
            if previous is not None and previous != presented:
                db.session.add(AuditEvent(organisation_id=server.organisation_id,
                                          user_id=current_user.id, action="server.host_key_repinned",
                                          target_type="server", target_id=server.id,
                                          detail={"previous": previous, "new": presented}))
            elif previous is None:
                db.session.add(AuditEvent(organisation_id=server.organisation_id,
                                          user_id=current_user.id, action="server.host_key_confirmed",
                                          target_type="server", target_id=server.id,
                                          detail={"fingerprint": presented}))
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
    if presented:
        form.fingerprint.data = presented
    return render_template("servers/host_key.html", server=server, form=form,
                           presented=presented, error=error)


# --------------------------------------------------------------------------- a server

@bp.route("/<int:server_id>")
@login_required
def show(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    history = _provisioning_history(server)
    latest = history[0] if history else None
    replay = []
    if latest is not None and latest.is_terminal:
        from app.operations import sse
        replay = sse.replay_lines(latest)
    return render_template("servers/show.html", server=server, history=history, latest=latest,
                           replay=replay, action_form=ActionForm(), ProviderType=ProviderType)


@bp.route("/<int:server_id>/status")
@login_required
def status(server_id: int):
    server = get_for_org_or_404(Server, server_id)
    return render_template("servers/_status.html", server=server)


@bp.route("/<int:server_id>/provision", methods=["POST"])
@login_required
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
@login_required
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
    return redirect(url_for("servers.show", server_id=started[0][0].id))


@bp.route("/<int:server_id>/delete", methods=["POST"])
@login_required
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
        try:
            cloud_provider(server.provider).delete_server(server.provider_server_id)
        except ProviderError as exc:
            flash(str(exc), "error")
            return redirect(url_for("servers.show", server_id=server.id))
    name, at_hetzner = server.name, bool(server.provider_server_id)
    db.session.delete(server)
    db.session.commit()
    flash(f"Server {name} removed from Keystone"
          + (" and deleted at Hetzner." if at_hetzner else "."), "success")
    return redirect(url_for("servers.index"))
