"""operation kinds for the network checks that left the web request (issue 16.3)

repository_verify, host_key_scan, image_check, sandbox_start, provider_sync and
server_delete join the ``operationkind`` CHECK constraint of ``operations.kind``.

Revision ID: 3f9a2c7d1e64
Revises: 7c2f9a1d4e60
Create Date: 2026-12-02 10:10:00

"""
from alembic import op
import sqlalchemy as sa

from app.migration_support import switch_check_list


revision = '3f9a2c7d1e64'
down_revision = '7c2f9a1d4e60'
branch_labels = None
depends_on = None

OLD = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
       'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
       'credential_rotation']
ADDED = ['repository_verify', 'host_key_scan', 'image_check', 'sandbox_start', 'provider_sync',
         'server_delete']
NEW = OLD + ADDED


def upgrade():
    switch_check_list('operations', 'kind', 'operationkind', OLD, NEW)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED)))
    switch_check_list('operations', 'kind', 'operationkind', NEW, OLD)
