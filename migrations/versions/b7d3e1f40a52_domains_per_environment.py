"""several domains per environment; replica health seen by the periodic check

Domains:

An environment may route several domains through the same gateway (www next to the
apex, another name): each domain is its own route slice with its own attachment, so
the old unique (environment_id, service_id, role) made the second one an
IntegrityError. The attachment is now unique per (environment, slice); one
Postgres/Valkey attachment per role and service is still enforced by
app.attachments.

Health (app.health): service_replicas gets container_state, restart_count and
checked_at, what the periodic check last saw.

Revision ID: b7d3e1f40a52
Revises: ca26c729a21a
Create Date: 2026-12-02 06:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'b7d3e1f40a52'
down_revision = 'ca26c729a21a'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('environment_attachments', schema=None) as batch_op:
        batch_op.drop_constraint('uq_environment_attachments_environment_id_service_id_role',
                                 type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_environment_attachments_environment_id_service_slice_id'),
            ['environment_id', 'service_slice_id'])
    with op.batch_alter_table('service_replicas', schema=None) as batch_op:
        batch_op.add_column(sa.Column('container_state', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('restart_count', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('service_replicas', schema=None) as batch_op:
        batch_op.drop_column('checked_at')
        batch_op.drop_column('restart_count')
        batch_op.drop_column('container_state')
    with op.batch_alter_table('environment_attachments', schema=None) as batch_op:
        batch_op.drop_constraint('uq_environment_attachments_environment_id_service_slice_id',
                                 type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_environment_attachments_environment_id_service_id_role'),
            ['environment_id', 'service_id', 'role'])
