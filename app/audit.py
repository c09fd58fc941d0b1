"""The audit log: who did what, when, and from which address.

One writer: :func:`record`. The actor, the organisation and the client address
come from the request context (the signed-in user or the API token's user, the
current organisation, ``request.remote_addr`` as ProxyFix reports it when
KEYSTONE_TRUSTED_PROXIES is set); a caller outside a request (a job, the CLI)
passes them. The event is added to the session: it commits with the change it
records (the caller commits).

``detail`` holds names, ids and counts, never a secret value: :func:`record`
refuses keys that name a value, password, token or secret.

Operation-driven actions (deploys, rollbacks, commands, server provisioning and
deletion, service deploys, backups) are recorded once, where every operation
starts (:func:`record_operation`, called by ``app.operations.start_operation``).
"""
from __future__ import annotations

from flask import has_request_context, request
from flask_login import current_user

from app.extensions import db
from app.models import AuditEvent
from app.models.enums import OperationKind

# detail keys that would carry a secret: refused outright (a bug, not a user error).
_FORBIDDEN_DETAIL = frozenset({"value", "values", "password", "token", "secret", "code",
                               "private_key", "totp_secret"})

# Operation kinds a person starts on purpose -> the audit action. Checks that read the
# network and change nothing (repository_verify, host_key_scan, image_check,
# provider_sync, sandbox_start) and child operations (replica_deploy, slice_*,
# gateway_cutover) are not audit events; their parent is.
OPERATION_ACTIONS = {
    OperationKind.ENVIRONMENT_DEPLOY: "deploy",
    OperationKind.SERVICE_DEPLOY: "service.deploy",
    OperationKind.SERVICE_SCALE: "service.scale",
    OperationKind.COMMAND_RUN: "command_run",
    OperationKind.SERVER_PROVISION: "server.provision",
    OperationKind.SERVER_DELETE: "server.delete",
    OperationKind.CONFIG_CHANGE: "environment.config_change",
    OperationKind.CREDENTIAL_ROTATION: "credential.rotate",
    OperationKind.DATABASE_BACKUP: "backup.run",
    OperationKind.DATABASE_RESTORE: "backup.restore",
    # A database or namespace added to (or removed from) a shared service, when a person
    # starts it (as a step of an environment's deploy it is the deploy's child).
    OperationKind.SLICE_PROVISION: "service.slice_create",
    OperationKind.SLICE_CONFIGURE: "service.slice_change",
}

# The action names the audit page offers as a filter (others still show up in the log).
KNOWN_ACTIONS = sorted({
    "auth.sign_in", "auth.sign_in_failed", "auth.two_factor_failed",
    "two_factor.enrolled", "two_factor.disabled", "two_factor.recovery_used",
    "two_factor.recovery_regenerated", "organisation.require_two_factor",
    "variable.reveal", "variables.export_reveal", "variables.bulk_import", "variable.set",
    "variable.delete", "app_key.rotate", "rollback", "server.create",
    "server.host_key_confirmed", "server.host_key_repinned", "server.public_fallback",
    "service.create",
    "provider.delete", "api_token.create", "api_token.revoke", "service.resources",
    *OPERATION_ACTIONS.values(),
})


def client_ip() -> str | None:
    """The client's address (ProxyFix has already applied KEYSTONE_TRUSTED_PROXIES)."""
    if not has_request_context():
        return None
    return (request.remote_addr or "")[:45] or None


def _current_actor_id() -> int | None:
    if not has_request_context():
        return None
    try:
        return current_user.id if current_user.is_authenticated else None
    except Exception:  # no login manager on this app (a bare test app)
        return None


def _current_org_id() -> int | None:
    if not has_request_context():
        return None
    try:
        if not current_user.is_authenticated:
            return None
        org = current_user.organisation
    except Exception:
        return None
    return org.id if org is not None else None


_UNSET = object()


def record(action: str, target=None, detail: dict | None = None, *,
           target_type: str | None = None, target_id: int | None = None,
           organisation_id: int | None = None, user=_UNSET) -> AuditEvent | None:
    """Add one audit event for ``action`` on ``target`` (a model instance, or pass
    ``target_type``/``target_id``). Returns the event, or None when no organisation can
    be told (a failed sign-in for an unknown email is not recorded)."""
    detail = dict(detail or {})
    bad = _FORBIDDEN_DETAIL.intersection(k.lower() for k in detail)
    if bad:
        raise ValueError(f"audit detail must not carry secret values ({', '.join(sorted(bad))})")
    if target is not None:
        target_type = target_type or getattr(target, "__tablename__", type(target).__name__)
        target_id = target.id if target_id is None else target_id
        if organisation_id is None:
            organisation_id = getattr(target, "organisation_id", None)
    if organisation_id is None:
        organisation_id = _current_org_id()
    if organisation_id is None:
        return None
    if user is _UNSET:
        user_id = _current_actor_id()
    else:
        user_id = getattr(user, "id", user)
    if has_request_context() and "via" not in detail and request.blueprint == "api":
        detail["via"] = "api"
    event = AuditEvent(organisation_id=organisation_id, user_id=user_id, action=action[:64],
                       target_type=(target_type or "organisation")[:32],
                       target_id=int(target_id if target_id is not None else organisation_id),
                       detail=detail, ip=client_ip())
    db.session.add(event)
    return event


def record_operation(op) -> AuditEvent | None:
    """The audit event of an operation a person (or a hook, or a schedule) started."""
    if op.parent_id is not None:
        return None
    kind = OperationKind(op.kind)
    action = OPERATION_ACTIONS.get(kind)
    if action is None:
        return None
    params = dict(op.params or {})
    if kind is OperationKind.ENVIRONMENT_DEPLOY and params.get("rollback"):
        action = "rollback"
    detail = {"operation_id": op.id, "summary": op.summary or ""}
    for key in ("artifact_id", "commit_sha", "image_digest", "backup_id"):
        if params.get(key) is not None:
            detail[key] = params[key]
    if op.created_by_id is None:
        detail["by"] = "keystone"  # a schedule or a hook started it, not a person
    return record(action, target_type=op.target_type, target_id=op.target_id,
                  organisation_id=op.organisation_id, user=op.created_by_id, detail=detail)
