"""The audit log page: who did what, when, from which address; filters, pages, CSV.

Policy (for the lead's policy decorator): audit_log.index and audit_log.export are for
the organisation's owner/admin (the policy's ``audit.read``).

Queries: the page runs a fixed number of statements whatever the number of rows (events
joined with their user's email; the members for the filter; one count). The CSV streams
the same select in batches.
"""
from __future__ import annotations

import csv
import datetime as dt
import io

import sqlalchemy as sa
from flask import Blueprint, Response, abort, render_template, request, stream_with_context

from app import audit
from app.policy import requires
from app.extensions import db
from app.models import AuditEvent, Membership, User
from app.scoping import current_org_id, parse_id

bp = Blueprint("audit_log", __name__, url_prefix="/audit")

PAGE_SIZE = 50
MAX_PAGE = 10_000
CSV_BATCH = 500
CSV_COLUMNS = ("time_utc", "action", "user_email", "user_id", "target_type", "target_id",
               "ip", "detail")


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filters(org_id: int) -> tuple[dict, list]:
    """The request's filters (as typed, for the form) and their WHERE clauses."""
    action = (request.args.get("action") or "").strip()[:64]
    user_id = parse_id(request.args.get("user") or "")
    since, until = _date(request.args.get("since")), _date(request.args.get("until"))
    where = [AuditEvent.organisation_id == org_id]
    if action:
        where.append(AuditEvent.action == action)
    if user_id is not None:
        where.append(AuditEvent.user_id == user_id)
    if since is not None:
        where.append(AuditEvent.created_at >= dt.datetime.combine(since, dt.time.min))
    if until is not None:  # the whole day named
        where.append(AuditEvent.created_at
                     < dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min))
    shown = {"action": action, "user": str(user_id) if user_id is not None else "",
             "since": since.isoformat() if since else "",
             "until": until.isoformat() if until else ""}
    return shown, where


def _select(where):
    return (sa.select(AuditEvent, User.email).outerjoin(User, User.id == AuditEvent.user_id)
            .where(*where).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()))


@bp.route("/")
@requires("audit.read")
def index():  # policy: owner/admin
    org_id = current_org_id()
    filters, where = _filters(org_id)
    page = parse_id(request.args.get("page", "1")) or 1
    if page > MAX_PAGE:
        abort(404)
    rows = db.session.execute(_select(where).limit(PAGE_SIZE + 1)
                              .offset((page - 1) * PAGE_SIZE)).all()
    total = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent)
                               .where(*where)).scalar() or 0
    members = db.session.execute(
        sa.select(User.id, User.email).join(Membership, Membership.user_id == User.id)
        .where(Membership.organisation_id == org_id).order_by(User.email)).all()
    return render_template("audit/index.html", events=rows[:PAGE_SIZE],
                           has_more=len(rows) > PAGE_SIZE, page=page, total=total,
                           filters=filters, members=members, actions=audit.KNOWN_ACTIONS,
                           page_size=PAGE_SIZE)


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: a leading =, +, -, @ (a formula) is quoted."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.route("/export.csv")
@requires("audit.read")
def export():  # policy: owner/admin
    import json
    org_id = current_org_id()
    _shown, where = _filters(org_id)
    stmt = _select(where).execution_options(yield_per=CSV_BATCH)

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for event, email in db.session.execute(stmt):
            writer.writerow([_cell(v) for v in (
                event.created_at.strftime("%Y-%m-%d %H:%M:%S"), event.action, email,
                event.user_id, event.target_type, event.target_id, event.ip,
                json.dumps(event.detail or {}, sort_keys=True))])
            if out.tell() > 64 * 1024:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Response(stream_with_context(rows()), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="keystone-audit-{stamp}.csv"',
        "Cache-Control": "no-store"})
