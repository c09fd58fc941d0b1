"""HTTPS: what each gateway's Caddy holds (issue 22)

Revision ID: c2e8a4f61b93
Revises: d41c7e9a2f58
Create Date: 2026-12-02 19:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'c2e8a4f61b93'
down_revision = 'f2a7c4e91b36'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('gateway_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('issuer', sa.String(length=255), nullable=True),
    sa.Column('serial', sa.String(length=80), nullable=True),
    sa.Column('not_before', sa.DateTime(), nullable=True),
    sa.Column('not_after', sa.DateTime(), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('checked_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], name=op.f('fk_gateway_certificates_service_id_services'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gateway_certificates')),
    sa.UniqueConstraint('service_id', 'hostname', name=op.f('uq_gateway_certificates_service_id_hostname'))
    )
    with op.batch_alter_table('gateway_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gateway_certificates_service_id'), ['service_id'], unique=False)


def downgrade():
    with op.batch_alter_table('gateway_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gateway_certificates_service_id'))
    op.drop_table('gateway_certificates')
