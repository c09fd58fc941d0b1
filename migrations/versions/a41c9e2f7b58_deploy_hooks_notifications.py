"""deploy hooks (push to deploy) and notification channels with their delivery logs

Revision ID: a41c9e2f7b58
Revises: 9d41c6b2e7a3
Create Date: 2026-12-02 14:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'a41c9e2f7b58'
down_revision = '9d41c6b2e7a3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('deploy_hooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('rotated_at', sa.DateTime(), nullable=True),
    sa.Column('pending_commit_sha', sa.String(length=64), nullable=True),
    sa.Column('pending_since', sa.DateTime(), nullable=True),
    sa.Column('last_delivery_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_deploy_hooks_environment_id_environments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deploy_hooks')),
    sa.UniqueConstraint('environment_id', name=op.f('uq_deploy_hooks_environment_id')),
    sa.UniqueConstraint('token', name=op.f('uq_deploy_hooks_token'))
    )
    with op.batch_alter_table('deploy_hooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deploy_hooks_environment_id'), ['environment_id'], unique=False)

    op.create_table('deploy_hook_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hook_id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.String(length=100), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('ref', sa.String(length=255), nullable=False),
    sa.Column('commit_sha', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=255), nullable=False),
    sa.Column('operation_id', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['hook_id'], ['deploy_hooks.id'], name=op.f('fk_deploy_hook_deliveries_hook_id_deploy_hooks'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operation_id'], ['operations.id'], name=op.f('fk_deploy_hook_deliveries_operation_id_operations'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deploy_hook_deliveries')),
    sa.UniqueConstraint('hook_id', 'delivery_id', name=op.f('uq_deploy_hook_deliveries_hook_id'))
    )
    with op.batch_alter_table('deploy_hook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deploy_hook_deliveries_hook_id'), ['hook_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deploy_hook_deliveries_operation_id'), ['operation_id'], unique=False)

    op.create_table('notification_channels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('secrets', sa.Text(), nullable=True),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_notification_channels_organisation_id_organisations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_channels'))
    )
    with op.batch_alter_table('notification_channels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_channels_organisation_id'), ['organisation_id'], unique=False)

    op.create_table('notification_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('response_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['notification_channels.id'], name=op.f('fk_notification_deliveries_channel_id_notification_channels'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries'))
    )
    with op.batch_alter_table('notification_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_deliveries_channel_id'), ['channel_id'], unique=False)
        batch_op.create_index('ix_notification_deliveries_due', ['status', 'next_attempt_at'], unique=False)


def downgrade():
    op.drop_table('notification_deliveries')
    op.drop_table('notification_channels')
    op.drop_table('deploy_hook_deliveries')
    op.drop_table('deploy_hooks')
