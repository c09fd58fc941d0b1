"""The one Alembic chain builds the whole schema from empty, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from tests.db.rows import migration_app

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
    with migration_app(tmp_path, url).app_context():
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


def test_the_build_page_health_path_moves_to_the_web_service(tmp_path):
    """Migration 7c2f9a1d4e60: build_config.health_path becomes the web service's health.path."""
    with migration_app(tmp_path).app_context():
        # The rows are made with today's models (at head), then the schema goes back to
        # before the data migration: the models' columns added later (users, organisations)
        # would not exist at 3f9a2c7e1b44.
        upgrade()
        from tests.factories import build_org
        cases = {"/healthz": "{}", "/up": "{}", "/mine": '{"health": {"path": "/own"}}'}
        env_ids = []
        for n, (path, web_config) in enumerate(cases.items()):
            g = build_org(email=f"m{n}@example.com", organisation=f"Org {n}", with_backup=False)
            db.session.commit()
            with db.engine.begin() as conn:
                conn.execute(sa.text("UPDATE environments SET build_config = :b WHERE id = :id"),
                             {"b": json.dumps({"health_path": path, "php_version": "8.3"}),
                              "id": g.environment.id})
                conn.execute(sa.text("UPDATE services SET config = :c WHERE id = :id"),
                             {"c": web_config, "id": g.web.id})
            env_ids.append((g.environment.id, g.web.id))
        db.session.remove()
        downgrade(revision="3f9a2c7e1b44")
        with db.engine.begin() as conn:
            for (env_id, web_id), (path, web_config) in zip(env_ids, cases.items()):
                conn.execute(sa.text("UPDATE environments SET build_config = :b WHERE id = :id"),
                             {"b": json.dumps({"health_path": path, "php_version": "8.3"}),
                              "id": env_id})
                conn.execute(sa.text("UPDATE services SET config = :c WHERE id = :id"),
                             {"c": web_config, "id": web_id})
        upgrade(revision="7c2f9a1d4e60")
        with db.engine.connect() as conn:
            builds = dict(conn.execute(sa.text("SELECT id, build_config FROM environments")).all())
            configs = dict(conn.execute(sa.text("SELECT id, config FROM services")).all())
        load = (lambda v: v if isinstance(v, dict) else json.loads(v))
        assert all(load(b) == {"php_version": "8.3"} for b in builds.values())
        (e1, w1), (e2, w2), (e3, w3) = env_ids
        assert load(configs[w1]) == {"health": {"path": "/healthz"}}
        assert load(configs[w2]) == {}                             # the default stays implicit
        assert load(configs[w3]) == {"health": {"path": "/own"}}   # the service's own wins
        db.engine.dispose()
