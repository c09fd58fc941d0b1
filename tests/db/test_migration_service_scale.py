"""Migration a7d3f5c20e84 (issue 20.2): the service_scale kind joins operations.kind's CHECK,
in place (no step or child is lost), and leaves it again on the way down."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from app.models.enums import OperationKind
from tests.conftest import KEYS

BEFORE = "b2e8d4f61c93"
NOW = "CURRENT_TIMESTAMP"


def _exec(sql: str, **params):
    with db.engine.begin() as conn:
        return conn.execute(sa.text(sql), params)


def _scalar(sql: str, **params):
    with db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _operation(id_: int, kind: str):
    _exec("INSERT INTO operations (id, organisation_id, hash, kind, target_type, target_id,"
          " status, timeout_seconds, lock_keys, params, result, created_at, updated_at)"
          f" VALUES (:id, 1, :h, :k, 'service', 1, 'succeeded', 1, '[]', '{{}}', '{{}}', {NOW},"
          f" {NOW})", id=id_, h=f"h{id_}", k=kind)


def test_up_and_down_keep_every_row(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
                      "ENCRYPTION_KEYS": KEYS, "SECRET_KEY": "t", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    with app.app_context():
        upgrade(revision=BEFORE)
        _exec("INSERT INTO organisations (id, name, slug, onboarding_state, created_at, "
              f"updated_at) VALUES (1, 'o', 'o', '{{}}', {NOW}, {NOW})")
        _operation(1, "housekeeping")
        _exec("INSERT INTO operation_steps (id, operation_id, name, \"order\", status, logs, "
              f"error_logs, is_cleanup, created_at, updated_at) VALUES (1, 1, 's', 1, "
              f"'succeeded', '', '', 0, {NOW}, {NOW})")
        with pytest.raises(sa.exc.IntegrityError):
            _operation(2, "service_scale")
        upgrade()
        assert _scalar("SELECT count(*) FROM operation_steps") == 1      # nothing cascaded
        for n, kind in enumerate(OperationKind, start=10):               # every kind at head
            _operation(n, kind.value)
        with pytest.raises(sa.exc.IntegrityError):
            _operation(99, "service_scale_typo")
        downgrade(revision=BEFORE)
        assert _scalar("SELECT count(*) FROM operations WHERE kind = 'service_scale'") == 0
        assert _scalar("SELECT count(*) FROM operation_steps") == 1
        with pytest.raises(sa.exc.IntegrityError):
            _operation(100, "service_scale")
        db.engine.dispose()
