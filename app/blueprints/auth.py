"""Sign up, sign in, sign out."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

import sqlalchemy as sa

from app.accounts import SignupError, create_account
from app.extensions import db
from app.forms import LoginForm, SignupForm
from app.models import User

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("dashboard.index")


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
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
def login():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.execute(
            sa.select(User).where(User.email == form.email.data.strip().lower())).scalar_one_or_none()
        if user and user.check_password(form.password.data):
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        form.password.errors.append("Email or password is wrong.")
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
