"""Deployment history of an environment (issue 17, section 6): rows only, no network.

Each top-level ``environment_deploy`` shows its commit (subject and author, read from
the fetched commit when it was built: ``BuildArtifact.meta["commit"]``), who started
it, how long it took and how it ended, a compare link to the deploy before it (GitHub
and Gitea repository URLs), and "Redeploy this", which is the rollback action: it
reuses the artifact (app.blueprints.deploys.rollback).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import BuildArtifact, Environment, Operation
from app.models.enums import ArtifactStatus, OperationKind, RepositoryType
from app.repositories.validation import ValidationError, is_commit_sha, parse_repository_url

_PATH_RE = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+")
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+")


def repository_web_url(url: str, repository_type) -> str | None:
    """``https://host/owner/name`` for a GitHub or Gitea SSH URL; None for other hosts."""
    if RepositoryType(repository_type) not in (RepositoryType.GITHUB, RepositoryType.GITEA):
        return None
    try:
        repo = parse_repository_url(url)
    except (ValidationError, ValueError):
        return None
    path = repo.path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    if not _PATH_RE.fullmatch(path) or not _HOST_RE.fullmatch(repo.host):
        return None
    return f"https://{repo.host}/{path}"


def compare_url(url: str, repository_type, base: str | None, head: str | None) -> str | None:
    """The provider's compare page from ``base`` to ``head`` (both full commit shas)."""
    web = repository_web_url(url, repository_type)
    if web is None or not base or not head or base == head:
        return None
    if not (is_commit_sha(base) and is_commit_sha(head)):
        return None
    return f"{web}/compare/{base}...{head}"


@dataclass(frozen=True)
class HistoryRow:
    op: Operation
    commit: str | None
    message: str | None
    author: str | None
    started_by: str | None
    duration: float | None
    result: str
    compare_url: str | None
    artifact_id: int | None
    redeployable: bool
    current: bool


@functools.lru_cache(maxsize=8)
def _history_query(limit: int):
    """:func:`deploy_history`'s statement, built once per limit (the environment page asks
    on every view); the organisation and the environment are bound per call."""
    return (sa.select(Operation).where(
        Operation.organisation_id == sa.bindparam("org_id", type_=sa.Integer),
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY,
        Operation.target_type == "environment",
        Operation.target_id == sa.bindparam("env_id", type_=sa.Integer),
        Operation.parent_id.is_(None))
        .options(selectinload(Operation.created_by))
        .order_by(Operation.id.desc()).limit(limit))


def deploy_history(env: Environment, limit: int = 20) -> list[HistoryRow]:
    ops = db.session.execute(_history_query(limit + 1), {
        "org_id": env.application.organisation_id, "env_id": env.id}).scalars().all()
    ids = {int((op.result or {}).get("artifact_id") or (op.params or {}).get("artifact_id") or 0)
           for op in ops} - {0}
    artifacts = {a.id: a for a in db.session.execute(
        sa.select(BuildArtifact).where(BuildArtifact.id.in_(ids))).scalars()} if ids else {}
    app = env.application
    rows: list[HistoryRow] = []
    for i, op in enumerate(ops[:limit]):
        result = op.result or {}
        aid = int(result.get("artifact_id") or (op.params or {}).get("artifact_id") or 0) or None
        artifact = artifacts.get(aid)
        info = ((artifact.meta or {}).get("commit") or {}) if artifact else {}
        commit = result.get("commit") or (artifact.commit_sha if artifact else None)
        before = next((o for o in ops[i + 1:] if (o.result or {}).get("commit")
                       and o.status.value == "succeeded"), None)
        base = (before.result or {}).get("commit") if before else None
        user = op.created_by
        rows.append(HistoryRow(
            op=op, commit=commit,
            message=result.get("commit_message") or info.get("message"),
            author=result.get("commit_author") or info.get("author"),
            started_by=(user.name or user.email) if user is not None else None,
            duration=op.duration_seconds if op.started_at else None,
            result=op.status.value,
            compare_url=compare_url(app.repository_url, app.repository_type, base, commit),
            artifact_id=aid,
            redeployable=bool(artifact is not None and artifact.status == ArtifactStatus.READY
                              and artifact.image_digest),
            current=bool(aid and aid == env.current_artifact_id)))
    return rows
