"""What the migration tests share: an app on a fresh database, raw SQL, and the few rows
they insert at an old revision (plain SQL, never today's models, which may have columns the
old schema lacks)."""
from __future__ import annotations

import sqlalchemy as sa

from app import create_app
from app.extensions import db
from tests.conftest import KEYS

NOW = "CURRENT_TIMESTAMP"


def migration_app(tmp_path, url: str | None = None):
    """An app on ``url`` (default: a new SQLite file in ``tmp_path``), not migrated yet."""
    return create_app({"SQLALCHEMY_DATABASE_URI": url or f"sqlite:///{tmp_path / 'k.db'}",
                       "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                      instance_path=str(tmp_path / "i"))


def execute(sql: str, **params):
    with db.engine.begin() as conn:
        return conn.execute(sa.text(sql), params)


def scalar(sql: str, **params):
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def organisation(id_: int = 1) -> None:
    execute("INSERT INTO organisations (id, name, slug, onboarding_state, created_at, "
            f"updated_at) VALUES (:id, 'o', :slug, '{{}}', {NOW}, {NOW})", id=id_, slug=f"o{id_}")


def operation(id_: int, kind: str, parent: int | None = None, target_type: str = "x") -> None:
    """An operation of organisation 1 (``kind`` is what the CHECK under test judges)."""
    execute("INSERT INTO operations (id, organisation_id, parent_id, hash, kind, target_type,"
            " target_id, status, timeout_seconds, lock_keys, params, result, created_at,"
            f" updated_at) VALUES (:id, 1, :parent, :h, :k, :t, 1, 'succeeded', 1, '[]', '{{}}',"
            f" '{{}}', {NOW}, {NOW})", id=id_, parent=parent, h=f"h{id_}", k=kind, t=target_type)


def step(id_: int, operation_id: int) -> None:
    execute("INSERT INTO operation_steps (id, operation_id, name, \"order\", status, logs, "
            "error_logs, is_cleanup, created_at, updated_at) VALUES (:id, :op, 's', 1, "
            f"'succeeded', '', '', 0, {NOW}, {NOW})", id=id_, op=operation_id)


def counts() -> tuple[int, int]:
    """(operations, operation steps)."""
    return (scalar("SELECT count(*) FROM operations"),
            scalar("SELECT count(*) FROM operation_steps"))
