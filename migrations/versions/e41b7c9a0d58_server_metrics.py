"""server metrics (minute samples for 24 h, hourly roll-up for 30 days)

Revision ID: e41b7c9a0d58
Revises: 3f9a2c7d1e64
Create Date: 2026-12-02 14:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'e41b7c9a0d58'
down_revision = '3f9a2c7d1e64'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('server_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('resolution', sa.String(length=8), nullable=False),
    sa.Column('taken_at', sa.DateTime(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('cpu_percent', sa.Float(), nullable=False),
    sa.Column('mem_used_mb', sa.Float(), nullable=False),
    sa.Column('mem_total_mb', sa.Float(), nullable=False),
    sa.Column('disk_used_gb', sa.Float(), nullable=False),
    sa.Column('disk_total_gb', sa.Float(), nullable=False),
    sa.Column('load1', sa.Float(), nullable=False),
    sa.Column('load5', sa.Float(), nullable=False),
    sa.Column('load15', sa.Float(), nullable=False),
    sa.Column('containers', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['server_id'], ['servers.id'], name=op.f('fk_server_metrics_server_id_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_server_metrics')),
    sa.UniqueConstraint('server_id', 'resolution', 'taken_at', name=op.f('uq_server_metrics_server_id_resolution_taken_at'))
    )
    with op.batch_alter_table('server_metrics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_server_metrics_server_id'), ['server_id'], unique=False)


def downgrade():
    with op.batch_alter_table('server_metrics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_server_metrics_server_id'))
    op.drop_table('server_metrics')
