"""Operations: the organisation's list, an operation's page, its live log, cancel."""
from __future__ import annotations

import sqlalchemy as sa
from flask import (Blueprint, Response, abort, flash, redirect, render_template, request,
                   url_for)


from app.extensions import db
from app.models import Environment, Operation, Server
from app.models.enums import OperationKind, OperationStatus
from app.onboarding import environment_url
from app.operations import columns, lifecycle, logstream, sse
from app.scoping import current_org_id, get_for_org_or_404, parse_id
from app.policy import requires

bp = Blueprint("operations", __name__)

PAGE_SIZE = 50
MAX_PAGE = 10**9  # far past any real history; keeps OFFSET inside 64 bits


@bp.route("/operations")
@requires("read")
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
            "describe_key": lifecycle.describe_key, "server_groups": _server_groups(op),
            **_progress(op), **_outcome(op)}


def _server_groups(op: Operation) -> list[dict]:
    """Children that ran per server (app.operations.columns), one column per server.

    Lines are filled in here only for a finished operation (the page then replays from
    the database); while it runs, app.js copies each line of the live log into the
    column of the operation that wrote it.
    """
    table = Operation.__table__
    nodes, level = [], [op.id]
    while level:  # one query per level of the tree (a deploy has three)
        rows = db.session.execute(sa.select(table.c.id, table.c.parent_id, table.c.params)
                                  .where(table.c.parent_id.in_(level))).all()
        nodes += [columns.Node(r.id, r.parent_id, parse_id((r.params or {}).get("server_id")))
                  for r in rows]
        level = [r.id for r in rows]
    groups = columns.per_server_groups(nodes)
    if not groups:
        return []
    wanted = {c.server_id for g in groups for c in g.columns}
    ops = {o.id: o for o in db.session.execute(sa.select(Operation).where(
        Operation.id.in_([g.parent_id for g in groups]
                         + [i for g in groups for c in g.columns for i in c.child_ids])))
        .scalars()}
    names = dict(db.session.execute(sa.select(Server.id, Server.name).where(
        Server.id.in_(wanted), Server.organisation_id == op.organisation_id)).all())
    replay = sse.replay_lines(op) if op.is_terminal else []
    out = []
    for group in groups:
        lines = columns.split_lines(replay, group)
        out.append({"parent": ops.get(group.parent_id), "columns": [
            {"server_id": c.server_id, "server_name": names.get(c.server_id, f"server {c.server_id}"),
             "children": [ops[i] for i in c.child_ids if i in ops],
             "op_ids": " ".join(str(i) for i in c.op_ids), "lines": lines[c.server_id]}
            for c in group.columns]})
    return out


def _previous_success(op: Operation) -> Operation | None:
    """The last succeeded operation of the same kind on the same target, before this one."""
    return db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == op.organisation_id,
                                   Operation.kind == op.kind,
                                   Operation.target_type == op.target_type,
                                   Operation.target_id == op.target_id,
                                   Operation.status == OperationStatus.SUCCEEDED,
                                   Operation.id < op.id)
        .order_by(Operation.id.desc()).limit(1)).scalar_one_or_none()


def _progress(op: Operation) -> dict:
    """"Step n of m" and the steps still to come.

    Steps are created as the handler reaches them, so the plan of a running
    operation is read from the last successful run of the same kind on the same
    target: its steps, past the ones already started, are listed greyed as
    planned. A first run has no plan: the page says "step n" only.
    """
    started = [s for s in op.steps if not s.is_cleanup]
    current = len(started)
    planned: list[str] = []
    if not op.is_terminal:
        previous = _previous_success(op)
        if previous is not None:
            planned = [s.name for s in previous.steps if not s.is_cleanup][current:]
    total = current + len(planned) if planned else None
    return {"step_now": current, "step_total": total, "planned_steps": planned}


def _outcome(op: Operation) -> dict:
    """What the end of a deploy means: where the app answers, or what keeps serving."""
    out = {"live_url": None, "kept_serving": None, "environment": None}
    if op.kind != OperationKind.ENVIRONMENT_DEPLOY or op.target_type != "environment" \
            or not op.is_terminal:
        return out
    env = db.session.get(Environment, op.target_id)
    if env is None:
        return out
    out["environment"] = env
    status = OperationStatus(op.status)
    if status is OperationStatus.SUCCEEDED:
        out["live_url"] = environment_url(env)
        return out
    previous = _previous_success(op)
    sha = ((previous.result or {}).get("commit") if previous is not None else None) or \
        (env.current_artifact.commit_sha if env.current_artifact is not None else None)
    out["kept_serving"] = sha[:12] if sha else ""
    return out


@bp.route("/operations/<int:operation_id>")
@requires("read")
def show(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    replay = [] if not op.is_terminal else sse.replay_lines(op)
    return render_template("operations/show.html", replay=replay, **_panel_context(op))


@bp.route("/operations/<int:operation_id>/panel")
@requires("read")
def panel(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    return render_template("operations/_panel.html", **_panel_context(op))


@bp.route("/operations/<int:operation_id>/row")
@requires("read")
def row(operation_id: int):
    """One list row, polled by rows of operations that have not ended."""
    op = get_for_org_or_404(Operation, operation_id)
    return render_template("operations/_row.html", op=op)


@bp.route("/operations/<int:operation_id>/badge")
@requires("read")
def badge(operation_id: int):
    """Status badge and age, polled where a page names one operation (e.g. the last deploy)."""
    op = get_for_org_or_404(Operation, operation_id)
    return render_template("operations/_badge.html", op=op)


@bp.route("/operations/<int:operation_id>/cancel", methods=["POST"])
@requires("deploy")
def cancel(operation_id: int):
    op = get_for_org_or_404(Operation, operation_id)
    message = lifecycle.cancel_operation(op)
    if request.htmx:
        db.session.refresh(op)
        return render_template("operations/_panel.html", flash_message=message,
                               **_panel_context(op))
    flash(message, "success")
    return redirect(url_for("operations.show", operation_id=op.id))


@bp.route("/operations/<int:operation_id>/events")
@requires("read")
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


