"""the health path has one owner: the web service's health.path (moved from build_config)

Revision ID: 7c2f9a1d4e60
Revises: 3f9a2c7e1b44
Create Date: 2026-12-02 11:00:00

An environment's build settings carried ``health_path`` (baked into the image) while the
deploy probed the web service's ``health.path``: two homes that could disagree. The web
service's setting is now the only one; a path set on the build page moves there (unless
the service already has its own), and the build settings lose the key.
"""
from alembic import op
import sqlalchemy as sa


revision = '7c2f9a1d4e60'
down_revision = '3f9a2c7e1b44'
branch_labels = None
depends_on = None

environments = sa.table("environments", sa.column("id", sa.Integer),
                        sa.column("build_config", sa.JSON))
services = sa.table("services", sa.column("id", sa.Integer), sa.column("environment_id", sa.Integer),
                    sa.column("process_roles", sa.JSON), sa.column("config", sa.JSON))


def upgrade():
    conn = op.get_bind()
    for env_id, build in conn.execute(sa.select(environments.c.id, environments.c.build_config)):
        build = dict(build or {})
        if "health_path" not in build:
            continue
        path = build.pop("health_path")
        conn.execute(environments.update().where(environments.c.id == env_id)
                     .values(build_config=build))
        if not path or path == "/up":
            continue
        for svc_id, roles, config in conn.execute(
                sa.select(services.c.id, services.c.process_roles, services.c.config)
                .where(services.c.environment_id == env_id)):
            if "web" not in (roles or []):
                continue
            config = dict(config or {})
            health = dict(config.get("health") or {})
            if health.get("path") or config.get("health_path"):
                continue  # the service's own setting wins
            health["path"] = path
            config["health"] = health
            conn.execute(services.update().where(services.c.id == svc_id).values(config=config))


def downgrade():
    pass  # the build settings no longer read the key; nothing to restore
