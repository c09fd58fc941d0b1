"""The organisation's dashboard: environments, servers, recent operations."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, render_template
from flask_login import current_user
from sqlalchemy.orm import selectinload

from app.accounts import signup_open
from app.extensions import db
from app.models import Application, Environment, EnvironmentAttachment, Operation, Server
from app.onboarding import environment_url
from app.scoping import current_membership, current_org_id
from app.policy import requires

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@requires("public")
def index():
    from flask import redirect, url_for
    if not current_user.is_authenticated:
        return redirect(url_for("auth.signup" if signup_open() else "auth.login"))
    if current_membership() is None:  # removed from every organisation: start a new one
        return redirect(url_for("members.new_organisation"))
    return _dashboard()


@requires("read")
def _dashboard():
    org_id = current_org_id()
    environments = db.session.execute(
        sa.select(Environment).join(Application)
        .where(Application.organisation_id == org_id)
        .options(selectinload(Environment.application),
                 selectinload(Environment.attachments)
                 .selectinload(EnvironmentAttachment.service_slice))
        .order_by(Application.name, Environment.name)).scalars().all()
    servers = db.session.execute(
        sa.select(Server).where(Server.organisation_id == org_id).order_by(Server.name)
    ).scalars().all()
    operations = db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == org_id,
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id.desc()).limit(10)).scalars().all()
    from app import metrics
    latest = metrics.latest(db.session, [s.id for s in servers])
    server_warnings = {sid: metrics.warnings_for(row) for sid, row in latest.items()}
    from app.backups.status import alerts as backup_alerts
    return render_template("dashboard/index.html", environments=environments,
                           server_warnings={k: v for k, v in server_warnings.items() if v},
                           urls={env.id: environment_url(env) for env in environments},
                           servers=servers, operations=operations,
                           backup_alerts=backup_alerts(org_id))
