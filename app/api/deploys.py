"""Deploys, rollbacks and operations over the API.

Deploys and rollbacks start through app.deploys.service.start_deploy, the function
the environment page's buttons call: one ``environment_deploy`` operation holding the
environment's lock, queued behind a running one (or refused with ``if_busy=refuse``).

An operation's log is served two ways: ``/log`` as JSON lines (what is recorded so
far), ``/events`` as server-sent events that follow the live stream until the end
(the same Redis stream the operation page follows; ``Last-Event-ID`` resumes).
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from flask import Response, current_app, jsonify, request
from flask_login import current_user

from app.api import serializers as ser
from app.api.core import ApiError, json_body, paginate, query_choice, route
from app.deploys import service as deploy_service
from app.extensions import db
from app.models import BuildArtifact, Environment, Operation, OperationStep
from app.models.enums import ArtifactStatus, OperationKind, OperationStatus
from app.operations import OperationLocked, logstream, sse
from app.repositories.validation import is_commit_sha
from app.scoping import current_org_id, get_for_org_or_404

OPERATION_202 = (202, "The deploy operation (running, pending or queued)", "Operation")
DEPLOY_ERRORS = (409, 422)


def _deploys_of(env: Environment):
    return (sa.select(Operation).where(Operation.organisation_id == current_org_id(),
                                       Operation.kind == OperationKind.ENVIRONMENT_DEPLOY,
                                       Operation.target_type == "environment",
                                       Operation.target_id == env.id,
                                       Operation.parent_id.is_(None))
            .order_by(Operation.id.desc()))


def _start(env: Environment, **kwargs) -> Operation:
    try:
        return deploy_service.start_deploy(env, current_user, **kwargs)
    except OperationLocked as exc:
        db.session.rollback()
        raise ApiError(409, "operation_locked", str(exc)) from None
    except deploy_service.DeployBlocked as exc:
        db.session.rollback()
        raise ApiError(422, "deploy_blocked", str(exc),
                       {"problems": [str(p) for p in exc.problems]}) from None


def _accepted(op: Operation):
    resp = jsonify(ser.operation(op))
    resp.status_code = 202
    resp.headers["Location"] = f"/api/v1/operations/{op.id}"
    return resp


@route("/environments/<int:environment_id>/deploys", permission="read", summary="An environment's deploys",
       tag="deploys", paginated=True, ok=(200, "A page of deploy operations, newest first",
                                          "Page_Operation"))
def list_deploys(environment_id):
    return paginate(_deploys_of(get_for_org_or_404(Environment, environment_id)), ser.operation)


@route("/environments/<int:environment_id>/deploys", "POST", permission="deploy", summary="Start a deploy",
       tag="deploys", scope="deploy", ok=OPERATION_202, errors=DEPLOY_ERRORS,
       body={"type": "object", "additionalProperties": False, "properties": {
           "commit": {"type": "string", "pattern": "^([0-9a-f]{40}|[0-9a-f]{64})$",
                      "description": "A full commit sha; default: the head of the "
                                     "environment's branch."},
           "if_busy": {"enum": ["queue", "refuse"], "default": "queue",
                       "description": "When another operation holds the environment: queue "
                                      "behind it, or answer 409."}}},
       description="The same deploy as the environment page's button: build (or reuse) the "
                   "commit, then the zero-downtime cutover. Follow it with "
                   "/operations/{id}/events.")
def start_deploy(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    data = json_body({"commit": str, "if_busy": str})
    commit = data.get("commit")
    if commit is not None and not is_commit_sha(commit):
        raise ApiError(400, "invalid_request", "commit must be a full commit sha (40 or 64 "
                                               "lower-case hex digits).", {"field": "commit"})
    if_busy = data.get("if_busy") or "queue"
    if if_busy not in ("queue", "refuse"):
        raise ApiError(400, "invalid_request", "if_busy must be queue or refuse.",
                       {"field": "if_busy"})
    return _accepted(_start(env, on_conflict=if_busy, commit_sha=commit))


@route("/environments/<int:environment_id>/builds", permission="read", summary="Finished builds to roll back to",
       tag="deploys", paginated=True, ok=(200, "A page of ready builds, newest first",
                                          "Page_Build"))
def list_builds(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    stmt = (sa.select(BuildArtifact).where(BuildArtifact.environment_id == env.id,
                                           BuildArtifact.status == ArtifactStatus.READY)
            .order_by(BuildArtifact.id.desc()))
    return paginate(stmt, lambda a: ser.build(a, env.current_artifact_id))


@route("/environments/<int:environment_id>/rollback", "POST", permission="deploy", summary="Roll back",
       tag="deploys", scope="deploy", ok=OPERATION_202, errors=DEPLOY_ERRORS,
       body={"type": "object", "additionalProperties": False, "properties": {
           "build_id": {"type": "integer", "minimum": 1,
                        "description": "A ready build of this environment (GET .../builds); "
                                       "default: the newest ready build before the current "
                                       "one."}}},
       description="Redeploys an earlier build through the same cutover as the environment "
                   "page's rollback. Database migrations are not reversed.")
def rollback(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    data = json_body({"build_id": int})
    ready = (sa.select(BuildArtifact).where(BuildArtifact.environment_id == env.id,
                                            BuildArtifact.status == ArtifactStatus.READY,
                                            BuildArtifact.image_digest.is_not(None)))
    if data.get("build_id") is not None:
        artifact = db.session.execute(ready.where(
            BuildArtifact.id == data["build_id"])).scalar_one_or_none()
        if artifact is None:
            raise ApiError(404, "not_found", "No finished build with that id in this "
                                             "environment.", {"field": "build_id"})
    else:
        stmt = ready.order_by(BuildArtifact.id.desc())
        if env.current_artifact_id is not None:
            stmt = stmt.where(BuildArtifact.id < env.current_artifact_id)
        artifact = db.session.execute(stmt.limit(1)).scalar_one_or_none()
        if artifact is None:
            raise ApiError(422, "no_earlier_build", "There is no earlier finished build to "
                                                    "roll back to.")
    return _accepted(_start(env, artifact=artifact))


# --------------------------------------------------------------------------- operations

@route("/operations", permission="read", summary="List operations", tag="operations", paginated=True,
       query=[("kind", {"enum": [k.value for k in OperationKind]}, "Only this kind."),
              ("status", {"enum": [s.value for s in OperationStatus]}, "Only this status.")],
       ok=(200, "A page of top-level operations, newest first", "Page_Operation"))
def list_operations():
    stmt = sa.select(Operation).where(Operation.organisation_id == current_org_id(),
                                      Operation.parent_id.is_(None))
    kind = query_choice("kind", [k.value for k in OperationKind])
    status = query_choice("status", [s.value for s in OperationStatus])
    if kind:
        stmt = stmt.where(Operation.kind == kind)
    if status:
        stmt = stmt.where(Operation.status == status)
    return paginate(stmt.order_by(Operation.id.desc()), ser.operation)


@route("/operations/<int:operation_id>", permission="read", summary="An operation: status and steps",
       tag="operations", ok=(200, "The operation", "OperationDetail"))
def get_operation(operation_id):
    from app.blueprints.operations import _progress
    op = get_for_org_or_404(Operation, operation_id)
    return jsonify(ser.operation_detail(op, _progress(op)))


def _line(entry_id: str, op_id, step_id, text: str, stderr: bool = False) -> dict:
    return {"id": entry_id, "operation_id": int(op_id) if str(op_id).isdigit() else None,
            "step_id": int(step_id) if str(step_id).isdigit() else None, "stderr": stderr,
            "text": text}


def _recorded_lines(op: Operation):
    """Lines of a finished operation and its children, from the database, in order."""
    n = 0

    def walk(o):
        nonlocal n
        items = [("step", s.started_at or s.created_at, s) for s in o.steps]
        items += [("child", c.created_at, c) for c in o.children]
        items.sort(key=lambda item: (item[1] is None, item[1]))
        for kind, _when, obj in items:
            if kind == "child":
                yield from walk(obj)
                continue
            for text in obj.log_text.splitlines():
                n += 1
                yield _line(f"db-{n}", o.id, obj.id, text)

    yield from walk(op)


@route("/operations/<int:operation_id>/log", permission="read", summary="The log as JSON lines", tag="operations",
       ok=(200, "One LogLine object per line", "LogLine", "application/x-ndjson"),
       description="What has been recorded so far (the live stream while it lasts, then the "
                   "database). Secrets were redacted when the lines were recorded.")
def get_log(operation_id):
    op = get_for_org_or_404(Operation, operation_id)
    client = logstream.redis_client()
    key = logstream.stream_key(op.id)
    if client.exists(key):
        entries = []
        cursor = "-"
        while True:
            batch = client.xrange(key, min=cursor, max="+", count=1000)
            batch = [(i.decode() if isinstance(i, bytes) else i, f) for i, f in batch]
            if cursor != "-":
                batch = [b for b in batch if b[0] != cursor]
            if not batch:
                break
            for entry_id, fields in batch:
                f = logstream.decode(fields)
                if f.get("k") == "line":
                    entries.append(_line(entry_id, f.get("o"), f.get("s"), f.get("t", ""),
                                         f.get("e") == "1"))
            cursor = batch[-1][0]
    else:
        entries = list(_recorded_lines(op))
    body = "".join(json.dumps(e) + "\n" for e in entries)
    return Response(body, mimetype="application/x-ndjson")


def _json_renderer(engine):
    """Stream entries as JSON events: line, step (with its name and order), status, end."""
    step_table = OperationStep.__table__

    def step_info(step_id: str) -> dict:
        if not step_id.isdigit():
            return {}
        with engine.connect() as conn:
            row = conn.execute(sa.select(step_table.c.name, step_table.c.order,
                                         step_table.c.is_cleanup)
                               .where(step_table.c.id == int(step_id))).first()
        return {"name": row[0], "order": row[1], "cleanup": bool(row[2])} if row else {}

    def render(entry_id: str, fields: dict) -> tuple[str, bool]:
        kind = fields.get("k")
        op_id = int(fields["o"]) if fields.get("o", "").isdigit() else None
        if kind == "line":
            data = _line(entry_id, fields.get("o"), fields.get("s"), fields.get("t", ""),
                         fields.get("e") == "1")
            return sse.format_event("line", json.dumps(data), entry_id), False
        if kind == "step":
            data = {"operation_id": op_id, "step_id": int(fields["s"]) if fields.get(
                "s", "").isdigit() else None, "status": fields.get("st", ""),
                **step_info(fields.get("s", ""))}
            return sse.format_event("step", json.dumps(data), entry_id), False
        data = json.dumps({"operation_id": op_id, "status": fields.get("st", "")})
        if kind == "end":
            return sse.format_event("end", data, entry_id), True
        return sse.format_event("status", data, entry_id), False

    return render


def _replay(op: Operation, last_id: str | None):
    """A finished operation whose stream expired: its recorded lines, then the end."""
    skip = int(last_id[3:]) if last_id and last_id.startswith("db-") and last_id[3:].isdigit() \
        else 0
    lines = list(_recorded_lines(op))
    status = OperationStatus(op.status).value
    end = json.dumps({"operation_id": op.id, "status": status})

    def gen():
        yield f"retry: {sse.RETRY_MS}\n: replay of a finished operation\n\n"
        for line in lines[skip:]:
            yield sse.format_event("line", json.dumps(line), line["id"])
        yield sse.format_event("end", end, f"db-{len(lines)}")
    return gen()


@route("/operations/<int:operation_id>/events", permission="read", summary="The live log as server-sent events",
       tag="operations", ok=(200, "Events line, step, status and end; data is JSON",
                             "Event", "text/event-stream"),
       query=[("last_event_id", {"type": "string", "maxLength": 64},
               "Resume after this event id (or send the Last-Event-ID header).")],
       description="Follows the operation until its end event (data: {operation_id, status}). "
                   "A response lasts at most a few minutes; reconnect with Last-Event-ID.")
def events(operation_id):
    op = get_for_org_or_404(Operation, operation_id)
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    client = logstream.redis_client(blocking=True)
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    if op.is_terminal and not client.exists(logstream.stream_key(op.id)):
        gen = _replay(op, last_id)
    else:
        engine, op_id = db.engine, op.id
        render = _json_renderer(engine)
        gen = sse.stream_events(
            client, op.id, last_id, engine=engine, render=render,
            max_seconds=current_app.config.get("API_SSE_MAX_SECONDS", sse.MAX_SECONDS),
            lost_end=lambda status: sse.format_event(
                "end", json.dumps({"operation_id": op_id, "status": status})))
    db.session.remove()  # the generator never uses the session; free its connection now
    return Response(gen, mimetype="text/event-stream", headers=headers)
