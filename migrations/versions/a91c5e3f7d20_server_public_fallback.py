"""servers.public_fallback: the explicit opt-in for the public-network fallback (SPEC 14)

A server without a private network can offer its services to the organisation's other
servers only on its public IP. That happens only when this flag is on (off by default,
set on the server's page); the port is then opened to the peer servers' public IPs only.

Revision ID: a91c5e3f7d20
Revises: a7d3f5c20e84
Create Date: 2026-12-02 23:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'a91c5e3f7d20'
down_revision = 'a7d3f5c20e84'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_fallback', sa.Boolean(), nullable=False,
                                      server_default='0'))


def downgrade():
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_column('public_fallback')
