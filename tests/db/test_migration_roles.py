"""Migration f7a1c3e9b260: roles owner/admin/deployer/viewer. ``member`` becomes
``deployer``, the CHECK lists exactly the model's roles, new memberships default to
``viewer``, and the way down maps everyone back to the old roles. SQLite (CHECK rewritten
in place) and PostgreSQL (constraint dropped and created)."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.extensions import db
from app.models.enums import MembershipRole
from tests.db.rows import execute as _exec, migration_app, organisation
from tests.db.test_migrations import postgres_admin_url  # noqa: F401  (fixture)

BEFORE = "d41c7e9a2f58"


def _member(user_id: int, role: str | None) -> None:
    _exec("INSERT INTO users (id, email, name, password_hash, is_active_flag, "
          "session_generation, created_at, updated_at) VALUES (:id, :email, '', 'x', :t, 0, "
          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", id=user_id, email=f"u{user_id}@e.com", t=True)
    if role is None:  # the column's default
        _exec("INSERT INTO memberships (organisation_id, user_id, created_at, updated_at) "
              "VALUES (1, :u, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", u=user_id)
    else:
        _exec("INSERT INTO memberships (organisation_id, user_id, role, created_at, updated_at)"
              " VALUES (1, :u, :r, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)", u=user_id, r=role)


def _roles() -> dict[int, str]:
    return dict(_exec("SELECT user_id, role FROM memberships").all())


def _walk(url: str, tmp_path) -> None:
    with migration_app(tmp_path, url).app_context():
        upgrade(revision=BEFORE)
        organisation()
        _member(1, "owner")
        _member(2, "admin")
        _member(3, "member")
        upgrade()
        assert _roles() == {1: "owner", 2: "admin", 3: "deployer"}
        for i, role in enumerate(MembershipRole, start=10):
            _member(i, role.value)
        _member(20, None)
        assert _roles()[20] == "viewer"
        with pytest.raises(sa.exc.IntegrityError):
            _member(21, "member")
        assert "invitations" in sa.inspect(db.engine).get_table_names()
        downgrade(revision=BEFORE)
        roles = _roles()
        assert (roles[1], roles[2], roles[3], roles[20]) == ("owner", "admin", "member",
                                                             "member")
        with pytest.raises(sa.exc.IntegrityError):
            _member(22, "viewer")
        assert "invitations" not in sa.inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_roles_migration_on_sqlite(tmp_path):
    _walk(f"sqlite:///{tmp_path / 'k.db'}", tmp_path)


def test_roles_migration_on_postgresql(tmp_path, postgres_admin_url):  # noqa: F811
    name = f"keystone_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        _walk(postgres_admin_url.rsplit("/", 1)[0] + "/" + name, tmp_path)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
