"""Deploy hooks: make, rotate, turn off; accept a verified push (deploy or coalesce).

Coalescing: a push while a deploy of the environment is active (pending, queued or
running) does not queue another deploy; it records its commit as the hook's
``pending_commit_sha`` (a newer push overwrites it). When a top-level deploy of the
environment ends, :func:`operation_ended` (an end listener of app.operations.lifecycle)
takes that commit with a compare-and-set and starts ONE deploy of it. Both sides write
first and look second (the push records, then checks for an active deploy; the end
listener runs after the deploy is marked ended), so a push racing the end of a deploy is
never lost and never deployed twice.
"""
from __future__ import annotations

import logging
import secrets as _secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import DeployHook, DeployHookDelivery, Environment, Operation
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus
from app.operations.state import ACTIVE

log = logging.getLogger(__name__)

OUTCOMES = ("deployed", "coalesced", "ignored", "blocked")


def new_secret() -> str:
    return _secrets.token_urlsafe(32)


def hook_of(env: Environment) -> DeployHook | None:
    return db.session.execute(sa.select(DeployHook).where(
        DeployHook.environment_id == env.id)).scalar_one_or_none()


def enable(env: Environment) -> tuple[DeployHook, str]:
    """Turn the environment's hook on (made on first use); returns it and its secret.

    The secret is returned here and on :func:`rotate` only: pages never show it again."""
    hook = hook_of(env)
    if hook is None:
        secret = new_secret()
        hook = DeployHook(environment_id=env.id, token=_secrets.token_urlsafe(24),
                          secret=secret, enabled=True)
        db.session.add(hook)
        db.session.commit()
        return hook, secret
    hook.enabled = True
    db.session.commit()
    return hook, ""


def rotate(hook: DeployHook) -> str:
    """A new secret (and a new URL token): the old ones stop working at once."""
    secret = new_secret()
    hook.secret = secret
    hook.token = _secrets.token_urlsafe(24)
    hook.rotated_at = utcnow()
    db.session.commit()
    return secret


def disable(hook: DeployHook) -> None:
    hook.enabled = False
    hook.pending_commit_sha = None
    hook.pending_since = None
    db.session.commit()


def active_deploy(env_id: int) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.kind == OperationKind.ENVIRONMENT_DEPLOY.value,
                                   Operation.target_type == "environment",
                                   Operation.target_id == int(env_id),
                                   Operation.parent_id.is_(None),
                                   Operation.status.in_([s.value for s in ACTIVE]))
        .order_by(Operation.id).limit(1)).scalar_one_or_none()


@dataclass
class Answer:
    status: int
    outcome: str
    reason: str
    operation_id: int | None = None

    def json(self) -> dict:
        out = {"outcome": self.outcome, "reason": self.reason}
        if self.operation_id is not None:
            out["operation_id"] = self.operation_id
        return out


def record_delivery(hook: DeployHook, source: str, delivery_id: str, event: str) -> \
        DeployHookDelivery | None:
    """The delivery's row, or None when that delivery id was seen before (a replay)."""
    row = DeployHookDelivery(hook_id=hook.id, delivery_id=delivery_id, source=source,
                             event=event, outcome="ignored", reason="received",
                             received_at=utcnow())
    hook.last_delivery_at = row.received_at
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    return row


def _start(env: Environment, sha: str) -> Operation:
    from app.deploys.service import start_deploy
    return start_deploy(env, None, commit_sha=sha)


def accept_push(hook: DeployHook, row: DeployHookDelivery, ref: str, sha: str) -> Answer:
    """Deploy ``sha`` pushed to ``ref`` if it is the environment's branch (or coalesce)."""
    from app.deploys.service import DeployBlocked
    env = hook.environment
    row.ref, row.commit_sha = ref[:255], sha
    wanted = f"refs/heads/{env.branch}"
    if ref != wanted:
        return _done(row, Answer(202, "ignored", f"A push to {ref} does not deploy: "
                                                 f"{env.application.name}/{env.name} deploys {wanted}."))
    if set(sha) == {"0"}:
        return _done(row, Answer(202, "ignored", f"{ref} was deleted: nothing to deploy."))
    running = active_deploy(env.id)
    if running is None:
        try:
            op = _start(env, sha)
        except DeployBlocked as exc:
            db.session.rollback()
            return _done(row, Answer(409, "blocked", str(exc)[:255]))
        return _done(row, Answer(202, "deployed", f"Deploying {sha[:12]}: operation #{op.id}.",
                                 op.id))
    # Write first, then look again: the running deploy may have ended meanwhile.
    db.session.execute(sa.update(DeployHook).where(DeployHook.id == hook.id)
                       .values(pending_commit_sha=sha, pending_since=utcnow()))
    db.session.commit()
    started = start_pending(env.id)
    if started is not None:
        return _done(row, Answer(202, "deployed", f"Deploying {sha[:12]}: operation "
                                                  f"#{started.id}.", started.id))
    return _done(row, Answer(202, "coalesced",
                             f"Operation #{running.id} is deploying this environment: "
                             f"{sha[:12]} deploys once it ends (newer pushes replace it)."))


def _done(row: DeployHookDelivery, answer: Answer) -> Answer:
    row.outcome, row.reason = answer.outcome, answer.reason[:255]
    row.operation_id = answer.operation_id
    db.session.commit()
    return answer


def start_pending(env_id: int) -> Operation | None:
    """Start the coalesced follow-up deploy if one is waiting and no deploy is active."""
    hook = db.session.execute(sa.select(DeployHook).where(
        DeployHook.environment_id == int(env_id))).scalar_one_or_none()
    if hook is None:
        return None
    db.session.refresh(hook)
    sha = hook.pending_commit_sha
    if not sha or not hook.enabled or active_deploy(env_id) is not None:
        return None
    taken = db.session.execute(
        sa.update(DeployHook).where(DeployHook.id == hook.id,
                                    DeployHook.pending_commit_sha == sha)
        .values(pending_commit_sha=None, pending_since=None)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if taken.rowcount != 1:
        return None  # another process took it (or a newer push replaced it: it decides)
    db.session.refresh(hook)
    from app.deploys.service import DeployBlocked
    try:
        return _start(hook.environment, sha)
    except DeployBlocked as exc:
        db.session.rollback()
        log.warning("follow-up deploy of environment %s blocked: %s", env_id, exc)
        return None


def operation_ended(op: Operation) -> None:
    """End listener: a deploy of an environment ended, start its follow-up if any."""
    if OperationKind(op.kind) is not OperationKind.ENVIRONMENT_DEPLOY or \
            op.target_type != "environment" or not OperationStatus(op.status).terminal:
        return
    start_pending(op.target_id)


def webhook_url(hook: DeployHook) -> str:
    from flask import url_for
    return url_for("hooks.receive", token=hook.token, _external=True)
