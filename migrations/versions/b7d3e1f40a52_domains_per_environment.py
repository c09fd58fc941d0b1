"""several domains per environment: one attachment per slice, not per (service, role)

An environment may route several domains through the same gateway (www next to the
apex, another name): each domain is its own route slice with its own attachment, so
the old unique (environment_id, service_id, role) made the second one an
IntegrityError. The attachment is now unique per (environment, slice); one
Postgres/Valkey attachment per role and service is still enforced by
app.attachments.

Revision ID: b7d3e1f40a52
Revises: ca26c729a21a
Create Date: 2026-12-02 06:40:00

"""
from alembic import op


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


def downgrade():
    with op.batch_alter_table('environment_attachments', schema=None) as batch_op:
        batch_op.drop_constraint('uq_environment_attachments_environment_id_service_slice_id',
                                 type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_environment_attachments_environment_id_service_id_role'),
            ['environment_id', 'service_id', 'role'])
