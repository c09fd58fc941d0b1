"""Migration 9d41c6b2e7a3 (issue 17.3): the backups tables, and database_backup /
database_restore join operations.kind's CHECK in place, keeping history (as 3f9a2c7d1e64)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import KEYS
from tests.db.test_migration_operation_kinds import _counts, _insert

BEFORE = "e41b7c9a0d58"
MINE = "9d41c6b2e7a3"


def test_backups_migration_up_and_down_keeps_history(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade(revision=BEFORE)
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organisations (id, name, slug, onboarding_state, "
                                 "created_at, updated_at) VALUES (1, 'o', 'o', '{}', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        _insert("service_deploy", 1)
        _insert("image_check", 2, parent=1)
        upgrade(revision=MINE)
        assert _counts() == (2, 0)
        _insert("database_backup", 3)
        _insert("database_restore", 4)
        tables = sa.inspect(db.engine).get_table_names()
        assert {"backup_targets", "backup_policies", "backups"} <= set(tables)
        downgrade(revision=BEFORE)
        assert _counts() == (2, 0)                      # only the new kinds' rows went
        assert "backups" not in sa.inspect(db.engine).get_table_names()
        with pytest.raises(sa.exc.IntegrityError):
            _insert("database_backup", 5)
