"""postgres backups (issue 17.3): targets, per-slice policies, backups

Also adds database_backup and database_restore to the ``operationkind`` CHECK
constraint of ``operations.kind`` (the in-place switch of app.migration_support).

Revision ID: 9d41c6b2e7a3
Revises: e41b7c9a0d58
Create Date: 2026-12-02 14:28:17.445310

"""
from alembic import op
import sqlalchemy as sa

from app.migration_support import switch_check_list


# revision identifiers, used by Alembic.
revision = '9d41c6b2e7a3'
down_revision = 'e41b7c9a0d58'
branch_labels = None
depends_on = None


OLD = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
       'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
       'credential_rotation', 'repository_verify', 'host_key_scan', 'image_check',
       'sandbox_start', 'provider_sync', 'server_delete']
ADDED = ['database_backup', 'database_restore']
NEW = OLD + ADDED


def upgrade():
    switch_check_list('operations', 'kind', 'operationkind', OLD, NEW)
    op.create_table('backup_targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=63), nullable=False),
    sa.Column('kind', sa.Enum('directory', 's3', name='backuptargetkind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('credentials', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_backup_targets_organisation_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_targets')),
    sa.UniqueConstraint('organisation_id', 'name', name=op.f('uq_backup_targets_organisation_id_name'))
    )
    with op.batch_alter_table('backup_targets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backup_targets_organisation_id'), ['organisation_id'], unique=False)

    op.create_table('backup_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('slice_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('frequency', sa.Enum('off', 'hourly', 'daily', 'weekly', name='backupfrequency', native_enum=False, create_constraint=True, length=32), server_default='off', nullable=False),
    sa.Column('keep', sa.Integer(), nullable=False),
    sa.Column('last_scheduled_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['slice_id'], ['service_slices.id'], name=op.f('fk_backup_policies_slice_id_service_slices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['backup_targets.id'], name=op.f('fk_backup_policies_target_id_backup_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_policies')),
    sa.UniqueConstraint('slice_id', name=op.f('uq_backup_policies_slice_id'))
    )
    with op.batch_alter_table('backup_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backup_policies_target_id'), ['target_id'], unique=False)

    op.create_table('backups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('slice_id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('operation_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.Enum('running', 'succeeded', 'failed', 'deleted', name='backupstatus', native_enum=False, create_constraint=True, length=32), server_default='running', nullable=False),
    sa.Column('trigger', sa.Enum('manual', 'scheduled', 'before_update', name='backuptrigger', native_enum=False, create_constraint=True, length=32), server_default='manual', nullable=False),
    sa.Column('database', sa.String(length=63), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], name=op.f('fk_backups_operation_id_operations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_backups_organisation_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['slice_id'], ['service_slices.id'], name=op.f('fk_backups_slice_id_service_slices'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['target_id'], ['backup_targets.id'], name=op.f('fk_backups_target_id_backup_targets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backups'))
    )
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backups_operation_id'), ['operation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_backups_organisation_id'), ['organisation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_backups_slice_id'), ['slice_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_backups_target_id'), ['target_id'], unique=False)



def downgrade():
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backups_target_id'))
        batch_op.drop_index(batch_op.f('ix_backups_slice_id'))
        batch_op.drop_index(batch_op.f('ix_backups_organisation_id'))
        batch_op.drop_index(batch_op.f('ix_backups_operation_id'))

    op.drop_table('backups')
    with op.batch_alter_table('backup_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backup_policies_target_id'))

    op.drop_table('backup_policies')
    with op.batch_alter_table('backup_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backup_targets_organisation_id'))

    op.drop_table('backup_targets')
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED)))
    switch_check_list('operations', 'kind', 'operationkind', NEW, OLD)
