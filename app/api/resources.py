"""Read endpoints: the token, applications, environments and their variables, servers,
services. Every object is loaded through app.scoping (the user's organisation only)."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy.orm import selectinload

from app.api import serializers as ser
from app.api.core import (ApiError, current_scopes, current_token, json_body, paginate,
                          query_choice, route)
from app.extensions import db
from app import audit
from app.models import (Application, Environment, EnvironmentAttachment,
                        EnvironmentVariable, Server, Service)
from app.models.enums import ServerStatus
from app.scoping import current_org_id, get_for_org_or_404, org_query, parse_id

NAME_QUERY = ("name", {"type": "string", "maxLength": 63}, "Only the object with this name.")


def _name_filter(stmt, column):
    name = request.args.get("name")
    if name:
        stmt = stmt.where(column == name[:255])
    return stmt


@route("/me", permission="read", summary="The token in use, its user and organisation", tag="tokens", scope=None,
       ok=(200, "The token", "Token"))
def me():
    return jsonify(ser.token(current_token(), current_scopes()))


# --------------------------------------------------------------------------- applications

@route("/applications", permission="read", summary="List applications", tag="applications", paginated=True,
       query=[NAME_QUERY], ok=(200, "A page of applications", "Page_Application"))
def list_applications():
    stmt = _name_filter(org_query(Application), Application.name).order_by(Application.id)
    return paginate(stmt.options(selectinload(Application.environments)), ser.application)


@route("/applications/<int:application_id>", permission="read", summary="One application", tag="applications",
       ok=(200, "The application", "Application"))
def get_application(application_id):
    return jsonify(ser.application(get_for_org_or_404(Application, application_id)))


# --------------------------------------------------------------------------- environments

@route("/environments", permission="read", summary="List environments", tag="environments", paginated=True,
       query=[NAME_QUERY, ("application", {"type": "string", "maxLength": 63},
                           "Only environments of the application with this name."),
              ("application_id", {"type": "integer", "minimum": 1},
               "Only environments of this application.")],
       ok=(200, "A page of environments", "Page_Environment"))
def list_environments():
    stmt = _name_filter(org_query(Environment), Environment.name)
    if request.args.get("application"):
        stmt = stmt.where(Application.name == request.args["application"][:255])
    if request.args.get("application_id") is not None:
        app_id = parse_id(request.args["application_id"])
        if app_id is None:
            raise ApiError(400, "invalid_request", "application_id must be a whole number.",
                           {"parameter": "application_id"})
        stmt = stmt.where(Environment.application_id == app_id)
    # What each item shows, loaded per page in a fixed number of queries.
    stmt = stmt.options(selectinload(Environment.application),
                        selectinload(Environment.current_artifact),
                        selectinload(Environment.services),
                        selectinload(Environment.attachments)
                        .selectinload(EnvironmentAttachment.service_slice))
    return paginate(stmt.order_by(Environment.id), ser.environment)


@route("/environments/<int:environment_id>", permission="read", summary="One environment", tag="environments",
       ok=(200, "The environment", "Environment"))
def get_environment(environment_id):
    return jsonify(ser.environment(get_for_org_or_404(Environment, environment_id)))


@route("/environments/<int:environment_id>/variables", permission="read", summary="An environment's variables",
       tag="environments", ok=(200, "Every variable; secret values are null",
                               {"type": "object", "properties": {"items": {
                                   "type": "array",
                                   "items": {"$ref": "#/components/schemas/Variable"}}},
                                "required": ["items"]}),
       description="Secret values (marked secret, APP_KEY, managed passwords) are null: "
                   "reveal one with POST .../reveal (admin scope, recorded).")
def list_variables(environment_id):
    env = get_for_org_or_404(Environment, environment_id)
    return jsonify({"items": [ser.variable(v) for v in env.variables]})


@route("/environments/<int:environment_id>/variables/<int:variable_id>/reveal", "POST", permission="secrets.reveal",
       summary="Reveal one variable's value", tag="environments", scope="admin",
       ok=(200, "The variable with its value", "Variable"),
       description="Needs the admin scope. Recorded as an audit event (variable.reveal), "
                   "like a reveal on the environment page; the value is never logged.")
def reveal_variable(environment_id, variable_id):
    env = get_for_org_or_404(Environment, environment_id)
    var = get_for_org_or_404(EnvironmentVariable, variable_id)
    if var.environment_id != env.id:
        raise ApiError(404, "not_found", "No such variable in this environment.")
    audit.record("variable.reveal", var, {"key": var.key, "environment_id": env.id,
                                          "via": "api", "token_id": current_token().id},
                 target_type="environment_variable", organisation_id=current_org_id())
    db.session.commit()
    return jsonify(ser.variable(var, reveal=True))


VARIABLE_BODY = {"type": "object", "additionalProperties": False, "required": ["key", "value"],
                 "properties": {
                     "key": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                             "maxLength": 255, "description": "The variable's name."},
                     "value": {"type": "string", "maxLength": 65536,
                               "description": "Its value, byte for byte (no NUL)."},
                     "secret": {"type": "boolean", "default": False,
                                "description": "Mask it on pages and in logs."}}}


def _audit_variable(action: str, env: Environment, key: str) -> None:
    audit.record(action, env, {"key": key, "via": "api", "token_id": current_token().id},
                 target_type="environment", organisation_id=current_org_id())


@route("/environments/<int:environment_id>/variables", "POST", permission="variables.edit",
       summary="Set one variable", tag="environments", scope="deploy", body=VARIABLE_BODY,
       ok=(200, "The variable (a secret's value is null)", "Variable"), errors=(409,),
       description="Creates or updates the environment's own variable KEY (what the "
                   "environment page's form does); it takes effect at the next deploy. A "
                   "variable an attachment manages and does not let you override answers 409. "
                   "Recorded as an audit event (variable.set; never the value).")
def set_variable(environment_id):
    from app import attachments as att
    env = get_for_org_or_404(Environment, environment_id)
    data = json_body({"key": str, "value": str, "secret": bool})
    if data.get("key") is None or data.get("value") is None:
        raise ApiError(400, "invalid_request", "key and value are required.")
    key, value = data["key"], data["value"]
    try:
        row = att.set_user_variable(env, key, value, is_secret=bool(data.get("secret")))
    except att.AttachmentError as exc:
        db.session.rollback()
        raise ApiError(409, "variable_managed", str(exc), {"field": "key"}) from None
    except ValueError as exc:  # the name or value refused; the message names the key only
        db.session.rollback()
        raise ApiError(400, "invalid_request", str(exc), {"field": "key"}) from None
    _audit_variable("variable.set", env, key)
    db.session.commit()
    return jsonify(ser.variable(row))


@route("/environments/<int:environment_id>/variables/unset", "POST", permission="variables.edit",
       summary="Remove one variable", tag="environments", scope="deploy",
       body={"type": "object", "additionalProperties": False, "required": ["key"],
             "properties": {"key": {"type": "string", "maxLength": 255}}},
       ok=(200, "Whether the environment had its own variable of that name",
           {"type": "object", "properties": {"key": {"type": "string"},
                                             "deleted": {"type": "boolean"}},
            "required": ["key", "deleted"]}),
       description="Removes the environment's own variable KEY (variables an attachment "
                   "manages go away with the attachment). Unsetting a name that is not set is "
                   "not an error: deleted is false. Recorded as an audit event.")
def unset_variable(environment_id):
    from app import attachments as att
    env = get_for_org_or_404(Environment, environment_id)
    key = json_body({"key": str}).get("key")
    if key is None:
        raise ApiError(400, "invalid_request", "key is required.", {"field": "key"})
    deleted = att.delete_user_variable(env, key[:255])
    if deleted:
        _audit_variable("variable.delete", env, key)
    db.session.commit()
    return jsonify({"key": key, "deleted": deleted})


# --------------------------------------------------------------------------- servers, services

@route("/servers", permission="read", summary="List servers", tag="servers", paginated=True,
       query=[NAME_QUERY, ("status", {"enum": [s.value for s in ServerStatus]},
                           "Only servers in this status.")],
       ok=(200, "A page of servers", "Page_Server"))
def list_servers():
    stmt = _name_filter(org_query(Server), Server.name)
    status = query_choice("status", [s.value for s in ServerStatus])
    if status:
        stmt = stmt.where(Server.status == status)
    return paginate(stmt.options(selectinload(Server.provider)).order_by(Server.id), ser.server)


@route("/servers/<int:server_id>", permission="read", summary="One server", tag="servers",
       ok=(200, "The server", "Server"))
def get_server(server_id):
    return jsonify(ser.server(get_for_org_or_404(Server, server_id)))


@route("/services", permission="read", summary="List services", tag="services", paginated=True,
       query=[NAME_QUERY, ("environment_id", {"type": "integer", "minimum": 1},
                           "Only services of this environment.")],
       ok=(200, "A page of services", "Page_Service"))
def list_services():
    stmt = _name_filter(org_query(Service), Service.name)
    if request.args.get("environment_id") is not None:
        env_id = parse_id(request.args["environment_id"])
        if env_id is None:
            raise ApiError(400, "invalid_request", "environment_id must be a whole number.",
                           {"parameter": "environment_id"})
        stmt = stmt.where(Service.environment_id == env_id)
    return paginate(stmt.options(selectinload(Service.replicas)).order_by(Service.id),
                    ser.service)


@route("/services/<int:service_id>", permission="read", summary="One service", tag="services",
       ok=(200, "The service", "Service"))
def get_service(service_id):
    return jsonify(ser.service(get_for_org_or_404(Service, service_id)))



@route("/services/<int:service_id>/logs", permission="read", summary="Live logs of a service's running replicas",
       tag="services", ok=(200, "Events line (data: {replica, text, kind, stderr}), one per "
                                "log line, every replica interleaved", "Event",
                           "text/event-stream"),
       query=[("since", {"enum": ["5m", "1h", "24h"]}, "Start this far back (default: the "
                                                       "last `tail` lines)."),
              ("tail", {"type": "integer", "minimum": 0, "maximum": 1000},
               "Lines per replica to start with (default 200; 0: only new lines).")],
       description="`docker logs --follow` of every running replica, read by the logs worker "
                   "(`keystone worker --logs`) over its pooled SSH connection; this response "
                   "only reads Redis. The remote tails stop when the client goes (or after a "
                   "few minutes: reconnect). Comments (`: keepalive`) arrive every few seconds.")
def service_logs(service_id):
    from flask import Response, current_app

    from app import logtail
    from app.operations import logstream
    service = get_for_org_or_404(Service, service_id)
    since = request.args.get("since") or None
    tail = int(request.args.get("tail") or 200)
    client = logstream.redis_client(blocking=True)
    sid = logtail.open_session(client, service.id, since=since, tail=tail)
    logtail.ensure_tailer(client, current_app.config)
    from app.operations.sse import MAX_SECONDS
    max_seconds = current_app.config.get("API_SSE_MAX_SECONDS", MAX_SECONDS)
    db.session.remove()  # the generator never uses the session
    return Response(logtail.follow(client, sid, max_seconds=max_seconds, as_json=True),
                    mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})
