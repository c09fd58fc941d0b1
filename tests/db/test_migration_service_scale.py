"""Migration a7d3f5c20e84 (issue 20.2): the service_scale kind joins operations.kind's CHECK,
in place (no step or child is lost), and leaves it again on the way down."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from app.models.enums import OperationKind
from tests.db.rows import migration_app, operation, organisation, scalar, step

BEFORE = "b2e8d4f61c93"


def test_up_and_down_keep_every_row(tmp_path):
    with migration_app(tmp_path).app_context():
        upgrade(revision=BEFORE)
        organisation()
        operation(1, "housekeeping")
        step(1, 1)
        with pytest.raises(sa.exc.IntegrityError):
            operation(2, "service_scale")
        upgrade()
        assert scalar("SELECT count(*) FROM operation_steps") == 1      # nothing cascaded
        for n, kind in enumerate(OperationKind, start=10):               # every kind at head
            operation(n, kind.value)
        with pytest.raises(sa.exc.IntegrityError):
            operation(99, "service_scale_typo")
        downgrade(revision=BEFORE)
        assert scalar("SELECT count(*) FROM operations WHERE kind = 'service_scale'") == 0
        assert scalar("SELECT count(*) FROM operation_steps") == 1
        with pytest.raises(sa.exc.IntegrityError):
            operation(100, "service_scale")
        db.engine.dispose()
