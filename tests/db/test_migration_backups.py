"""Migration 9d41c6b2e7a3 (issue 17.3): the backups tables, and database_backup /
database_restore join operations.kind's CHECK in place, keeping history (as 3f9a2c7d1e64)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from tests.db.rows import counts, migration_app, operation, organisation

BEFORE = "e41b7c9a0d58"
MINE = "9d41c6b2e7a3"


def test_backups_migration_up_and_down_keeps_history(tmp_path):
    with migration_app(tmp_path).app_context():
        upgrade(revision=BEFORE)
        organisation()
        operation(1, "service_deploy")
        operation(2, "image_check", parent=1)
        upgrade(revision=MINE)
        assert counts() == (2, 0)
        operation(3, "database_backup")
        operation(4, "database_restore")
        tables = sa.inspect(db.engine).get_table_names()
        assert {"backup_targets", "backup_policies", "backups"} <= set(tables)
        downgrade(revision=BEFORE)
        assert counts() == (2, 0)                       # only the new kinds' rows went
        assert "backups" not in sa.inspect(db.engine).get_table_names()
        with pytest.raises(sa.exc.IntegrityError):
            operation(5, "database_backup")
