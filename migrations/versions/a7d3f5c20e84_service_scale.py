"""service_scale (issue 20.2): replicas per server up or down without a cutover

* ``service_scale`` joins the ``operationkind`` CHECK of ``operations.kind``.

Nothing else: ``services.desired_replicas`` and the resource limits
(``services.default_cpu_limit``, ``services.default_memory_limit_mb``) exist already. The CHECK
switch is :func:`app.migration_support.switch_check_list` (in place on SQLite: a table copy
would cascade-delete every step and child; drop/create elsewhere).

Revision ID: a7d3f5c20e84
Revises: b2e8d4f61c93
Create Date: 2026-12-02 23:20:00

"""
from alembic import op
import sqlalchemy as sa

from app.migration_support import switch_check_list


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


def upgrade():
    switch_check_list('operations', 'kind', 'operationkind', OLD_KINDS, OLD_KINDS + ADDED_KINDS)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED_KINDS)))
    switch_check_list('operations', 'kind', 'operationkind', OLD_KINDS + ADDED_KINDS, OLD_KINDS)
