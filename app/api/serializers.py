"""Every API representation in one place: a function per object and, next to it, the
JSON Schema the OpenAPI document publishes for it (tests/api checks one against the
other through schemathesis).

Nothing secret is serialised here: no private key, password, credential, step script
or secret variable value. A secret variable's value leaves only through
:func:`variable` with ``reveal=True``, which the reveal endpoint alone passes (admin
scope, recorded as an audit event).
"""
from __future__ import annotations

import datetime as dt

from app.models import (Application, ApiToken, Environment, EnvironmentVariable, Operation,
                        OperationStep, Server, Service, ServiceReplica)
from app.models.enums import (EnvironmentStatus, OperationKind, OperationStatus, ServerStatus,
                              StepStatus)


def when(value: dt.datetime | None) -> str | None:
    """UTC timestamps (stored naive) in RFC 3339."""
    if value is None:
        return None
    return value.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _enum(value) -> str | None:
    return None if value is None else getattr(value, "value", value)


# ----------------------------------------------------------------------------- schemas

def _nullable(kind: str, **extra) -> dict:
    return {"type": [kind, "null"], **extra}


ID = {"type": "integer", "minimum": 1}
TIME = _nullable("string", format="date-time")
STR = {"type": "string"}
NSTR = _nullable("string")


def _object(props: dict, required=None) -> dict:
    return {"type": "object", "properties": props,
            "required": list(required if required is not None else props)}


SCHEMAS: dict[str, dict] = {}

SCHEMAS["Error"] = _object({"error": _object({
    "code": {"type": "string", "description": "Stable machine-readable code."},
    "message": STR,
    "details": {"type": "object"}}, required=["code", "message"])})

SCHEMAS["EnvironmentRef"] = _object({"id": ID, "name": STR, "branch": STR,
                                     "status": {"enum": [s.value for s in EnvironmentStatus]}})

SCHEMAS["Application"] = _object({
    "id": ID, "name": STR, "repository_url": STR, "repository_type": STR,
    "default_branch": STR, "deploy_key_public": NSTR, "deploy_key_fingerprint": NSTR,
    "created_at": TIME,
    "environments": {"type": "array", "items": {"$ref": "#/components/schemas/EnvironmentRef"}}})


def application(a: Application) -> dict:
    return {"id": a.id, "name": a.name, "repository_url": a.repository_url,
            "repository_type": _enum(a.repository_type), "default_branch": a.default_branch,
            "deploy_key_public": a.deploy_key_public,
            "deploy_key_fingerprint": a.deploy_key_fingerprint, "created_at": when(a.created_at),
            "environments": [environment_ref(e) for e in a.environments]}


def environment_ref(e: Environment) -> dict:
    return {"id": e.id, "name": e.name, "branch": e.branch, "status": _enum(e.status)}


SCHEMAS["Environment"] = _object({
    "id": ID, "application_id": ID, "application": STR, "name": STR, "branch": STR,
    "status": {"enum": [s.value for s in EnvironmentStatus]},
    "url": _nullable("string", description="Where the environment answers, once deployed."),
    "current_commit": NSTR, "current_artifact_id": _nullable("integer"),
    "scheduler_enabled": {"type": "boolean"}, "scheduler_mode": STR,
    "registry_id": _nullable("integer"),
    "service_ids": {"type": "array", "items": ID}, "created_at": TIME})


def environment(e: Environment) -> dict:
    from app.onboarding import environment_url
    artifact = e.current_artifact
    return {"id": e.id, "application_id": e.application_id, "application": e.application.name,
            "name": e.name, "branch": e.branch, "status": _enum(e.status),
            "url": environment_url(e),
            "current_commit": artifact.commit_sha if artifact is not None else None,
            "current_artifact_id": e.current_artifact_id,
            "scheduler_enabled": bool(e.scheduler_enabled),
            "scheduler_mode": _enum(e.scheduler_mode), "registry_id": e.registry_id,
            "service_ids": [s.id for s in e.services], "created_at": when(e.created_at)}


SCHEMAS["Variable"] = _object({
    "id": ID, "key": STR, "source": STR, "secret": {"type": "boolean"},
    "overridable": {"type": "boolean"},
    "value": _nullable("string", description="null for a secret unless revealed."),
    "revealed": {"type": "boolean"}, "service_slice_id": _nullable("integer")})


def is_secret(v: EnvironmentVariable) -> bool:
    """Secret by its flag, or by what it is (the same rule the deploy log redaction uses)."""
    from app.attachments import is_managed_secret
    from app.deploys.values import ALWAYS_SECRET_KEYS
    return bool(v.is_secret or is_managed_secret(v.key) or v.key in ALWAYS_SECRET_KEYS)


def variable(v: EnvironmentVariable, *, reveal: bool = False) -> dict:
    secret = is_secret(v)
    return {"id": v.id, "key": v.key, "source": _enum(v.source), "secret": secret,
            "overridable": bool(v.overridable),
            "value": v.value if (reveal or not secret) else None,
            "revealed": bool(secret and reveal), "service_slice_id": v.service_slice_id}


SCHEMAS["Step"] = _object({
    "id": ID, "order": {"type": "integer"}, "name": STR,
    "status": {"enum": [s.value for s in StepStatus]}, "exit_code": _nullable("integer"),
    "server_id": _nullable("integer"), "cleanup": {"type": "boolean"},
    "changed": _nullable("boolean"), "started_at": TIME, "finished_at": TIME})


def step(s: OperationStep) -> dict:
    return {"id": s.id, "order": s.order, "name": s.name, "status": _enum(s.status),
            "exit_code": s.exit_code, "server_id": s.server_id, "cleanup": bool(s.is_cleanup),
            "changed": s.changed, "started_at": when(s.started_at),
            "finished_at": when(s.finished_at)}


SCHEMAS["Operation"] = _object({
    "id": ID, "kind": {"enum": [k.value for k in OperationKind]},
    "status": {"enum": [s.value for s in OperationStatus]},
    "terminal": {"type": "boolean"}, "target_type": STR, "target_id": {"type": "integer"},
    "parent_id": _nullable("integer"), "summary": NSTR, "error": NSTR,
    "commit": _nullable("string", description="The commit a deploy built or rolled back to."),
    "rollback": {"type": "boolean"}, "artifact_id": _nullable("integer"),
    "created_by_id": _nullable("integer"),
    "created_at": TIME, "started_at": TIME, "finished_at": TIME,
    "links": _object({"self": STR, "log": STR, "events": STR})})

SCHEMAS["OperationDetail"] = {"allOf": [
    {"$ref": "#/components/schemas/Operation"},
    _object({"steps": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
             "children": {"type": "array", "items": {"$ref": "#/components/schemas/Operation"}},
             "step_now": {"type": "integer"},
             "step_total": _nullable("integer", description="Planned steps, from the last "
                                     "successful run of the same kind on the same target.")})]}


def operation(op: Operation) -> dict:
    params, result = op.params or {}, op.result or {}
    commit = result.get("commit") or params.get("commit_sha")
    artifact_id = result.get("artifact_id") or params.get("artifact_id")
    base = f"/api/v1/operations/{op.id}"
    return {"id": op.id, "kind": _enum(op.kind), "status": _enum(op.status),
            "terminal": op.is_terminal, "target_type": op.target_type,
            "target_id": op.target_id, "parent_id": op.parent_id, "summary": op.summary,
            "error": op.error, "commit": commit if isinstance(commit, str) else None,
            "rollback": bool(params.get("rollback")),
            "artifact_id": artifact_id if type(artifact_id) is int else None,
            "created_by_id": op.created_by_id, "created_at": when(op.created_at),
            "started_at": when(op.started_at), "finished_at": when(op.finished_at),
            "links": {"self": base, "log": f"{base}/log", "events": f"{base}/events"}}


def operation_detail(op: Operation, progress: dict) -> dict:
    return {**operation(op), "steps": [step(s) for s in op.steps],
            "children": [operation(c) for c in op.children],
            "step_now": progress["step_now"], "step_total": progress["step_total"]}


SCHEMAS["Server"] = _object({
    "id": ID, "name": STR, "status": {"enum": [s.value for s in ServerStatus]},
    "provider": NSTR, "public_ip": NSTR, "private_ip": NSTR, "ssh_port": {"type": "integer"},
    "host_key_fingerprint": NSTR, "docker_version": NSTR, "compose_version": NSTR,
    "provisioned_at": TIME, "created_at": TIME})


def server(s: Server) -> dict:
    return {"id": s.id, "name": s.name, "status": _enum(s.status),
            "provider": _enum(s.provider.type) if s.provider is not None else None,
            "public_ip": s.public_ip, "private_ip": s.private_ip, "ssh_port": s.ssh_port,
            "host_key_fingerprint": s.host_key_fingerprint, "docker_version": s.docker_version,
            "compose_version": s.compose_version, "provisioned_at": when(s.provisioned_at),
            "created_at": when(s.created_at)}


SCHEMAS["Replica"] = _object({
    "id": ID, "server_id": ID, "container_name": STR, "status": STR, "health": STR,
    "container_state": NSTR, "image_digest": NSTR, "checked_at": TIME})

SCHEMAS["Service"] = _object({
    "id": ID, "name": STR, "environment_id": _nullable("integer"),
    "server_id": _nullable("integer"), "category": STR, "type": STR, "version_track": STR,
    "status": STR, "deploy_policy": STR, "process_roles": {"type": "array", "items": STR},
    "desired_replicas": {"type": "integer"}, "current_image_digest": NSTR,
    "update_status": STR,
    "replicas": {"type": "array", "items": {"$ref": "#/components/schemas/Replica"}},
    "created_at": TIME})


def replica(r: ServiceReplica) -> dict:
    return {"id": r.id, "server_id": r.server_id, "container_name": r.container_name,
            "status": _enum(r.status), "health": _enum(r.health_status),
            "container_state": r.container_state, "image_digest": r.image_digest,
            "checked_at": when(r.checked_at)}


def service(s: Service) -> dict:
    return {"id": s.id, "name": s.name, "environment_id": s.environment_id,
            "server_id": s.server_id, "category": _enum(s.category), "type": s.type,
            "version_track": s.version_track or "", "status": _enum(s.status),
            "deploy_policy": _enum(s.deploy_policy),
            "process_roles": [str(r) for r in (s.process_roles or [])],
            "desired_replicas": s.desired_replicas,
            "current_image_digest": s.current_image_digest,
            "update_status": _enum(s.update_status),
            "replicas": [replica(r) for r in s.present_replicas],
            "created_at": when(s.created_at)}


SCHEMAS["Build"] = _object({
    "id": ID, "commit": STR, "status": STR, "image_digest": NSTR, "current": {"type": "boolean"},
    "created_at": TIME})


def build(artifact, current_id: int | None) -> dict:
    return {"id": artifact.id, "commit": artifact.commit_sha, "status": _enum(artifact.status),
            "image_digest": artifact.image_digest, "current": artifact.id == current_id,
            "created_at": when(artifact.created_at)}


SCHEMAS["Token"] = _object({
    "id": ID, "name": STR, "prefix": STR,
    "scopes": {"type": "array", "items": {"enum": ["read", "deploy", "admin"]}},
    "effective_scopes": {"type": "array", "items": {"enum": ["read", "deploy", "admin"]}},
    "expires_at": TIME, "last_used_at": TIME, "created_at": TIME,
    "user": _object({"id": ID, "email": STR, "name": STR}),
    "organisation": _object({"id": ID, "name": STR, "slug": STR})})


def token(t: ApiToken, effective: set[str]) -> dict:
    org = t.organisation
    return {"id": t.id, "name": t.name, "prefix": t.prefix, "scopes": list(t.scopes or []),
            "effective_scopes": [s for s in ("read", "deploy", "admin") if s in effective],
            "expires_at": when(t.expires_at), "last_used_at": when(t.last_used_at),
            "created_at": when(t.created_at),
            "user": {"id": t.user.id, "email": t.user.email, "name": t.user.name or ""},
            "organisation": {"id": org.id, "name": org.name, "slug": org.slug}}


SCHEMAS["LogLine"] = _object({
    "id": {"type": "string", "description": "The stream entry id (db-<n> when replayed from "
                                            "the database)."},
    "operation_id": _nullable("integer"), "step_id": _nullable("integer"),
    "stderr": {"type": "boolean"}, "text": STR})

SCHEMAS["Event"] = {
    "type": "object", "required": ["event", "data"],
    "description": "One server-sent event. data is JSON: a LogLine for line; {operation_id, "
                   "step_id, status, name, order, cleanup} for step; {operation_id, status} "
                   "for status and end (the last event).",
    "properties": {"event": {"enum": ["line", "step", "status", "end"]},
                   "data": {"type": "string", "contentMediaType": "application/json"},
                   "id": STR}}


def page_schema(item: str) -> dict:
    return _object({"items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                    "page": {"type": "integer", "minimum": 1},
                    "per_page": {"type": "integer", "minimum": 1},
                    "total": {"type": "integer", "minimum": 0}, "has_more": {"type": "boolean"}})
