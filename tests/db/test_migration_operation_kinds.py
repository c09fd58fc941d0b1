"""Migration 3f9a2c7d1e64 widens operations.kind's CHECK for the network-check kinds
without losing history: on SQLite (foreign keys on) a table copy would cascade-delete
every step and child operation, so the CHECK is rewritten in place."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from tests.db.rows import counts, migration_app, operation, organisation, step

BEFORE = "7c2f9a1d4e60"


def test_upgrade_keeps_steps_and_children_and_accepts_the_new_kinds(tmp_path):
    with migration_app(tmp_path).app_context():
        upgrade(revision=BEFORE)
        organisation()
        operation(1, "environment_deploy")
        operation(2, "service_deploy", parent=1)
        step(1, 1)
        assert counts() == (2, 1)
        upgrade()
        assert counts() == (2, 1)                       # nothing cascaded away
        for i, kind in enumerate(("repository_verify", "host_key_scan", "image_check",
                                  "sandbox_start", "provider_sync", "server_delete"), start=3):
            operation(i, kind)
        with pytest.raises(sa.exc.IntegrityError):
            operation(99, "rm_rf")
        downgrade(revision=BEFORE)
        assert counts() == (2, 1)                       # only the new kinds' rows went
        with pytest.raises(sa.exc.IntegrityError):    # the old schema refuses a new kind
            operation(100, "image_check")
        db.engine.dispose()


def test_at_head_the_check_accepts_exactly_the_model_s_kinds(tmp_path):
    """Migrations that widen the CHECK are written in parallel branches and chained later;
    at head it must list every OperationKind (a kind missing here fails its first insert)."""
    from app.models.enums import OperationKind
    with migration_app(tmp_path).app_context():
        upgrade()
        organisation()
        for i, kind in enumerate(OperationKind, start=1):
            operation(i, kind.value)
        with pytest.raises(sa.exc.IntegrityError):
            operation(999, "rm_rf")
        db.engine.dispose()
