"""Settings, Members: the organisation's members and invitations; accepting an invitation;
switching and creating organisations. Every change goes through app.members."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import defer
from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from app import members as mb
from app import security
from app.accounts import SignupError, new_user
from app.blueprints.helpers import hx_redirect
from app.extensions import db, limiter
from app.forms import ActionForm, KeystoneForm
from app.models import Invitation, Membership, Organisation, User
from app.models.enums import MembershipRole
from app.policy import can, current_role, requires
from app.scoping import (ORG_SESSION_KEY, current_membership, current_org_id,
                         forget_current_membership, get_for_org_or_404, parse_id,
                         switch_organisation)

bp = Blueprint("members", __name__)

ROLE_CHOICES = [(r.value, r.value) for r in MembershipRole]


class InviteForm(KeystoneForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="deployer")


class RoleForm(KeystoneForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class OrganisationForm(KeystoneForm):
    name = StringField("Organisation name", validators=[DataRequired(), Length(max=120)])


class SwitchForm(KeystoneForm):
    organisation_id = HiddenField(validators=[DataRequired()])


class JoinSignupForm(KeystoneForm):
    name = StringField("Your name", validators=[Length(max=120)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=10, max=200, message="Use at least 10 characters.")])
    confirm = PasswordField("Repeat password", validators=[
        DataRequired(), EqualTo("password", message="The passwords differ.")])


# --------------------------------------------------------------------------- members page

def _context(form: InviteForm | None = None, **kw) -> dict:
    org_id = current_org_id()
    ctx = {"form": form or InviteForm(formdata=None), "members": mb.members_of(org_id),
           "invitations": mb.open_invitations(org_id), "action_form": ActionForm(formdata=None),
           "role_form": RoleForm(formdata=None), "roles": [r.value for r in MembershipRole],
           "me": current_membership(), "manage": can("members.manage"),
           "has_channel": mb.email_channel(org_id) is not None,
           "new_link": None, "message": None, "error": None}
    ctx.update(kw)
    return ctx


def _answer(status: int = 200, **kw):
    ctx = _context(**kw)
    if request.htmx:
        html, status = render_template("settings/_members.html", c=ctx), 200
    else:
        html = render_template("settings/members.html", c=ctx)
    # A page that may show an invitation link is never stored by a browser or proxy.
    return html, status, {"Cache-Control": "no-store"}


@bp.route("/settings/members/")
@requires("read")
def index():
    return _answer()


@bp.route("/settings/members/invite", methods=["POST"])
@requires("members.manage")
def invite():
    form = InviteForm()
    if not form.validate_on_submit():
        return _answer(422, form=form, error="The invitation was not sent: see the fields.")
    try:
        row, link, mailed = mb.invite(
            current_org_id(), current_user, current_role(), form.email.data, form.role.data,
            lambda token: url_for("members.accept", token=token, _external=True))
    except mb.MemberError as exc:
        db.session.rollback()
        return _answer(422, form=form, error=str(exc))
    if mailed:
        return _answer(201, message=f"Invitation sent to {row.email} ({row.role.value}).")
    # No email channel: the link goes into this one response, nowhere else.
    return _answer(201, new_link=link, message=f"Invitation for {row.email} created. No email "
                   "channel is set up: copy the link and send it yourself.")


@bp.route("/settings/members/invitations/<int:invitation_id>/revoke", methods=["POST"])
@requires("members.manage")
def revoke(invitation_id):
    row = get_for_org_or_404(Invitation, invitation_id)
    if not ActionForm().validate_on_submit():
        return _answer(400, error="The form expired: reload the page.")
    mb.revoke_invitation(row, current_user)
    return _answer(message=f"Invitation for {row.email} revoked.")


@bp.route("/settings/members/<int:membership_id>/role", methods=["POST"])
@requires("members.manage")
def change_role(membership_id):
    membership = get_for_org_or_404(Membership, membership_id)
    form = RoleForm()
    if not form.validate_on_submit():
        return _answer(400, error="Choose a role from the list.")
    try:
        mb.change_role(membership, form.role.data, current_user, current_role())
    except mb.MemberError as exc:
        db.session.rollback()
        return _answer(422, error=str(exc))
    return _answer(message=f"{membership.user.email} is now {membership.role.value}.")


@bp.route("/settings/members/<int:membership_id>/remove", methods=["POST"])
@requires("members.manage")
def remove(membership_id):
    membership = get_for_org_or_404(Membership, membership_id)
    if not ActionForm().validate_on_submit():
        return _answer(400, error="The form expired: reload the page.")
    email, leaving = membership.user.email, membership.user_id == current_user.id
    try:
        mb.remove_member(membership, current_user, current_role())
    except mb.MemberError as exc:
        db.session.rollback()
        return _answer(422, error=str(exc))
    if leaving:
        return hx_redirect(url_for("dashboard.index"))
    return _answer(message=f"{email} was removed.")


@bp.route("/settings/members/leave", methods=["POST"])
@requires("read")
def leave():
    """Any member may leave (except the last owner)."""
    if not ActionForm().validate_on_submit():
        abort(400)
    membership = current_membership()
    try:
        mb.remove_member(membership, current_user, membership.role)
    except mb.MemberError as exc:
        db.session.rollback()
        return _answer(422, error=str(exc))
    flash("You left the organisation.", "info")
    return hx_redirect(url_for("dashboard.index"))


# --------------------------------------------------------------------------- invitations

def _invitation_or_404(token: str) -> Invitation:
    row = mb.find_invitation(token)
    if row is None:
        abort(404)
    return row


@bp.route("/invitations/<token>", methods=["GET", "POST"])
@requires("public")
@limiter.limit(security.SIGNUP_PER_ADDRESS, methods=["POST"], key_func=security.client_address)
def accept(token: str):
    """Join with the invited role: signed in as the invited email, with one click; else sign
    in (an account exists) or sign up here -- also when open sign-up is off."""
    row = _invitation_or_404(token)
    signup_form = JoinSignupForm()
    account = db.session.execute(sa.select(User).where(User.email == row.email)).scalar_one_or_none()
    status = 200
    if current_user.is_authenticated:
        if current_user.email != row.email:
            return render_template("members/accept.html", row=row, wrong_user=True,
                                   form=ActionForm(formdata=None)), 403
        if request.method == "POST":
            if not ActionForm().validate_on_submit():
                abort(400)
            mb.accept_invitation(row, current_user._get_current_object())
            switch_organisation(row.organisation_id)
            flash(f"You joined {row.organisation.name} as {row.role.value}.", "success")
            return redirect(url_for("dashboard.index"))
        return render_template("members/accept.html", row=row, form=ActionForm(formdata=None))
    if account is None and request.method == "POST":
        if signup_form.validate_on_submit():
            try:
                user = new_user(email=row.email, password=signup_form.password.data,
                                name=signup_form.name.data or "")
                db.session.flush()
            except SignupError as exc:
                db.session.rollback()
                signup_form.password.errors.append(str(exc))
            else:
                mb.accept_invitation(row, user)
                login_user(user)
                switch_organisation(row.organisation_id)
                flash(f"Welcome to {row.organisation.name}.", "success")
                return redirect(url_for("dashboard.index"))
        status = 422
    return render_template("members/accept.html", row=row, account=account,
                           signup_form=signup_form), status


# --------------------------------------------------------------------------- organisations

class DeleteOrganisationForm(KeystoneForm):
    confirm = StringField("Type the organisation's name to delete it", validators=[
        DataRequired(), Length(max=120)])


def _org_page(status: int = 200, form=None, delete_form=None, error=None):
    org = current_user.organisation
    return render_template("members/organisation.html", org=org,
                           form=form or OrganisationForm(formdata=None, name=org.name),
                           delete_form=delete_form or DeleteOrganisationForm(formdata=None),
                           error=error), status


@bp.route("/settings/organisation")
@requires("read")
def organisation():
    return _org_page()


@bp.route("/settings/organisation", methods=["POST"])
@requires("org.manage")
def rename_organisation():
    form = OrganisationForm()
    if not form.validate_on_submit():
        return _org_page(422, form=form)
    try:
        mb.rename_organisation(current_user.organisation, form.name.data, current_user)
    except mb.MemberError as exc:
        db.session.rollback()
        return _org_page(422, form=form, error=str(exc))
    flash("Organisation renamed.", "success")
    return redirect(url_for("members.organisation"))


@bp.route("/settings/organisation/delete", methods=["POST"])
@requires("org.manage")
def delete_organisation():
    form = DeleteOrganisationForm()
    if not form.validate_on_submit():
        return _org_page(422, delete_form=form)
    org = current_user.organisation
    name = org.name
    try:
        mb.delete_organisation(org, current_user, form.confirm.data)
    except mb.MemberError as exc:
        db.session.rollback()
        return _org_page(422, delete_form=form, error=str(exc))
    session.pop(ORG_SESSION_KEY, None)
    forget_current_membership()
    flash(f"{name} was deleted.", "info")
    return redirect(url_for("dashboard.index"))


@bp.route("/organisations/switch", methods=["POST"])
@requires("signed_in")
def switch():
    form = SwitchForm()
    org_id = parse_id(form.organisation_id.data) if form.validate_on_submit() else None
    if org_id is None or not switch_organisation(org_id):
        abort(404)
    return hx_redirect(url_for("dashboard.index"))


@bp.route("/organisations/new", methods=["GET", "POST"])
@requires("signed_in")
def new_organisation():
    form = OrganisationForm()
    if form.validate_on_submit():
        try:
            org = mb.create_organisation(current_user._get_current_object(), form.name.data)
        except mb.MemberError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            switch_organisation(org.id)
            flash(f"{org.name} is ready. Let's connect its first server.", "success")
            return redirect(url_for("onboarding.start"))
    status = 422 if request.method == "POST" else 200
    return render_template("members/new_organisation.html", form=form), status


def my_organisations() -> list[Organisation]:
    """For the navigation's switcher."""
    if not current_user.is_authenticated:
        return []
    return db.session.execute(sa.select(Organisation).join(Membership).where(
        Membership.user_id == current_user.id)
        .options(defer(Organisation.management_key_private))  # not decrypted for a menu
        .order_by(Organisation.name)).scalars().all()
