"""operation kind for one-off commands (issue 17 section 2)

command_run joins the ``operationkind`` CHECK constraint of ``operations.kind``. The switch
(in place on SQLite, drop/create elsewhere) is a copy of 3f9a2c7d1e64's: Alembic loads
revision files by path, so one cannot import the other.

Revision ID: d41c7e9a2f58
Revises: a41c9e2f7b58
Create Date: 2026-12-02 14:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'd41c7e9a2f58'
down_revision = 'a41c9e2f7b58'
branch_labels = None
depends_on = None

OLD = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
       'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
       'credential_rotation', 'repository_verify', 'host_key_scan', 'image_check',
       'sandbox_start', 'provider_sync', 'server_delete', 'database_backup', 'database_restore']
ADDED = ['command_run']
NEW = OLD + ADDED


def _in(values) -> str:
    return "kind IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _switch(old, new):
    if op.get_bind().dialect.name == 'sqlite':
        _switch_sqlite(old, new)
    else:
        op.drop_constraint('operationkind', 'operations', type_='check')
        op.create_check_constraint('operationkind', 'operations',
                                   sa.column('kind').in_(new))


def _switch_sqlite(old, new):
    """Rewrite the CHECK clause in the stored schema, in place.

    A batch copy of ``operations`` would DROP the table, and with foreign keys on (Keystone
    turns them on for every SQLite connection, and PRAGMA foreign_keys cannot change inside
    the migration's transaction) that DROP deletes every step, lock and child operation by
    ON DELETE CASCADE. Changing a CHECK's list does not change how rows are stored, which
    is the case SQLite documents for editing sqlite_master under writable_schema; every row
    is checked against the new list first, and schema_version is bumped so connections
    reload the schema.
    """
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'operations'").scalar()
    if _in(old) not in sql:
        raise RuntimeError("operations.kind has an unexpected CHECK constraint; not changing it")
    outside = bind.execute(sa.text("SELECT count(*) FROM operations WHERE kind NOT IN :kinds")
                           .bindparams(sa.bindparam("kinds", expanding=True)),
                           {"kinds": list(new)}).scalar()
    if outside:
        raise RuntimeError(f"{outside} operation(s) have a kind outside the new list")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                             "AND name = 'operations'"), {"sql": sql.replace(_in(old), _in(new))})
        bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
    assert bind.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def upgrade():
    _switch(OLD, NEW)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED)))
    _switch(NEW, OLD)
