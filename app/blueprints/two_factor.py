"""Account, two-factor sign-in: enrol (QR code, confirm with a code, recovery codes shown
once), make new recovery codes, turn it off; and the organisation's "require two-factor
for all members" setting.

Policy (app.policy): two_factor.index, .confirm, .disable, .recovery_codes: ``signed_in``
(their own account only; no object id in any URL); two_factor.organisation_setting:
``security.manage`` (owner, admin).

While the organisation requires two-factor and the user has not enrolled,
:func:`enforce_requirement` (run before every request) sends them here and lets them do
nothing else but sign out.
"""
from __future__ import annotations


from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from app.blueprints.helpers import hx_redirect
from flask_login import current_user
from wtforms import BooleanField

from app import audit, security
from app import two_factor as tf
from app.policy import requires
from app.extensions import db, limiter
from app.forms import KeystoneForm, TwoFactorCodeForm

bp = Blueprint("two_factor", __name__)

# What a member who must enrol can still reach.
ALLOWED_WHILE_REQUIRED = frozenset({"two_factor.index", "two_factor.confirm", "auth.logout",
                                    "static"})


class RequireTwoFactorForm(KeystoneForm):
    require = BooleanField("Require two-factor sign-in for all members")


def _no_store(html, status=200):
    # Pages that show the secret or recovery codes are never stored by a browser or proxy.
    return html, status, {"Cache-Control": "no-store"}


def _enrol_page(form=None, status=200):
    secret = tf.start_enrolment(current_user)
    db.session.commit()
    uri = tf.provisioning_uri(current_user, secret)
    return _no_store(render_template(
        "account/two_factor_enrol.html", form=form or TwoFactorCodeForm(formdata=None),
        secret=secret, qr=tf.qr_svg(uri), required=tf.required_for(current_user)), status)


def _status_page(disable_form=None, codes_form=None, status=200):
    return _no_store(render_template(
        "account/two_factor.html", left=tf.recovery_codes_left(current_user),
        disable_form=disable_form or TwoFactorCodeForm(formdata=None, prefix="disable"),
        codes_form=codes_form or TwoFactorCodeForm(formdata=None, prefix="codes"),
        org_requires=tf.required_for_org(current_user)), status)


@bp.route("/account/two-factor")
@requires("signed_in")
def index():  # policy: any signed-in user
    if current_user.two_factor_enabled:
        return _status_page()
    return _enrol_page()


@bp.route("/account/two-factor/confirm", methods=["POST"])
@requires("signed_in")
@limiter.limit(security.TWO_FACTOR_PER_ACCOUNT, key_func=security.two_factor_user_key,
               deduct_when=security.failed_code)
def confirm():  # policy: any signed-in user
    if current_user.two_factor_enabled:
        return redirect(url_for("two_factor.index"))
    form = TwoFactorCodeForm()
    if form.validate_on_submit():
        try:
            codes = tf.confirm_enrolment(current_user, form.code.data)
        except tf.TwoFactorError as exc:
            form.code.errors.append(str(exc))
        else:
            audit.record("two_factor.enrolled", current_user, {}, target_type="user")
            db.session.commit()
            return _no_store(render_template("account/recovery_codes.html", codes=codes,
                                             enrolled=True))
    return _enrol_page(form, status=422)


@bp.route("/account/two-factor/recovery-codes", methods=["POST"])
@requires("signed_in")
@limiter.limit(security.TWO_FACTOR_PER_ACCOUNT, key_func=security.two_factor_user_key,
               deduct_when=security.failed_code)
def recovery_codes():  # policy: any signed-in user
    if not current_user.two_factor_enabled:
        return redirect(url_for("two_factor.index"))
    form = TwoFactorCodeForm(prefix="codes")
    if form.validate_on_submit():
        if tf.check_totp(current_user, form.code.data):
            codes = tf.replace_recovery_codes(current_user)
            audit.record("two_factor.recovery_regenerated", current_user, {},
                         target_type="user")
            db.session.commit()
            return _no_store(render_template("account/recovery_codes.html", codes=codes,
                                             enrolled=False))
        form.code.errors.append("That code is not right (or was used already).")
    return _status_page(codes_form=form, status=422)


@bp.route("/account/two-factor/disable", methods=["POST"])
@requires("signed_in")
@limiter.limit(security.TWO_FACTOR_PER_ACCOUNT, key_func=security.two_factor_user_key,
               deduct_when=security.failed_code)
def disable():  # policy: any signed-in user
    if not current_user.two_factor_enabled:
        return redirect(url_for("two_factor.index"))
    form = TwoFactorCodeForm(prefix="disable")
    if form.validate_on_submit():
        if tf.required_for_org(current_user):
            form.code.errors.append("Your organisation requires two-factor sign-in: it "
                                    "cannot be turned off.")
        else:
            method = tf.verify(current_user, form.code.data)
            if method is not None:
                tf.disable(current_user)
                audit.record("two_factor.disabled", current_user, {"confirmed_with": method},
                             target_type="user")
                db.session.commit()
                flash("Two-factor sign-in is off.", "info")
                return redirect(url_for("two_factor.index"))
            form.code.errors.append("That code is not right (or was used already).")
    return _status_page(disable_form=form, status=422)


@bp.route("/settings/security", methods=["GET", "POST"])
@requires("security.manage")
def organisation_setting():  # policy: owner/admin
    org = current_user.organisation
    form = RequireTwoFactorForm(data={"require": org.require_two_factor}
                                if request.method == "GET" else None)
    if request.method == "POST":
        if not form.validate_on_submit():
            abort(400)
        wanted = bool(form.require.data)
        if wanted != org.require_two_factor:
            org.require_two_factor = wanted
            audit.record("organisation.require_two_factor", org, {"required": wanted},
                         target_type="organisation", organisation_id=org.id)
            db.session.commit()
            flash("Two-factor sign-in is now required for every member." if wanted else
                  "Two-factor sign-in is no longer required.", "success")
        return redirect(url_for("two_factor.organisation_setting"))
    return render_template("settings/security.html", form=form, org=org)


@bp.before_app_request
def enforce_requirement():
    """A member who must enrol reaches the enrolment page, sign-out and static files only."""
    if request.endpoint in ALLOWED_WHILE_REQUIRED or request.path.startswith("/api/"):
        return None  # the API answers for its tokens itself (app.api.core)
    if not current_user.is_authenticated or not tf.required_for(current_user):
        return None
    if not request.htmx:
        flash("Your organisation requires two-factor sign-in: set it up to continue.", "warning")
    return hx_redirect(url_for("two_factor.index"))
