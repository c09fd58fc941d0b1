"""Migration b2e8d4f61c93 (issue 23): the housekeeping kind, the pruned artifact status,
the retention table and the log archive, without losing a row on the way up or down."""
from __future__ import annotations

import zlib

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import KEYS

BEFORE = "d41c7e9a2f58"
NOW = "CURRENT_TIMESTAMP"


def _exec(sql: str, **params):
    with db.engine.begin() as conn:
        return conn.execute(sa.text(sql), params)


def _scalar(sql: str, **params):
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _artifact(id_: int, status: str):
    _exec("INSERT INTO build_artifacts (id, environment_id, commit_sha, config_hash, image_tag,"
          f" status, metadata, created_at, updated_at) VALUES (:id, 1, 'c', 'h', 't', :s, '{{}}',"
          f" {NOW}, {NOW})", id=id_, s=status)


def _operation(id_: int, kind: str):
    _exec("INSERT INTO operations (id, organisation_id, hash, kind, target_type, target_id,"
          " status, timeout_seconds, lock_keys, params, result, created_at, updated_at)"
          f" VALUES (:id, 1, :h, :k, 'server', 1, 'succeeded', 1, '[]', '{{}}', '{{}}', {NOW},"
          f" {NOW})", id=id_, h=f"h{id_}", k=kind)


def test_up_and_down_keep_every_row(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade(revision=BEFORE)
        _exec("INSERT INTO organisations (id, name, slug, onboarding_state, created_at, "
              f"updated_at) VALUES (1, 'o', 'o', '{{}}', {NOW}, {NOW})")
        _exec("INSERT INTO applications (id, organisation_id, name, repository_url, "
              "repository_type, default_branch, repository_branches, created_at, updated_at) "
              f"VALUES (1, 1, 'a', 'git@x:y.git', 'git', 'main', '[]', {NOW}, {NOW})")
        _exec("INSERT INTO environments (id, application_id, name, branch, status, "
              "scheduler_enabled, scheduler_mode, build_config, created_at, updated_at) "
              f"VALUES (1, 1, 'p', 'main', 'new', 1, 'single', '{{}}', {NOW}, {NOW})")
        _artifact(1, "ready")
        _operation(1, "environment_deploy")
        _exec("INSERT INTO operation_steps (id, operation_id, name, \"order\", status, logs, "
              f"error_logs, is_cleanup, created_at, updated_at) VALUES (1, 1, 's', 1, "
              f"'succeeded', '', '', 0, {NOW}, {NOW})")
        with pytest.raises(sa.exc.IntegrityError):
            _artifact(2, "pruned")
        upgrade()
        assert _scalar("SELECT count(*) FROM operation_steps") == 1      # nothing cascaded
        _artifact(2, "pruned")
        _operation(2, "housekeeping")
        _exec(f"INSERT INTO environment_retention (environment_id, keep_artifacts, created_at, "
              f"updated_at) VALUES (1, 3, {NOW}, {NOW})")
        _exec(f"INSERT INTO operation_log_archives (step_id, logs, size, archived_at) VALUES "
              f"(1, :l, 9, {NOW})", l=zlib.compress(b"old line\n"))
        with pytest.raises(sa.exc.IntegrityError):
            _artifact(3, "deleted")
        downgrade(revision=BEFORE)
        assert _scalar("SELECT logs FROM operation_steps WHERE id = 1") == "old line\n"
        assert _scalar("SELECT status FROM build_artifacts WHERE id = 2") == "failed"
        assert _scalar("SELECT count(*) FROM operations") == 1           # housekeeping rows go
        assert _scalar("SELECT count(*) FROM operation_steps") == 1
        with pytest.raises(sa.exc.IntegrityError):
            _operation(3, "housekeeping")
        db.engine.dispose()
