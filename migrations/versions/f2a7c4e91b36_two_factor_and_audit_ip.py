"""two-factor sign-in (TOTP, recovery codes, organisation requirement); audit address

users gain the TOTP secret (encrypted), its confirmation time and the last accepted step;
recovery_codes hold SHA-256 hashes of single-use codes; organisations gain
require_two_factor; audit_events gain the client address (ip) and an index on created_at
(the audit page filters and orders by it).

Revision ID: f2a7c4e91b36
Revises: d41c7e9a2f58
Create Date: 2026-12-02 19:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'f2a7c4e91b36'
down_revision = 'f7a1c3e9b260'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('totp_enabled_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('organisations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_two_factor', sa.Boolean(),
                                      server_default='0', nullable=False))
    op.create_table(
        'recovery_codes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('used_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_recovery_codes_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_codes')),
        sa.UniqueConstraint('code_hash', name=op.f('uq_recovery_codes_code_hash')),
    )
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_codes_user_id'), ['user_id'], unique=False)
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ip', sa.String(length=45), nullable=True))
        batch_op.create_index(batch_op.f('ix_audit_events_created_at'), ['created_at'],
                              unique=False)


def downgrade():
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35 has it): a batch copy of
    # organisations or users would cascade-delete every row that references them.
    op.drop_index(op.f('ix_audit_events_created_at'), table_name='audit_events')
    op.drop_column('audit_events', 'ip')
    op.drop_index(op.f('ix_recovery_codes_user_id'), table_name='recovery_codes')
    op.drop_table('recovery_codes')
    op.drop_column('organisations', 'require_two_factor')
    op.drop_column('users', 'totp_last_step')
    op.drop_column('users', 'totp_enabled_at')
    op.drop_column('users', 'totp_secret')
