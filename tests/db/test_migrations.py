"""The one Alembic chain builds the whole schema from empty, on SQLite and PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import KEYS

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_TABLES = {
    "organisations", "users", "memberships", "providers", "servers", "applications",
    "environments", "services", "service_replicas", "service_slices",
    "environment_attachments", "environment_variables", "endpoints", "operations",
    "operation_steps", "operation_locks", "registries", "build_artifacts", "audit_events",
    "api_tokens",
}


@pytest.fixture(scope="module")
def postgres_admin_url():
    """Debian's PostgreSQL, started by scripts/ensure-postgres.sh (installed if missing)."""
    url = os.environ.get("KEYSTONE_TEST_POSTGRES_URL")
    if not url:
        proc = subprocess.run([str(ROOT / "scripts/ensure-postgres.sh")], capture_output=True,
                              text=True)
        assert proc.returncode == 0, ("PostgreSQL is needed for the migration tests; "
                                      "scripts/ensure-postgres.sh failed:\n" + proc.stderr)
        url = proc.stdout.strip().splitlines()[-1]
    return url


def _check_schema(url: str, tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "ENCRYPTION_KEYS": KEYS,
                      "SECRET_KEY": "t", "TESTING": True}, instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade()
        inspector = sa.inspect(db.engine)
        tables = set(inspector.get_table_names())
        assert EXPECTED_TABLES <= tables
        # every foreign key is indexed
        for table in EXPECTED_TABLES:
            indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
            indexed |= {tuple(uc["column_names"]) for uc in inspector.get_unique_constraints(table)}
            for fk in inspector.get_foreign_keys(table):
                cols = tuple(fk["constrained_columns"])
                assert any(ix[:len(cols)] == cols for ix in indexed), f"{table}.{cols} not indexed"
        # check constraints refuse unknown enum values
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organisations (name, slug, onboarding_state, "
                                 "created_at, updated_at) VALUES ('o', 'o', '{}', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO operations (organisation_id, hash, kind, target_type, target_id,"
                    " status, timeout_seconds, lock_keys, params, result, created_at, updated_at)"
                    " VALUES (1, 'h', 'rm_rf', 'x', 1, 'pending', 1, '[]', '{}', '{}',"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        downgrade(revision="base")
        assert not (EXPECTED_TABLES & set(sa.inspect(db.engine).get_table_names()))
        db.engine.dispose()


def test_migrations_on_empty_sqlite(tmp_path):
    _check_schema(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)


def test_migrations_on_empty_postgresql(tmp_path, postgres_admin_url):
    name = f"keystone_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _check_schema(postgres_admin_url.rsplit("/", 1)[0] + "/" + name, tmp_path)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
