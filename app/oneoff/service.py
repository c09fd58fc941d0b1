"""Start one-off commands, and read what the last ``migrate:status`` said (no network).

Views, the API and tests call :func:`start_command`; the ``command_run`` handler
(:mod:`app.oneoff.handlers`) does the work in the worker.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.deploys.planning import PlanError, migration_settings
from app.deploys.service import primary_web
from app.extensions import db
from app.models import Environment, Operation
from app.models.enums import ArtifactStatus, OperationKind, OperationStatus
from app.oneoff.argv import CommandError, display, is_migrate, is_migrate_status, validate_argv
from app.operations import start_operation
from app.operations.registry import timeout_for

MIN_TIMEOUT = 10


def max_timeout() -> int:
    return timeout_for(OperationKind.COMMAND_RUN)


def migration_mode(env: Environment) -> str:
    web = primary_web(env)
    try:
        return migration_settings(web.config if web else {})[0]
    except PlanError:
        return "auto"


def migration_argv(env: Environment) -> list[str]:
    """The web service's configured migration command (SPEC 18), as argv."""
    web = primary_web(env)
    try:
        command = migration_settings(web.config if web else {})[2]
    except PlanError as exc:
        raise CommandError(str(exc)) from None
    from app.oneoff.argv import parse_argv
    return parse_argv(command)


def start_command(env: Environment, argv, user=None, *, timeout_seconds: int | None = None,
                  enqueue: bool = True) -> Operation:
    """One ``command_run`` operation for ``argv`` (a list: already split, never a line).

    Refused (:class:`CommandError`) before anything runs when nothing is deployed. A
    migration holds the environment's lock (it never overlaps a deploy; queued behind
    one); any other command runs at once, beside whatever else is running.
    """
    argv = validate_argv(list(argv))
    artifact = env.current_artifact
    if artifact is None or artifact.status != ArtifactStatus.READY or not artifact.image_digest:
        raise CommandError("Nothing is deployed yet: commands run in a container of the "
                           "current build, so deploy first.")
    if primary_web(env) is None:
        raise CommandError("The environment has no web service to take the build and "
                           "settings from.")
    limit = max_timeout()
    timeout = limit if timeout_seconds is None else int(timeout_seconds)
    if not MIN_TIMEOUT <= timeout <= limit:
        raise CommandError(f"The time limit must be between {MIN_TIMEOUT} s and {limit} s.")
    locks = [f"environment:{env.id}"] if is_migrate(argv) else []
    line = display(argv)
    return start_operation(OperationKind.COMMAND_RUN, target_type="environment",
                           target_id=env.id, organisation_id=env.application.organisation_id,
                           user=user, params={"argv": argv, "artifact_id": artifact.id},
                           lock_keys=locks, summary=f"Run {line}"[:255],
                           timeout_seconds=timeout, enqueue=enqueue)


@dataclass(frozen=True)
class MigrationState:
    """What the environment page says about migrations, from rows only (no network).

    ``pending`` is None when no ``migrate:status`` has run against the current build
    since it was deployed (or the last one failed): unknown, and the page offers the
    check. The check is cheap (one one-off container) but not free, so it is not run
    on every page view: the page shows its age and which build it looked at.
    """
    mode: str
    check: Operation | None
    pending: list[str] | None
    last_migrate: Operation | None

    @property
    def warn(self) -> bool:
        return bool(self.pending)


def _latest(env: Environment, artifact_id: int, predicate) -> Operation | None:
    ops = db.session.execute(
        sa.select(Operation).where(Operation.kind == OperationKind.COMMAND_RUN,
                                   Operation.target_type == "environment",
                                   Operation.target_id == env.id,
                                   Operation.organisation_id == env.application.organisation_id)
        .order_by(Operation.id.desc()).limit(50)).scalars().all()
    for op in ops:
        params = op.params or {}
        if params.get("artifact_id") == artifact_id and predicate(params.get("argv") or []):
            return op
    return None


def migration_state(env: Environment) -> MigrationState:
    mode = migration_mode(env)
    artifact_id = env.current_artifact_id
    if artifact_id is None:
        return MigrationState(mode, None, None, None)
    check = _latest(env, artifact_id, is_migrate_status)
    last_migrate = _latest(env, artifact_id, is_migrate)
    pending = None
    if check is not None and check.status == OperationStatus.SUCCEEDED:
        found = (check.result or {}).get("pending_migrations")
        pending = list(found) if isinstance(found, list) else None
        if pending and last_migrate is not None and last_migrate.id > check.id \
                and last_migrate.status == OperationStatus.SUCCEEDED:
            pending = []   # migrated since the check
    return MigrationState(mode, check, pending, last_migrate)
