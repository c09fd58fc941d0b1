"""operation kinds for the network checks that left the web request (issue 16.3)

repository_verify, host_key_scan, image_check, sandbox_start, provider_sync and
server_delete join the ``operationkind`` CHECK constraint of ``operations.kind``.

Revision ID: 3f9a2c7d1e64
Revises: 5e7c1a9d3b20
Create Date: 2026-12-02 10:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '3f9a2c7d1e64'
down_revision = '5e7c1a9d3b20'
branch_labels = None
depends_on = None

OLD = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
       'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
       'credential_rotation']
ADDED = ['repository_verify', 'host_key_scan', 'image_check', 'sandbox_start', 'provider_sync',
         'server_delete']
NEW = OLD + ADDED


def _kind(values):
    return sa.Enum(*values, name='operationkind', native_enum=False, create_constraint=True,
                   length=32)


def _switch(old, new):
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite cannot alter a constraint: the batch copies the table with the new one.
        with op.batch_alter_table('operations', recreate='always') as batch_op:
            batch_op.alter_column('kind', existing_type=_kind(old), type_=_kind(new),
                                  existing_nullable=False)
    else:
        op.drop_constraint('operationkind', 'operations', type_='check')
        op.create_check_constraint('operationkind', 'operations',
                                   sa.column('kind').in_(new))


def upgrade():
    _switch(OLD, NEW)


def downgrade():
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED)))
    _switch(NEW, OLD)
