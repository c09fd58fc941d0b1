"""The variables component's actions: add, edit and delete the user's variables (a
secret value is never sent back to the browser). Each answers with the component
(HTMX) or the whole page; every change goes through :mod:`app.attachments`.
"""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for


from app import attachments as att
from app.blueprints.environments.blueprint import bp
from app.policy import requires
from app.blueprints.environments.components import (EditVariableForm, VariableForm,
                                                    variables_context)
from app.blueprints.environments.page import load_environment, render_page
from app.extensions import db
from app.forms import ActionForm
from app.models import Environment, EnvironmentVariable
from app.models.enums import VariableSource
from app.scoping import get_child_or_404


def _variables_done(env: Environment, form: VariableForm | None = None, status: int = 200,
                    **kw):
    env = load_environment(env.id)
    ctx = variables_context(env, form, **kw)
    if request.htmx:
        return render_template("environments/_variables.html", c=ctx), 200  # htmx swaps 2xx only
    if status != 200:
        return render_page(env.id, variables=ctx, status=status)
    flash(kw.get("var_message") or "Saved.", "success")
    return redirect(url_for("environments.show", environment_id=env.id) + "#variables")


def _blank_value_on_error(form: VariableForm) -> None:
    # A submitted value is never sent back with an error (it may be a secret typed without
    # ticking "secret"); the error names the key only.
    form.value.data = ""
    if form.errors:
        form.value.errors = list(form.value.errors) + ["Enter the value again."]


@bp.route("/<int:environment_id>/variables", methods=["POST"])
@requires("variables.edit")
def set_variable(environment_id):
    env = load_environment(environment_id)
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
    env = load_environment(environment_id)
    var = get_child_or_404(env, EnvironmentVariable, variable_id, "environment_id")
    var = next(v for v in env.variables if v.id == var.id)
    return env, var


@bp.route("/<int:environment_id>/variables/<int:variable_id>", methods=["POST"])
@requires("variables.edit")
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


@bp.route("/<int:environment_id>/variables/<int:variable_id>/delete",
          methods=["POST"])
@requires("variables.edit")
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
