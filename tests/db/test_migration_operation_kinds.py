"""Migration 3f9a2c7d1e64 widens operations.kind's CHECK for the network-check kinds
without losing history: on SQLite (foreign keys on) a table copy would cascade-delete
every step and child operation, so the CHECK is rewritten in place."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import KEYS

BEFORE = "7c2f9a1d4e60"
ROW = ("INSERT INTO operations (id, organisation_id, parent_id, hash, kind, target_type,"
       " target_id, status, timeout_seconds, lock_keys, params, result, created_at, updated_at)"
       " VALUES (:id, 1, :parent, :hash, :kind, 'x', 1, 'succeeded', 1, '[]', '{}', '{}',"
       " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")


def _insert(kind: str, id_: int, parent: int | None = None) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(ROW), {"id": id_, "parent": parent, "hash": f"h{id_}", "kind": kind})


def _counts() -> tuple[int, int]:
    with db.engine.connect() as conn:
        return (conn.execute(sa.text("SELECT count(*) FROM operations")).scalar(),
                conn.execute(sa.text("SELECT count(*) FROM operation_steps")).scalar())


def test_upgrade_keeps_steps_and_children_and_accepts_the_new_kinds(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade(revision=BEFORE)
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organisations (id, name, slug, onboarding_state, "
                                 "created_at, updated_at) VALUES (1, 'o', 'o', '{}', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        _insert("environment_deploy", 1)
        _insert("service_deploy", 2, parent=1)
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO operation_steps (operation_id, name, \"order\", status, logs,"
                " error_logs, is_cleanup, created_at, updated_at) VALUES (1, 's', 1,"
                " 'succeeded', '', '', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        assert _counts() == (2, 1)
        upgrade()
        assert _counts() == (2, 1)                      # nothing cascaded away
        for i, kind in enumerate(("repository_verify", "host_key_scan", "image_check",
                                  "sandbox_start", "provider_sync", "server_delete"), start=3):
            _insert(kind, i)
        with pytest.raises(sa.exc.IntegrityError):
            _insert("rm_rf", 99)
        downgrade(revision=BEFORE)
        assert _counts() == (2, 1)                      # only the new kinds' rows went
        with pytest.raises(sa.exc.IntegrityError):    # the old schema refuses a new kind
            _insert("image_check", 100)
        db.engine.dispose()


def test_at_head_the_check_accepts_exactly_the_model_s_kinds(tmp_path):
    """Migrations that widen the CHECK are written in parallel branches and chained later;
    at head it must list every OperationKind (a kind missing here fails its first insert)."""
    from app.models.enums import OperationKind
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organisations (id, name, slug, onboarding_state, "
                                 "created_at, updated_at) VALUES (1, 'o', 'o', '{}', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        for i, kind in enumerate(OperationKind, start=1):
            _insert(kind.value, i)
        with pytest.raises(sa.exc.IntegrityError):
            _insert("rm_rf", 999)
