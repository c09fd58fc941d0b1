"""Settings, API tokens: create (the token is shown once) and revoke personal access
tokens (app.api.tokens). A user sees and revokes only their own tokens."""
from __future__ import annotations

from flask import Blueprint, abort
from flask_login import current_user
from app.blueprints.helpers import NO_STORE, component_or_page
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.api import tokens as tk
from app.extensions import db
from app.forms import KeystoneForm
from app.models import ApiToken
from app.models.base import utcnow
from app.scoping import parse_id
from app.policy import requires

bp = Blueprint("tokens", __name__, url_prefix="/settings/tokens")

EXPIRY_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year"),
                  ("never", "Never")]


class TokenForm(KeystoneForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    scope_read = BooleanField("read: applications, environments, operations, servers, "
                              "services, logs", default=True)
    scope_deploy = BooleanField("deploy: start deploys and rollbacks (includes read)")
    scope_admin = BooleanField("admin: reveal secret variable values (includes deploy)")
    expires = SelectField("Expires after", choices=EXPIRY_CHOICES, default="90")


class RevokeForm(KeystoneForm):
    pass


def _context(form: TokenForm | None = None, **kw) -> dict:
    rows = tk.tokens_of(current_user)
    now = utcnow()
    ctx = {"form": form or TokenForm(formdata=None), "tokens": rows, "now": now,
           "usable": {t.id: tk.is_usable(t, now) for t in rows},
           "allowed": tk.allowed_scopes(current_user), "revoke_form": RevokeForm(formdata=None),
           "new_token": None, "new_row": None, "message": None, "error": None}
    ctx.update(kw)
    return ctx


def _answer(status: int = 200, **kw):
    # A page that shows a new token is never stored by a browser or proxy.
    return component_or_page("settings/_tokens.html", "settings/tokens.html", _context(**kw),
                             status, NO_STORE)


@bp.route("/")
@requires("read")
def index():
    return _answer()


@bp.route("/", methods=["POST"])
@requires("read")
def create():
    form = TokenForm()
    if not form.validate_on_submit():
        return _answer(422, form=form, error="The token was not created: see the fields.")
    scopes = [s for s in tk.SCOPES if getattr(form, f"scope_{s}").data]
    days = None if form.expires.data == "never" else int(form.expires.data)
    try:
        row, token = tk.create_token(current_user, form.name.data, scopes, days)
    except tk.TokenError as exc:
        db.session.rollback()
        return _answer(422, form=form, error=str(exc))
    # The token itself goes into this one response and nowhere else (no flash, no log).
    return _answer(201, new_token=token, new_row=row,
                   message=f"Token {row.name!r} created. Copy it now: it is not shown again.")


@bp.route("/<int:token_id>/revoke", methods=["POST"])
@requires("read")
def revoke(token_id):
    row = db.session.get(ApiToken, parse_id(token_id) or 0)
    if row is None or row.user_id != current_user.id:
        abort(404)
    if not RevokeForm().validate_on_submit():
        abort(400)
    tk.revoke(row)
    return _answer(message=f"Token {row.name!r} revoked: it no longer works.")
