"""Sign up, sign in (password, then a two-factor code when enrolled), sign out.

Policy: every view here is public (signed out), except logout (any signed-in user).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

import sqlalchemy as sa

from app import audit, security
from app import two_factor as tf
from app.accounts import SignupError, create_account, signup_open
from app.extensions import db, limiter
from app.forms import LoginForm, SignupForm, TwoFactorCodeForm
from app.models import User
from app.policy import requires

bp = Blueprint("auth", __name__)


_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


def _same_origin_path(location: str) -> bool:
    """True for a relative path on this site: "/x", never "//x", "/\\x" or "http://x"."""
    if not location.startswith("/") or location.startswith("//") or _UNSAFE_CHARS.search(location):
        return False
    parts = urlsplit(location)
    return not parts.scheme and not parts.netloc


def _safe_next(target: str | None):
    """A redirect to ``next`` when the Location header it yields stays on this site.

    Judged twice: on the decoded value (control characters, whitespace and
    backslashes are refused outright, since browsers strip or rewrite them) and
    on the Location header Werkzeug actually builds from it.
    """
    fallback = url_for("dashboard.index")
    if not target or len(target) > 2000 or not _same_origin_path(target):
        return redirect(fallback)
    response = redirect(target)
    if not _same_origin_path(response.headers.get("Location", "")):
        return redirect(fallback)
    return response


@bp.route("/signup", methods=["GET", "POST"])
@requires("public")
@limiter.limit(security.SIGNUP_PER_ADDRESS, methods=["POST"], key_func=security.client_address)
@limiter.limit(security.SIGNUP_PER_ACCOUNT, methods=["POST"], key_func=security.posted_account)
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    if not signup_open():
        return render_template("auth/signup_closed.html"), 403
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user = create_account(organisation=form.organisation.data, email=form.email.data,
                                  password=form.password.data, name=form.name.data or "")
        except SignupError as exc:
            db.session.rollback()
            form.email.errors.append(str(exc))
        else:
            login_user(user)
            flash("Welcome to Keystone. Let's connect your first server.", "success")
            return redirect(url_for("onboarding.start"))
    status = 422 if request.method == "POST" else 200
    return render_template("auth/signup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
@requires("public")
@limiter.limit(security.LOGIN_PER_ADDRESS, methods=["POST"], key_func=security.client_address,
               deduct_when=security.failed_form)
@limiter.limit(security.LOGIN_PER_ACCOUNT, methods=["POST"], key_func=security.posted_account,
               deduct_when=security.failed_form)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.execute(
            sa.select(User).where(User.email == form.email.data.strip().lower())).scalar_one_or_none()
        if user is None:
            # Not recorded: an unknown email belongs to no organisation's log.
            security.burn_password_check(form.password.data)
        elif user.check_password(form.password.data):
            if user.two_factor_enabled:
                tf.begin_pending(user, request.args.get("next"))
                return redirect(url_for("auth.two_factor"))
            return _complete_sign_in(user, request.args.get("next"), method="password")
        else:
            _record_failure(user, "auth.sign_in_failed", "password")
        form.password.errors.append("Email or password is wrong.")
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, signup_open=signup_open()), status


def _record_failure(user: User, action: str, reason: str) -> None:
    """A failed attempt on a known account, in each of its organisations' logs."""
    for m in user.memberships:
        audit.record(action, user, {"email": user.email, "reason": reason},
                     target_type="user", organisation_id=m.organisation_id, user=user)
    db.session.commit()


def _complete_sign_in(user: User, next_url: str | None, method: str):
    login_user(user)
    for m in user.memberships:
        audit.record("auth.sign_in", user, {"method": method}, target_type="user",
                     organisation_id=m.organisation_id, user=user)
    db.session.commit()
    if tf.required_for(user):
        return redirect(url_for("two_factor.index"))
    return _safe_next(next_url)


@bp.route("/login/two-factor", methods=["GET", "POST"])
@requires("public")  # the password was right; the code is what this page checks
@limiter.limit(security.LOGIN_PER_ADDRESS, methods=["POST"], key_func=security.client_address,
               deduct_when=security.failed_code)
@limiter.limit(security.TWO_FACTOR_PER_ACCOUNT, methods=["POST"],
               key_func=security.pending_account, deduct_when=security.failed_code)
def two_factor():
    """Sign-in's second step: a code from the authenticator app, or a recovery code."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    user, next_url = tf.pending_user()
    if user is None:
        flash("Sign in again: the sign-in expired.", "info")
        return redirect(url_for("auth.login"))
    form = TwoFactorCodeForm()
    if form.validate_on_submit():
        method = tf.verify(user, form.code.data)
        if method is not None:
            tf.end_pending()
            if method == "recovery":
                left = tf.recovery_codes_left(user)
                for m in user.memberships:
                    audit.record("two_factor.recovery_used", user, {"codes_left": left},
                                 target_type="user", organisation_id=m.organisation_id,
                                 user=user)
                flash(f"Signed in with a recovery code: {left} left. Make new ones under "
                      "Two-factor if you are running low.", "warning")
            return _complete_sign_in(user, next_url, method=f"password+{method}")
        _record_failure(user, "auth.two_factor_failed", "code")
        form.code.errors.append("That code is not right (or was used already).")
    status = 422 if request.method == "POST" else 200
    return render_template("auth/two_factor.html", form=form), status


@bp.route("/logout", methods=["POST"])
@requires("signed_in")
def logout():
    # Server-side: every session of this user ends, including cookies saved earlier.
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
