"""teams: roles owner/admin/deployer/viewer, invitations (issue 19)

``member`` becomes ``deployer`` (what a member could do before: everything but admin
scopes) and the ``membershiprole`` CHECK of ``memberships.role`` lists the four roles; a
new membership defaults to ``viewer``. On SQLite the CHECK clause and the default are
rewritten in place (like d41c7e9a2f58: no table copy); elsewhere the constraint is
dropped and created again.

Revision ID: f7a1c3e9b260
Revises: d41c7e9a2f58
Create Date: 2026-12-02 19:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'f7a1c3e9b260'
down_revision = 'd41c7e9a2f58'
branch_labels = None
depends_on = None

OLD = ['owner', 'admin', 'member']
NEW = ['owner', 'admin', 'deployer', 'viewer']


def _in(values) -> str:
    return "role IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _switch(old, new, old_default, new_default, renames):
    bind = op.get_bind()
    memberships = sa.table('memberships', sa.column('role'))
    if bind.dialect.name == 'sqlite':
        sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' "
                                   "AND name = 'memberships'").scalar()
        if _in(old) not in sql or f"DEFAULT '{old_default}'" not in sql:
            raise RuntimeError("memberships.role has an unexpected CHECK or default; "
                               "not changing it")
        version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
        bind.exec_driver_sql("PRAGMA writable_schema=ON")
        try:
            bind.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                                 "AND name = 'memberships'"),
                         {"sql": sql.replace(_in(old), _in(new))
                                    .replace(f"DEFAULT '{old_default}'",
                                             f"DEFAULT '{new_default}'")})
            bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
        finally:
            bind.exec_driver_sql("PRAGMA writable_schema=OFF")
        for before, after in renames:
            op.execute(memberships.update().where(memberships.c.role == before)
                       .values(role=after))
        assert bind.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    else:
        op.drop_constraint('membershiprole', 'memberships', type_='check')
        for before, after in renames:
            op.execute(memberships.update().where(memberships.c.role == before)
                       .values(role=after))
        op.create_check_constraint('membershiprole', 'memberships', sa.column('role').in_(new))
        op.alter_column('memberships', 'role', server_default=new_default)


def upgrade():
    _switch(OLD, NEW, 'member', 'viewer', [('member', 'deployer')])
    op.create_table('invitations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('role', sa.Enum(*NEW, name='membershiprole', native_enum=False, create_constraint=True, length=32), server_default='viewer', nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('invited_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('accepted_at', sa.DateTime(), nullable=True),
    sa.Column('accepted_by_id', sa.Integer(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('mail_link', sa.Text(), nullable=True),
    sa.Column('mail_status', sa.String(length=32), server_default='pending', nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_invitations_organisation_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invited_by_id'], ['users.id'], name=op.f('fk_invitations_invited_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['accepted_by_id'], ['users.id'], name=op.f('fk_invitations_accepted_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invitations')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_invitations_token_hash'))
    )
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invitations_organisation_id'), ['organisation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invitations_invited_by_id'), ['invited_by_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invitations_accepted_by_id'), ['accepted_by_id'], unique=False)


def downgrade():
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invitations_accepted_by_id'))
        batch_op.drop_index(batch_op.f('ix_invitations_invited_by_id'))
        batch_op.drop_index(batch_op.f('ix_invitations_organisation_id'))
    op.drop_table('invitations')
    _switch(NEW, OLD, 'viewer', 'member', [('deployer', 'member'), ('viewer', 'member')])
