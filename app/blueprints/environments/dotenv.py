"""The ".env in bulk" component: paste, preview the diff (secrets masked), save; export.

The pasted text never comes back from the server: "Preview" swaps only the diff
(``#dotenv-diff``) and "Save" re-posts the text from the browser with the fingerprint
of the previewed paste, so what is saved is what was previewed. Exporting with secrets
revealed is a POST, recorded as an audit event like revealing one variable.
"""
from __future__ import annotations

from flask import (Response, current_app, flash, redirect, render_template, request,
                   url_for)
from wtforms import BooleanField, HiddenField, TextAreaField
from wtforms.validators import Length

from app import attachments as att
from app import audit
from app import dotenv_bulk as bulk
from app.blueprints.environments.blueprint import bp
from app.policy import requires
from app.blueprints.environments.page import load_environment, render_page
from app.deploys.values import ALWAYS_SECRET_KEYS
from app.extensions import db
from app.forms import ActionForm, KeystoneForm
from app.models import Environment
from app.models.enums import VariableSource
from app.scoping import current_org_id


class DotenvForm(KeystoneForm):
    text = TextAreaField(".env contents", validators=[Length(max=bulk.MAX_PASTE)])
    replace = BooleanField("Also delete my variables that the file does not name")
    fingerprint = HiddenField()


def dotenv_context(env: Environment, form: DotenvForm | None = None, **kw) -> dict:
    ctx = {"env": env, "form": form or DotenvForm(formdata=None, prefix="dotenv"),
           "action_form": ActionForm(formdata=None), "diff": None, "message": None,
           "error": None}
    ctx.update(kw)
    return ctx


def _user_rows(env: Environment):
    return {v.key: v for v in env.variables if v.source == VariableSource.USER}


def secret_keys(env: Environment) -> set[str]:
    return ({v.key for v in env.variables if v.is_secret or att.is_managed_secret(v.key)}
            | set(ALWAYS_SECRET_KEYS))


def _diff(env: Environment, form: DotenvForm):
    rows = _user_rows(env)
    current = {k: v.value for k, v in rows.items()}
    known = att.effective_environment(env)
    parsed = bulk.parse(form.text.data or "", known)
    locked = {v.key for v in env.variables
              if v.source == VariableSource.MANAGED_ATTACHMENT and not v.overridable}
    return bulk.diff(current, secret_keys(env), parsed, replace=bool(form.replace.data),
                     locked=locked)


def _fingerprint(form: DotenvForm) -> str:
    return bulk.fingerprint(current_app.config["SECRET_KEY"], form.text.data or "",
                            bool(form.replace.data))


def _diff_fragment(env, form, **kw):
    """The diff (HTMX), or the whole page with it when the form was posted without HTMX."""
    ctx = dotenv_context(env, form, **kw)
    if not request.htmx:
        return render_page(env.id, dotenv=ctx)[0]
    return render_template("environments/_dotenv_diff.html", c=ctx)


@bp.route("/<int:environment_id>/dotenv/preview", methods=["POST"])
@requires("variables.edit")
def dotenv_preview(environment_id):
    env = load_environment(environment_id)
    form = DotenvForm(prefix="dotenv")
    if not form.validate_on_submit():
        return _diff_fragment(env, form, error="The paste is too long or holds control "
                                               "characters (NUL, escape): nothing was read."), 200
    try:
        d = _diff(env, form)
    except bulk.DotenvError as exc:
        return _diff_fragment(env, form, error=str(exc)), 200
    form.fingerprint.data = _fingerprint(form)
    return _diff_fragment(env, form, diff=d), 200


@bp.route("/<int:environment_id>/dotenv", methods=["POST"])
@requires("variables.edit")
def dotenv_save(environment_id):
    env = load_environment(environment_id)
    form = DotenvForm(prefix="dotenv")
    if not form.validate_on_submit():
        return _diff_fragment(env, form, error="The form expired or the paste is invalid: "
                                               "nothing was saved."), 200
    if form.fingerprint.data != _fingerprint(form):
        return _diff_fragment(env, form, error="The text changed since the preview: preview "
                                               "it again, then save."), 200
    d = _diff(env, form)
    if d.errors or d.blocked:
        form.fingerprint.data = _fingerprint(form)
        return _diff_fragment(env, form, diff=d, error="Fix the lines listed below first: "
                                                       "nothing was saved."), 200
    rows = _user_rows(env)
    keep_secret = secret_keys(env)
    try:
        for c in d.changes:
            if c.kind in ("added", "changed"):
                was = rows.get(c.key)
                secret = (was.is_secret if was is not None else False) or \
                    bulk.looks_secret(c.key) or c.key in keep_secret
                att.set_user_variable(env, c.key, c.new, is_secret=secret)
            elif c.kind == "removed":
                att.delete_user_variable(env, c.key)
    except (att.AttachmentError, ValueError) as exc:
        db.session.rollback()
        return _diff_fragment(env, form, diff=d, error=f"Nothing was saved: {exc}"), 200
    counts = {k: len(d.of(k)) for k in ("added", "changed", "removed")}
    audit.record("variables.bulk_import", env,
                 {**counts, "keys": [c.key for c in d.changes if c.kind != "unchanged"]},
                 target_type="environment", organisation_id=current_org_id())
    db.session.commit()
    message = (f"Saved: {counts['added']} added, {counts['changed']} changed, "
               f"{counts['removed']} removed. It takes effect at the next deploy.")
    if not request.htmx:
        flash(message, "success")
        return redirect(url_for("environments.show", environment_id=env.id) + "#variables")
    resp = Response(_diff_fragment(env, DotenvForm(formdata=None, prefix="dotenv"),
                                   message=message))
    resp.headers["HX-Trigger"] = "variables-changed"
    return resp


def _export(env: Environment, reveal: bool) -> Response:
    values = att.effective_environment(env)
    text = bulk.render(values, secret_keys(env), reveal=reveal)
    name = f"{env.application.name}-{env.name}{'' if reveal else '.masked'}.env"
    return Response(text, mimetype="text/plain", headers={
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "no-store"})


@bp.route("/<int:environment_id>/dotenv/export")
@requires("read")
def dotenv_export(environment_id):
    """The effective variables as a ``.env``; secret values are ``***``."""
    return _export(load_environment(environment_id), reveal=False)


@bp.route("/<int:environment_id>/dotenv/export", methods=["POST"])
@requires("secrets.reveal")
def dotenv_export_revealed(environment_id):
    """The same with secret values: a POST (CSRF), recorded like a reveal."""
    env = load_environment(environment_id)
    if not ActionForm().validate_on_submit():
        return Response("The form expired: reload the page.", status=400, mimetype="text/plain")
    audit.record("variables.export_reveal", env,
                 {"keys": sorted(k for k in secret_keys(env)
                                 if k in att.effective_environment(env))},
                 target_type="environment", organisation_id=current_org_id())
    db.session.commit()
    return _export(env, reveal=True)
