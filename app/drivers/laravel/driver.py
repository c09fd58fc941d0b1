"""Laravel runtime: web, worker and websocket roles from one artifact image (SPEC 7).

The deploy/cutover flow calls :meth:`LaravelDriver.render_replica` for each
new replica: it gets a self-contained compose project (unique project and
container names, its own directory), so the old and the new replica run side
by side until the gateway has switched and the old one has drained.

Roles differ only by command:

* ``web``: the image's own command (FrankenPHP on :8080, as serversideup/php),
  health-checked on the health path (default ``/up``).
* ``worker``: ``php artisan queue:work``; SIGTERM lets the current job
  finish, ``stop_grace_period`` bounds how long that may take.
* ``websocket``: ``php artisan reverb:start`` on :8080.

The scheduler is no container of its own (SPEC 8: a role of a selected web or
worker service): ``schedule:run`` runs inside the chosen replica(s), ``single``
or ``every_replica`` (app.deploys.scheduler).

Persistent ``storage/``: every container of every replica of the
environment on a server mounts one named volume,
``keystone_env_<environment id>_storage``, at the app's storage path
(:data:`STORAGE_PATH`), so uploads (``storage/app``), sessions on the file
driver and logs survive a deploy and are shared by the web, worker and websocket
containers on that server. The name is explicit (no project prefix), so the
blue and the green replica, which are different Compose projects, get the
same volume. On first use Docker copies the image's ``storage/`` (owned by
www-data) into the empty volume; the image's entry script creates any
missing Laravel directory, and the managed Dockerfile runs ``storage:link``
(the ``public/storage`` link lives in the image). Each server has its own
volume: an environment on several servers needs an object store (an S3
disk) for files every replica must see.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from app.drivers.base import (Driver, DriverError, FirewallRule, HealthCheck, PortSpec,
                              RenderContext, RenderedCompose, Resources, UpdateBehaviour,
                              replica_alias, service_alias, service_dir)
from app.drivers.compose import base_service, compose_document, dump_yaml, escape_command
from app.drivers.envfile import render_env_file, split_environment
from app.drivers.laravel.settings import LaravelSettings
from app.drivers.registry import register
from app.models.enums import DeployPolicy, ServiceCategory

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service

HTTP_PORT = 8080
APP_DIR = "/var/www/html"          # WORKDIR of the managed Dockerfile (app/builds/templates)
STORAGE_PATH = f"{APP_DIR}/storage"
ROLES = ("web", "worker", "websocket")
DEFAULT_BASE_IMAGE = "serversideup/php:8.3-frankenphp"


def storage_volume_name(environment_id: int) -> str:
    """The named volume holding an environment's ``storage/`` on each server."""
    return f"keystone_env_{int(environment_id)}_storage"


def storage_mount(service: "Service") -> str | None:
    """``<volume>:<storage path>`` for the service's environment (None outside one)."""
    if service.environment_id is None:
        return None
    return f"{storage_volume_name(service.environment_id)}:{STORAGE_PATH}"


def _worker_command(cfg: Mapping[str, Any], job_timeout: int) -> list[str]:
    command = ["php", "artisan", "queue:work"]
    connection = cfg.get("queue_connection")
    if connection:
        command.append(str(connection))
    queues = cfg.get("queues")
    if queues:
        command.append("--queue=" + ",".join(str(q) for q in queues))
    command += [f"--sleep={int(cfg.get('sleep', 3))}", f"--tries={int(cfg.get('tries', 3))}",
                f"--timeout={job_timeout}",
                f"--max-time={int(cfg.get('max_time', 3600))}"]
    return command


@register
class LaravelDriver(Driver):
    type = "laravel"
    category = ServiceCategory.APPLICATION
    version_track = "8.3"
    default_image = DEFAULT_BASE_IMAGE
    deploy_policy = DeployPolicy.WITH_ENVIRONMENT
    ports = (PortSpec("http", HTTP_PORT, cross_server=True),)
    restart_policy = "unless-stopped"
    label = "Laravel application"
    offered = False  # web, worker and websocket services come with their environment
    form_fields = ()
    deploy_refusal = "Laravel services are deployed with their environment."
    update_behaviour = UpdateBehaviour(stateful=False, downtime=False,
                                       warning="Zero-downtime: new replicas start before old "
                                               "ones are drained at the gateway.")

    # -- roles ------------------------------------------------------------

    def role_of(self, service: "Service", role: str | None = None) -> str:
        role = role or (service.config or {}).get("role") or \
            (service.process_roles[0] if service.process_roles else "web")
        if role not in ROLES:
            raise DriverError(f"service {service.name}: role {role!r} must be one of "
                              f"{', '.join(ROLES)}")
        return role

    def settings(self, service: "Service") -> LaravelSettings:
        """The typed settings (health check, stop grace): every read goes through them."""
        return LaravelSettings.from_config(service.config, where=service.name or "service")

    def health_path(self, service: "Service") -> str:
        return self.settings(service).health.path

    def command_for(self, service: "Service", role: str) -> list[str] | None:
        cfg = service.config or {}
        if cfg.get("command"):
            return [str(c) for c in cfg["command"]]
        if role == "web":
            return None  # the image's own server (FrankenPHP on :8080)
        if role == "worker":
            return _worker_command(cfg, self.settings(service).stop.job_timeout)
        return ["php", "artisan", "reverb:start", "--host=0.0.0.0", f"--port={HTTP_PORT}"]

    def health_for(self, service: "Service", role: str) -> HealthCheck | None:
        if role == "web":
            url = f"http://127.0.0.1:{HTTP_PORT}{self.health_path(service)}"
            return HealthCheck(("curl", "-fsS", "-o", "/dev/null", "--max-time", "2", url),
                               interval="3s", timeout="3s", retries=20, start_period="5s")
        if role == "worker":
            # PID 1 is the worker (the image entrypoints exec their command).
            return HealthCheck(("grep -q queue:work /proc/1/cmdline",), shell_form=True,
                               interval="10s", timeout="3s", retries=3, start_period="5s")
        return HealthCheck(("php", "-r", f"exit(@fsockopen('127.0.0.1', {HTTP_PORT}) ? 0 : 1);"),
                           interval="3s", timeout="3s", retries=20, start_period="5s")

    def stop_settings(self, service: "Service", role: str) -> dict[str, str]:
        # A worker finishes its job; web/websocket finish in-flight requests after the drain.
        grace = self.settings(service).stop.grace(role)
        return {"stop_signal": "SIGTERM", "stop_grace_period": f"{grace}s"}

    def firewall_rules(self, service: "Service") -> list[FirewallRule]:
        # Cross-server upstreams reach replicas on their published internal port.
        return [FirewallRule(r.public_port, "tcp", f"laravel {service.id} replica {r.id}")
                for r in service.replicas if r.public_port]

    # -- compose ----------------------------------------------------------

    def compose_service(self, service: "Service", ctx: RenderContext) -> dict[str, Any]:
        return self._entry(service, ctx, self.role_of(service))

    def _entry(self, service: "Service", ctx: RenderContext, role: str) -> dict[str, Any]:
        aliases = [ctx.container_name]
        if ctx.replica_id is not None:
            aliases.append(replica_alias(service, ctx.replica_id))
        if role in ("web", "websocket"):
            aliases.append(service_alias(service))
        entry = base_service(self, service, ctx, role=role, aliases=aliases)
        command = self.command_for(service, role)
        if command:
            entry["command"] = command
        entry.update(self.stop_settings(service, role))
        if role in ("web", "websocket") and ctx.published_port:
            if not ctx.private_ip:
                raise DriverError("a published replica port needs the server's private IP "
                                  "(never bind an app port on the public interface)")
            entry["ports"] = [f"{ctx.private_ip}:{int(ctx.published_port)}:{HTTP_PORT}"]
        hc = self.health_for(service, role)
        if hc:
            entry["healthcheck"] = hc.compose()
        return escape_command(entry)

    def render_replica(self, service: "Service", *, image: str, project_name: str,
                       container_name: str, environment: Mapping[str, str],
                       replica_id: int | None = None, operation_id: int | None = None,
                       role: str | None = None, resources: Resources | None = None,
                       private_ip: str | None = None,
                       published_port: int | None = None,
                       directory: str | None = None) -> RenderedCompose:
        """A self-contained compose project for ONE replica of a Laravel service.

        ``image`` should be ``name@sha256:...`` (the artifact digest);
        ``project_name`` / ``container_name`` must be unique on the server
        (e.g. ``ks-web-12-r34``); ``environment`` is the effective env
        (:func:`app.attachments.effective_environment`). Files go to
        ``directory`` (default ``/home/keystone/services/<id>/replicas/<project>``),
        so old and new replicas never share a file.
        """
        role = self.role_of(service, role)
        _check_project_name(project_name)
        _check_project_name(container_name)
        ctx = RenderContext(image=image, project_name=project_name,
                            container_name=container_name, operation_id=operation_id,
                            replica_id=replica_id, environment=dict(environment),
                            resources=resources or self.resources_for(service),
                            private_ip=private_ip, published_port=published_port)
        services = {role: self._entry(service, ctx, role)}
        mount = storage_mount(service)
        if mount:
            for entry in services.values():
                entry["volumes"] = [mount]
        doc = compose_document(services, [storage_volume_name(service.environment_id)]
                               if mount else None)
        file_env, _ = split_environment(ctx.environment)
        return RenderedCompose(
            project_name=project_name, compose=doc, compose_yaml=dump_yaml(doc),
            env_file=render_env_file(file_env, header=f"Keystone: environment of {service.name}"
                                     f" replica {replica_id if replica_id is not None else '-'}."
                                     " Generated; edits are overwritten."),
            directory=directory or f"{service_dir(service.id)}/replicas/{project_name}")

    def upstream(self, service: "Service", container_name: str) -> tuple[str, int]:
        """How a same-server gateway reaches a replica: its container name on the network."""
        return container_name, HTTP_PORT


def _check_project_name(name: str) -> None:
    import re
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
        raise DriverError(f"name {name!r}: use lowercase letters, digits, '-' and '_' "
                          "(a Compose project / container name)")
