"""Settings, notifications: an organisation's channels, their events, delivery logs and a
"send test" button (app.notifications). Secrets are write-only: pages show a masked
destination, and a generic webhook's signing secret once, when it is made."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort
from flask_login import current_user
from app.blueprints.helpers import NO_STORE, component_or_page
from wtforms import IntegerField, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.extensions import db
from app.forms import ActionForm, KeystoneForm
from app.models import NotificationChannel
from app.notifications import DEFAULT_EVENTS, EVENTS, KINDS
from app.notifications import channels as ch
from app.scoping import parse_id
from app.policy import requires

bp = Blueprint("notifications", __name__, url_prefix="/settings/notifications")


class ChannelForm(KeystoneForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    kind = SelectField("Type", choices=list(KINDS.items()), default="slack")
    events = SelectMultipleField("Events", choices=list(EVENTS.items()), default=DEFAULT_EVENTS,
                                 widget=ListWidget(prefix_label=False),
                                 option_widget=CheckboxInput())
    url = StringField("Webhook URL", validators=[Optional(), Length(max=500)])
    host = StringField("SMTP host", validators=[Optional(), Length(max=253)])
    port = IntegerField("SMTP port", default=587,
                        validators=[Optional(), NumberRange(min=1, max=65535)])
    security = SelectField("SMTP security", choices=[("starttls", "STARTTLS"),
                                                     ("tls", "TLS"), ("none", "None")],
                           default="starttls")
    username = StringField("SMTP user name", validators=[Optional(), Length(max=200)])
    password = PasswordField("SMTP password", validators=[Optional(), Length(max=500)])
    from_address = StringField("From", validators=[Optional(), Length(max=254)])
    to_addresses = StringField("To (comma-separated)", validators=[Optional(), Length(max=1000)])


def _channels():
    return db.session.execute(sa.select(NotificationChannel).where(
        NotificationChannel.organisation_id == current_user.organisation.id)
        .order_by(NotificationChannel.id)).scalars().all()


def _channel_or_404(channel_id) -> NotificationChannel:
    number = parse_id(channel_id)
    row = db.session.get(NotificationChannel, number) if number is not None else None
    if row is None or row.organisation_id != current_user.organisation.id:
        abort(404)
    return row


def _answer(status: int = 200, form: ChannelForm | None = None, **kw):
    ctx = {"form": form or ChannelForm(formdata=None), "channels": _channels(),
           "action_form": ActionForm(formdata=None), "describe": ch.describe,
           "events": EVENTS, "kinds": KINDS, "message": None, "error": None,
           "signing_secret": "", "new_channel": None}
    ctx.update(kw)
    return component_or_page("settings/_notifications.html", "settings/notifications.html", ctx,
                             status, NO_STORE)


@bp.route("/")
@requires("read")
def index():
    return _answer()


@bp.route("/", methods=["POST"])
@requires("notifications.manage")
def create():
    form = ChannelForm()
    if not form.validate_on_submit():
        return _answer(422, form=form, error="The channel was not added: see the fields.")
    try:
        channel, shown = ch.create_channel(
            current_user.organisation.id, form.name.data, form.kind.data, form.events.data or [],
            url=(form.url.data or "").strip(), host=(form.host.data or "").strip(),
            port=form.port.data or 587, security=form.security.data,
            username=(form.username.data or "").strip(), password=form.password.data or "",
            from_address=(form.from_address.data or "").strip(),
            to_addresses=form.to_addresses.data or "")
    except ch.ChannelError as exc:
        db.session.rollback()
        form.password.data = ""
        return _answer(422, form=form, error=str(exc))
    msg = f"Channel {channel.name!r} added."
    if shown:
        msg += " Copy its signing secret now: it is not shown again."
    return _answer(201, message=msg, signing_secret=shown, new_channel=channel)


ACTIONS = ("test", "toggle", "delete")


# The id is parsed in the view (not by an int converter), so a request without a CSRF
# token is refused as such (400) before anything looks the channel up.
@bp.route("/<channel_id>/test", methods=["POST"], defaults={"action": "test"})
@bp.route("/<channel_id>/toggle", methods=["POST"], defaults={"action": "toggle"})
@bp.route("/<channel_id>/delete", methods=["POST"], defaults={"action": "delete"})
@requires("notifications.manage")
def act(channel_id, action: str):
    channel = _channel_or_404(channel_id)
    form = ActionForm()
    if not form.validate_on_submit():
        return _answer(400, error="The form expired: reload the page.")
    if action == "test":
        ch.send_test(channel)
        return _answer(message=f"A test notification is on its way to {channel.name!r}: "
                               "its delivery log shows the outcome.")
    if action == "toggle":
        channel.enabled = not channel.enabled
        db.session.commit()
        return _answer(message=f"{channel.name!r} is {'on' if channel.enabled else 'off'}.")
    if action == "delete":
        name = channel.name
        db.session.delete(channel)
        db.session.commit()
        return _answer(message=f"Channel {name!r} deleted.")
    abort(404)
