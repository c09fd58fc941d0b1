"""Postgres 18: one container, one named volume, database+user slices via psql.

Slices are created against the running replica with ``psql`` through
``docker exec`` (never a redeploy). Identifiers and the password travel as
psql variables and are quoted by psql itself (``:"name"`` / ``:'value'``);
the SQL text is constant. The password is sent as a SCRAM-SHA-256 verifier,
so the plaintext never reaches the server.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.drivers.base import (Driver, DriverError, EnvField, ExportField, HealthCheck, PortSpec,
                              RenderContext, UpdateBehaviour, VolumeSpec, service_alias)
from app.drivers.compose import base_service
from app.drivers.plan import Run, StepPlan
from app.drivers.registry import register
from app.drivers.secrets import generate_password, scram_sha256_verifier, validate_identifier
from app.models.enums import AttachmentRole, DeployPolicy, ServiceCategory, SliceStatus, SliceType
from app.shell import Command, Secret, cmd, concat, pipe

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service, ServiceSlice

SUPERUSER = "postgres"
PORT = 5432

# Constant SQL: every value is a psql variable, quoted by psql (:"ident", :'literal').
PROVISION_SQL = """\
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'role') \\gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db') \\gexec
ALTER DATABASE :"db" OWNER TO :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT ALL PRIVILEGES ON DATABASE :"db" TO :"role";
SELECT 'keystone-slice-ready' AS status;
"""

ROTATE_SQL = """\
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
"""

# Delete without dropping data: the role can no longer log in, the database stays.
DISABLE_SQL = """\
ALTER ROLE :"role" NOLOGIN;
SELECT pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = :'role';
"""

# Only with explicit, typed confirmation.
DROP_SQL = """\
DROP DATABASE IF EXISTS :"db" WITH (FORCE);
DROP ROLE IF EXISTS :"role";
"""

CHECK_SQL = """\
SELECT (SELECT count(*) FROM pg_catalog.pg_database WHERE datname = :'db') || ':' || (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = :'role');
"""


@register
class PostgresDriver(Driver):
    type = "postgres"
    category = ServiceCategory.DATABASE
    version_track = "18"
    default_image = "postgres:18"
    deploy_policy = DeployPolicy.DEPENDENCY_ONLY
    ports = (PortSpec("postgres", PORT, cross_server=True),)
    # Postgres 18 images keep PGDATA under /var/lib/postgresql/18/docker and
    # declare the volume at /var/lib/postgresql (mounting .../data is refused).
    volumes = (VolumeSpec("postgres_data", "/var/lib/postgresql"),)
    env_schema = (
        EnvField("POSTGRES_USER", "superuser name", default=SUPERUSER),
        EnvField("POSTGRES_PASSWORD", "superuser password", secret=True, required=True),
        EnvField("POSTGRES_DB", "maintenance database", default="postgres"),
    )
    slice_types = (SliceType.POSTGRES_DATABASE,)
    label = "Postgres 18 (database)"
    short_label = "Postgres 18"
    user_slice_type = SliceType.POSTGRES_DATABASE
    attach_roles = (AttachmentRole.DATABASE,)
    exports = (ExportField("DB_CONNECTION"), ExportField("DB_HOST"), ExportField("DB_PORT"),
               ExportField("DB_DATABASE", overridable=False),
               ExportField("DB_USERNAME", overridable=False),
               ExportField("DB_PASSWORD", secret=True, overridable=False))
    health_check = HealthCheck(("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PORT),
                                "-U", SUPERUSER), interval="5s", timeout="5s", retries=12,
                               start_period="30s")
    stop_signal = "SIGINT"  # fast shutdown, as the official image
    stop_grace_period = "60s"
    update_behaviour = UpdateBehaviour(
        stateful=True, downtime=True,
        warning=("Updating Postgres stops the container, starts the new image on the same "
                 "named volume and waits for its health check: connected applications see "
                 "errors for the duration (usually seconds). A new major version cannot "
                 "start on an old data directory: updates stay on the version track."))

    # -- secrets and environment ------------------------------------------

    password_secret = "superuser_password"   # generated once by Driver.ensure_secrets

    def service_environment(self, service: "Service") -> dict[str, str]:
        password = self.service_password(service)
        return {"POSTGRES_USER": SUPERUSER, "POSTGRES_PASSWORD": password,
                "POSTGRES_DB": "postgres"}

    # -- compose ----------------------------------------------------------

    def compose_service(self, service: "Service", ctx: RenderContext) -> dict[str, Any]:
        entry = base_service(self, service, ctx)
        entry["shm_size"] = "256m"
        entry["volumes"] = [f"{v.volume_name(service.id)}:{v.mount_path}"
                            for v in self.volumes]
        if ctx.private_ip and (service.config or {}).get("expose_private"):
            entry["ports"] = [f"{ctx.private_ip}:{ctx.published_port or PORT}:{PORT}"]
        entry["healthcheck"] = self.health_check.compose()
        return entry

    # -- slices -----------------------------------------------------------

    @staticmethod
    def slice_names(slice_: "ServiceSlice") -> tuple[str, str]:
        cfg = slice_.config or {}
        db = validate_identifier("database", cfg.get("database") or slice_.name)
        role = validate_identifier("user", cfg.get("username") or db)
        return db, role

    def env_exports(self, service: "Service", slice_: "ServiceSlice", host: str,
                    port: int | None = None) -> dict[str, str]:
        db, role = self.slice_names(slice_)
        password = (slice_.credentials or {}).get("password", "")
        return {"DB_CONNECTION": "pgsql", "DB_HOST": host, "DB_PORT": str(port or PORT),
                "DB_DATABASE": db, "DB_USERNAME": role, "DB_PASSWORD": password}

    def psql(self, container: str, sql: str, variables: dict[str, "str | Secret"]) -> Command:
        """``printf '%s' SQL | docker exec -i C psql -v k=v ...`` (variables quoted by psql)."""
        args: list[Any] = ["docker", "exec", "-i", container, "psql", "-X", "-q", "-A", "-t",
                           "-v", "ON_ERROR_STOP=1", "-U", SUPERUSER, "-d", "postgres"]
        for key, value in variables.items():
            args += ["-v", concat(f"{key}=", value)]
        return pipe(cmd("printf", "%s", sql), cmd(*args))

    def slice_commands(self, service: "Service", slice_: "ServiceSlice", action: str,
                       container: str, **params: Any) -> list[Command]:
        db, role = self.slice_names(slice_)
        if action in ("provision", "rotate"):
            password = (slice_.credentials or {}).get("password")
            if not password:
                raise DriverError(f"slice {slice_.id}: no password generated")
            verifier = Secret(scram_sha256_verifier(password), name="scram")
            sql = PROVISION_SQL if action == "provision" else ROTATE_SQL
            return [self.psql(container, sql, {"role": role, "db": db, "password": verifier})]
        if action == "check":
            return [self.psql(container, CHECK_SQL, {"role": role, "db": db})]
        if action == "disable":
            return [self.psql(container, DISABLE_SQL, {"role": role})]
        if action == "drop":
            return [self.psql(container, DROP_SQL, {"role": role, "db": db})]
        raise DriverError(f"postgres slice action {action!r} is not supported")

    # -- plans (app.services_ops runs them) ------------------------------------

    def check_slice_step(self, service: "Service", slice_: "ServiceSlice",
                         container: str) -> StepPlan:
        [check] = self.slice_commands(service, slice_, "check", container)
        missing = f"database or user {slice_.name} is missing on the server"
        return StepPlan(f"Check database {slice_.name}", (Run(
            check, pty=False,
            expect=lambda out: None if out.strip().splitlines()[-1:] == ["1:1"] else missing),))

    def slice_provision_steps(self, service, slice_, container, action="provision"):
        title = "Create database and user" if action == "provision" else "Set new password"
        commands = self.slice_commands(service, slice_, action, container)
        return [StepPlan(f"{title} {slice_.name}", tuple(Run(c, pty=False) for c in commands)),
                self.check_slice_step(service, slice_, container)]

    def slice_delete_steps(self, service, slice_, container, *, drop):
        title = f"DROP database and user {slice_.name}" if drop else \
            f"Disable login of {slice_.name} (data kept)"
        commands = self.slice_commands(service, slice_, "drop" if drop else "disable", container)
        return [StepPlan(title, tuple(Run(c, pty=False) for c in commands))]

    def after_deploy_steps(self, service, container, *, is_update):
        # Slices live in the volume; check each still answers after an update.
        if not is_update:
            return []
        return [self.check_slice_step(service, s, container) for s in service.slices
                if s.status == SliceStatus.READY]

    def new_slice_config(self, name: str) -> tuple[dict, dict]:
        """(config, credentials) for a new database+user slice called ``name``."""
        validate_identifier("database", name)
        return {"database": name, "username": name}, {"password": generate_password()}

    def internal_host(self, service: "Service") -> str:
        return service_alias(service)


# -- backups (issue 17.3) ----------------------------------------------------
# Constant scripts: the container, database, role and file travel as positional
# arguments ("$1"...), never pasted into the script text.
_DUMP_SH = 'umask 077 && docker exec "$1" pg_dump -U postgres -Fc --no-password -d "$2" > "$3"'
_RESTORE_SH = ('docker exec -i "$1" pg_restore -U postgres --no-password -d "$2" --clean '
               '--if-exists --no-owner --role="$3" --single-transaction --exit-on-error < "$4"')


def dump_command(container: str, database: str, path: str) -> Command:
    """``pg_dump -Fc`` of ``database`` inside ``container``, written to ``path`` on the host."""
    validate_identifier("database", database)
    return cmd("sh", "-c", _DUMP_SH, "sh", container, database, path)


def restore_command(container: str, database: str, role: str, path: str) -> Command:
    """``pg_restore`` of the dump at ``path`` (on the host) into ``database`` as ``role``.

    ``--clean --if-exists`` drops what the dump recreates; ``--single-transaction`` makes
    the restore all or nothing, so connected applications see the old data or the new.
    """
    validate_identifier("database", database)
    validate_identifier("user", role)
    return cmd("sh", "-c", _RESTORE_SH, "sh", container, database, role, path)
