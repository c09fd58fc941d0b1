"""Operations: the organisation's list, an operation's page, its live log, cancel."""
from __future__ import annotations

import sqlalchemy as sa
from flask import (Blueprint, Response, abort, flash, redirect, render_template, request,
                   url_for)
from flask_login import login_required

from app.extensions import db
from app.models import Operation
from app.models.enums import OperationKind, OperationStatus
from app.operations import lifecycle, logstream, sse
from app.scoping import current_org_id, get_for_org_or_404, parse_id

# cli_group=None: the commands below are top level (`keystone reap`).
bp = Blueprint("operations", __name__, cli_group=None)

PAGE_SIZE = 50
MAX_PAGE = 10**9  # far past any real history; keeps OFFSET inside 64 bits


@bp.route("/operations")
@login_required
def index():
    org_id = current_org_id()
    kind = request.args.get("kind", "")
    status = request.args.get("status", "")
    target = request.args.get("target", "").strip()
    stmt = sa.select(Operation).where(Operation.organisation_id == org_id)
    if kind in {k.value for k in OperationKind}:
        stmt = stmt.where(Operation.kind == kind)
    if status in {s.value for s in OperationStatus}:
        stmt = stmt.where(Operation.status == status)
    if target:
        target_type, _, target_id = target.partition(":")
        stmt = stmt.where(Operation.target_type == target_type)
        if parse_id(target_id) is not None:
            stmt = stmt.where(Operation.target_id == parse_id(target_id))
        elif target_id:
            stmt = stmt.where(sa.false())  # no object has that id
    if not (kind or status or target or request.args.get("children")):
        stmt = stmt.where(Operation.parent_id.is_(None))  # children show inside their parent
    page = parse_id(request.args.get("page", "1")) or 1
    if page > MAX_PAGE:
        abort(404)
    rows = db.session.execute(stmt.order_by(Operation.id.desc())
                              .limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).scalars().all()
    targets = db.session.execute(
        sa.select(Operation.target_type).where(Operation.organisation_id == org_id).distinct()
    ).scalars().all()
    return render_template("operations/index.html", operations=rows[:PAGE_SIZE],
                           has_more=len(rows) > PAGE_SIZE, page=page, kinds=list(OperationKind),
                           statuses=list(OperationStatus), targets=sorted(targets),
                           filters={"kind": kind, "status": status, "target": target})


def _panel_context(op: Operation) -> dict:
    holders = lifecycle.lock_holders(op.lock_keys or [])
    waiting_for = None
    if OperationStatus(op.status) is OperationStatus.QUEUED:
        blocker = lifecycle.blocking_operation(op.lock_keys or [], exclude_id=op.id)
        if blocker is not None:
            waiting_for = blocker
    held = sorted(k for k, holder in holders.items() if holder.id == op.id)
    return {"op": op, "held_keys": held, "waiting_for": waiting_for,
            "describe_key": lifecycle.describe_key}


@bp.route("/operations/<int:operation_id>")
@login_required
def show(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    replay = [] if not op.is_terminal else sse.replay_lines(op)
    return render_template("operations/show.html", replay=replay, **_panel_context(op))


@bp.route("/operations/<int:operation_id>/panel")
@login_required
def panel(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    return render_template("operations/_panel.html", **_panel_context(op))


@bp.route("/operations/<int:operation_id>/cancel", methods=["POST"])
@login_required
def cancel(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    message = lifecycle.cancel_operation(op)
    if request.headers.get("HX-Request"):
        db.session.refresh(op)
        return render_template("operations/_panel.html", flash_message=message,
                               **_panel_context(op))
    flash(message, "success")
    return redirect(url_for("operations.show", operation_id=op.id))


@bp.route("/operations/<int:operation_id>/events")
@login_required
def events(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    client = logstream.redis_client(blocking=True)
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    if op.is_terminal and not client.exists(logstream.stream_key(op.id)):
        lines = sse.replay_lines(op)
        gen = sse.replay_events(lines, OperationStatus(op.status).value, last_id)
    else:
        gen = sse.stream_events(client, op.id, last_id, engine=db.engine)
    db.session.remove()  # the generator never uses the session; free its connection now
    return Response(gen, mimetype="text/event-stream", headers=headers)


@bp.cli.command("reap")
def reap_command():
    """End operations whose worker died (interrupted), free their locks, start queued ones."""
    import click

    from app.operations.reaper import reap
    reaped = reap()
    click.echo(f"interrupted {len(reaped)} operation(s)" + (f": {reaped}" if reaped else ""))


