"""Migration b2e8d4f61c93 (issue 23): the housekeeping kind, the pruned artifact status,
the retention table and the log archive, without losing a row on the way up or down."""
from __future__ import annotations

import zlib

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from tests.db.rows import NOW, execute, migration_app, operation, organisation, scalar, step

BEFORE = "d41c7e9a2f58"


def _artifact(id_: int, status: str):
    execute("INSERT INTO build_artifacts (id, environment_id, commit_sha, config_hash, image_tag,"
            f" status, metadata, created_at, updated_at) VALUES (:id, 1, 'c', 'h', 't', :s, '{{}}',"
            f" {NOW}, {NOW})", id=id_, s=status)


def test_up_and_down_keep_every_row(tmp_path):
    with migration_app(tmp_path).app_context():
        upgrade(revision=BEFORE)
        organisation()
        execute("INSERT INTO applications (id, organisation_id, name, repository_url, "
              "repository_type, default_branch, repository_branches, created_at, updated_at) "
              f"VALUES (1, 1, 'a', 'git@x:y.git', 'git', 'main', '[]', {NOW}, {NOW})")
        execute("INSERT INTO environments (id, application_id, name, branch, status, "
              "scheduler_enabled, scheduler_mode, build_config, created_at, updated_at) "
              f"VALUES (1, 1, 'p', 'main', 'new', 1, 'single', '{{}}', {NOW}, {NOW})")
        _artifact(1, "ready")
        operation(1, "environment_deploy")
        step(1, 1)
        with pytest.raises(sa.exc.IntegrityError):
            _artifact(2, "pruned")
        upgrade()
        assert scalar("SELECT count(*) FROM operation_steps") == 1      # nothing cascaded
        _artifact(2, "pruned")
        operation(2, "housekeeping")
        execute(f"INSERT INTO environment_retention (environment_id, keep_artifacts, created_at, "
              f"updated_at) VALUES (1, 3, {NOW}, {NOW})")
        execute(f"INSERT INTO operation_log_archives (step_id, logs, size, archived_at) VALUES "
              f"(1, :l, 9, {NOW})", l=zlib.compress(b"old line\n"))
        with pytest.raises(sa.exc.IntegrityError):
            _artifact(3, "deleted")
        downgrade(revision=BEFORE)
        assert scalar("SELECT logs FROM operation_steps WHERE id = 1") == "old line\n"
        assert scalar("SELECT status FROM build_artifacts WHERE id = 2") == "failed"
        assert scalar("SELECT count(*) FROM operations") == 1           # housekeeping rows go
        assert scalar("SELECT count(*) FROM operation_steps") == 1
        with pytest.raises(sa.exc.IntegrityError):
            operation(3, "housekeeping")
        db.engine.dispose()
