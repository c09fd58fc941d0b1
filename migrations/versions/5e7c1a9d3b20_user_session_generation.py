"""user session generation: logout and password change end every session server-side

Revision ID: 5e7c1a9d3b20
Revises: b7d3e1f40a52
Create Date: 2026-12-02 06:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '5e7c1a9d3b20'
down_revision = 'b7d3e1f40a52'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_generation')
