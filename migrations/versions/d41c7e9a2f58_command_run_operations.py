"""operation kind for one-off commands (issue 17 section 2)

command_run joins the ``operationkind`` CHECK constraint of ``operations.kind``. The switch
(in place on SQLite, drop/create elsewhere) is :func:`app.migration_support.switch_check_list`,
shared by every revision that changes such a list.

Revision ID: d41c7e9a2f58
Revises: a41c9e2f7b58
Create Date: 2026-12-02 14:45:00

"""
from alembic import op
import sqlalchemy as sa

from app.migration_support import switch_check_list


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


def upgrade():
    switch_check_list('operations', 'kind', 'operationkind', OLD, NEW)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED)))
    switch_check_list('operations', 'kind', 'operationkind', NEW, OLD)
