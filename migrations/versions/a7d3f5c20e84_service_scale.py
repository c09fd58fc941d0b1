"""service_scale (issue 20.2): replicas per server up or down without a cutover

* ``service_scale`` joins the ``operationkind`` CHECK of ``operations.kind``.

Nothing else: ``services.desired_replicas`` and the resource limits
(``services.default_cpu_limit``, ``services.default_memory_limit_mb``) exist already. The CHECK
switch is a copy of b2e8d4f61c93's (in place on SQLite: a table copy would cascade-delete
every step and child; drop/create elsewhere).

Revision ID: a7d3f5c20e84
Revises: b2e8d4f61c93
Create Date: 2026-12-02 23:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'a7d3f5c20e84'
down_revision = 'b2e8d4f61c93'
branch_labels = None
depends_on = None

OLD_KINDS = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
             'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
             'credential_rotation', 'repository_verify', 'host_key_scan', 'image_check',
             'sandbox_start', 'provider_sync', 'server_delete', 'database_backup',
             'database_restore', 'command_run', 'housekeeping']
ADDED_KINDS = ['service_scale']


def _in(column, values) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _switch(table, column, name, old, new):
    if op.get_bind().dialect.name == 'sqlite':
        _switch_sqlite(table, column, old, new)
    else:
        op.drop_constraint(name, table, type_='check')
        op.create_check_constraint(name, table, sa.column(column).in_(new))


def _switch_sqlite(table, column, old, new):
    """Rewrite the CHECK clause in the stored schema, in place (see d41c7e9a2f58)."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    if _in(column, old) not in sql:
        raise RuntimeError(f"{table}.{column} has an unexpected CHECK constraint; not changing it")
    outside = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {column} NOT IN :v")
                           .bindparams(sa.bindparam("v", expanding=True)),
                           {"v": list(new)}).scalar()
    if outside:
        raise RuntimeError(f"{outside} row(s) of {table} have a {column} outside the new list")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    try:
        bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                             "AND name = :name"),
                     {"sql": sql.replace(_in(column, old), _in(column, new)), "name": table})
        bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema=OFF")
    assert bind.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def upgrade():
    _switch('operations', 'kind', 'operationkind', OLD_KINDS, OLD_KINDS + ADDED_KINDS)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED_KINDS)))
    _switch('operations', 'kind', 'operationkind', OLD_KINDS + ADDED_KINDS, OLD_KINDS)
