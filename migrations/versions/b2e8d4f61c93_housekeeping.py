"""housekeeping (issue 23): operation kind, pruned artifacts, keep per environment, log archive

* ``housekeeping`` joins the ``operationkind`` CHECK of ``operations.kind``;
* ``pruned`` joins the ``artifactstatus`` CHECK of ``build_artifacts.status`` (an artifact
  whose image is gone from the registry and the servers: rollback does not offer it);
* ``environment_retention.keep_artifacts`` (no row: 5): how many artifacts besides the
  running one an environment keeps for rollback (its own table: old-schema tests insert
  environments through today's model);
* ``operation_log_archives``: step logs past the retention, zlib-compressed, out of the
  hot ``operation_steps`` table and still shown on the operation's page.

The CHECK switches are :func:`app.migration_support.switch_check_list` (in place on SQLite:
a table copy would cascade-delete every step and child; drop/create elsewhere). Only new tables are added
(no existing table is copied, for the same reason).

Revision ID: b2e8d4f61c93
Revises: d41c7e9a2f58
Create Date: 2026-12-02 19:40:00

"""
from alembic import op
import sqlalchemy as sa

from app.migration_support import switch_check_list


revision = 'b2e8d4f61c93'
down_revision = 'c2e8a4f61b93'
branch_labels = None
depends_on = None

OLD_KINDS = ['server_provision', 'service_deploy', 'replica_deploy', 'slice_provision',
             'slice_configure', 'environment_deploy', 'gateway_cutover', 'config_change',
             'credential_rotation', 'repository_verify', 'host_key_scan', 'image_check',
             'sandbox_start', 'provider_sync', 'server_delete', 'database_backup',
             'database_restore', 'command_run']
ADDED_KINDS = ['housekeeping']
OLD_STATUSES = ['pending', 'building', 'ready', 'failed']
ADDED_STATUSES = ['pruned']


def upgrade():
    switch_check_list('operations', 'kind', 'operationkind', OLD_KINDS, OLD_KINDS + ADDED_KINDS)
    switch_check_list('build_artifacts', 'status', 'artifactstatus', OLD_STATUSES,
            OLD_STATUSES + ADDED_STATUSES)
    op.create_table(
        'environment_retention',
        sa.Column('environment_id', sa.Integer(), nullable=False),
        sa.Column('keep_artifacts', sa.Integer(), server_default='5', nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['environment_id'], ['environments.id'],
                                name=op.f('fk_environment_retention_environment_id_environments'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('environment_id', name=op.f('pk_environment_retention')))
    op.create_table(
        'operation_log_archives',
        sa.Column('step_id', sa.Integer(), nullable=False),
        sa.Column('logs', sa.LargeBinary(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('archived_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['step_id'], ['operation_steps.id'],
                                name=op.f('fk_operation_log_archives_step_id_operation_steps'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('step_id', name=op.f('pk_operation_log_archives')))


def downgrade():
    # Archived logs go back into their steps before the archive table goes.
    import zlib
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT step_id, logs FROM operation_log_archives")).all()
    for step_id, data in rows:
        bind.execute(sa.text("UPDATE operation_steps SET logs = :l WHERE id = :i"),
                     {"l": zlib.decompress(bytes(data)).decode("utf-8", "replace"), "i": step_id})
    op.drop_table('operation_log_archives')
    op.drop_table('environment_retention')
    op.execute(sa.table('build_artifacts', sa.column('status')).update()
               .where(sa.column('status').in_(ADDED_STATUSES)).values(status='failed'))
    switch_check_list('build_artifacts', 'status', 'artifactstatus', OLD_STATUSES + ADDED_STATUSES,
            OLD_STATUSES)
    op.execute(sa.table('operations', sa.column('kind')).delete()
               .where(sa.column('kind').in_(ADDED_KINDS)))
    switch_check_list('operations', 'kind', 'operationkind', OLD_KINDS + ADDED_KINDS, OLD_KINDS)
