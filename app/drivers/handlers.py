"""Operation handlers of the drivers: service_deploy, slice_provision, slice_configure.

Imported by the worker only (app.operations.registry.HANDLER_MODULES). The
drivers build data and command values; this module runs them through the
operations engine (``ctx.step(...)``, ``step.run``, ``step.put_file``).

Reusable pieces for the deploy/cutover flow:

* :func:`write_project` -- upload compose.yml/.env/compose.env (0600) of a
  :class:`~app.drivers.base.RenderedCompose`;
* :func:`compose_up` / :func:`wait_healthy` -- start a project, wait for the
  container's health check;
* :func:`install_gateway_config` -- validate, install atomically (last good
  kept), reload Caddy gracefully, roll back on failure;
* :func:`pull_image` -- pull an image, logged in to its registry with an
  operation-private ``DOCKER_CONFIG`` (logout in ``finally``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import posixpath
import time
from typing import TYPE_CHECKING

from app.drivers import get_driver
from app.drivers.base import (DOCKER_NETWORK, RenderContext, RenderedCompose,
                              default_container_name, default_project_name, service_alias)
from app.drivers.caddy.caddyfile import CaddyfileError, caddy_binary, check_caddyfile
from app.drivers.caddy.driver import (CADDYFILE, CADDYFILE_NEXT, CONFIG_DIR_IN_CONTAINER,
                                      assert_single_gateway)
from app.drivers.compose import INTERPOLATION_ENV_TEXT, compose_cmd, ensure_network_cmd
from app.builds.commands import pull as pull_cmd
from app.drivers.images import (DIGEST_RE, ImageError, org_credentials, org_registry, parse_image,
                                resolve_digest)
from app.drivers.valkey.driver import ACL_FILE, acl_dir
from app.extensions import db
from app.models import Endpoint, EnvironmentAttachment, Service, ServiceReplica, ServiceSlice
from app.models.base import utcnow
from app.models.enums import (EndpointScope, HealthStatus, OperationKind, ReplicaStatus,
                              ServiceStatus, SliceStatus, SliceType, UpdateStatus)
from app.operations import OperationContext, StepFailed, operation_handler
from app.shell import cmd

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Server

HEALTH_TIMEOUT = 180
POLL_INTERVAL = 2.0


# --------------------------------------------------------------------------- building blocks

def pull_image(ctx: OperationContext, server: "Server", image: str, organisation_id: int,
               *, timeout: int = 900) -> None:
    """``docker pull`` on the server, logged in to the image's registry if the org has credentials.

    The login uses the build's :class:`app.builds.artifacts.RegistrySession`:
    an operation-private ``DOCKER_CONFIG`` directory, ``docker logout`` and
    its removal in a ``finally``, so no credential stays in the server user's
    ``~/.docker/config.json``.
    """
    from app.builds.artifacts import RegistrySession
    registry = org_registry(organisation_id, parse_image(image).registry)
    config_dir = posixpath.join(ctx.workdir(), "docker-pull-" +
                                hashlib.sha256(image.encode()).hexdigest()[:12])
    with ctx.step(f"Pull {image}", server=server) as step:
        with RegistrySession(step, registry, config_dir) as docker_config:
            step.run(pull_cmd(image, docker_config), timeout=timeout)


def write_project(ctx: OperationContext, server: "Server", rendered: RenderedCompose,
                  *, name: str = "Write compose project") -> None:
    """Upload compose.yml, .env and the empty interpolation env; all 0600, atomic."""
    with ctx.step(name, server=server) as step:
        step.mkdir(rendered.directory)
        step.put_file(rendered.compose_path, rendered.compose_yaml, mode=0o600)
        step.put_file(rendered.env_path, rendered.env_file, mode=0o600)
        step.put_file(rendered.interpolation_env_path, INTERPOLATION_ENV_TEXT, mode=0o600)
        step.run(compose_cmd(rendered.directory, rendered.project_name, "config", "-q"),
                 timeout=120)


def compose_up(ctx: OperationContext, server: "Server", rendered: RenderedCompose,
               *, name: str = "Start containers") -> None:
    with ctx.step(name, server=server) as step:
        step.run(compose_cmd(rendered.directory, rendered.project_name, "up", "-d",
                             "--remove-orphans"), timeout=600)


def wait_healthy(ctx: OperationContext, server: "Server", container: str,
                 timeout: float = HEALTH_TIMEOUT) -> str:
    """Poll the container's health until healthy; fail with its last log lines otherwise."""
    fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
    with ctx.step(f"Wait for {container} to be healthy", server=server) as step:
        deadline = time.monotonic() + timeout
        status = ""
        while True:
            res = step.run(cmd("docker", "inspect", "--format", fmt, container), check=False,
                           pty=False, timeout=30)
            status = res.stdout.strip()
            if status == "healthy" or status == "running":
                step.log(f"{container}: {status}")
                return status
            if status in ("exited", "dead", "unhealthy") or time.monotonic() > deadline:
                step.run(cmd("docker", "logs", "--tail", "40", container), check=False,
                         timeout=30)
                raise StepFailed(f"{container} did not become healthy (state: {status or '?'})")
            ctx.check_cancelled()
            time.sleep(POLL_INTERVAL)


def container_id(ctx: OperationContext, server: "Server", container: str) -> str | None:
    with ctx.step(f"Inspect {container}", server=server) as step:
        res = step.run(cmd("docker", "inspect", "--format", "{{.Id}}", container), check=False,
                       pty=False)
        step.unchanged()
    return res.stdout.strip() or None


def ensure_network(ctx: OperationContext, server: "Server") -> None:
    with ctx.step(f"Ensure Docker network {DOCKER_NETWORK}", server=server) as step:
        step.run(ensure_network_cmd(), timeout=60)


def open_firewall(ctx: OperationContext, server: "Server", rules) -> None:
    """UFW rules for cross-server ports, from the private network only.

    Runs as the management user through the sudo rule provisioning wrote
    (``sudo -n /usr/sbin/ufw allow from ADDRESS to any port PORT proto tcp``;
    the command is built from the same words as the rule, see
    app.provisioning.commands.UFW_PRIVATE_ALLOW). Docker-published ports
    bypass UFW's INPUT chain (verified: docs/firewall.md), so the real guard
    is that such ports are bound to the private IP only; the rules keep UFW's
    view (and non-Docker paths) consistent. Refusing a third server on the
    same network needs DOCKER-USER rules matched on conntrack's original
    destination (docs/firewall.md), not done yet.
    """
    from app.provisioning.commands import UFW_PATH, FirewallRuleError, ufw_allow_private
    if not rules or not server.private_ip:
        return
    cidr = (server.facts or {}).get("private_network") or \
        str(ipaddress.ip_network(f"{server.private_ip}/16", strict=False))
    ufw = (server.facts or {}).get("ufw_path") or UFW_PATH
    with ctx.step("Open cross-server ports to the private network", server=server) as step:
        have = step.run(cmd("test", "-x", ufw), check=False, pty=False)
        if have.exit_code != 0:
            step.unchanged("ufw is not installed on this server")
            return
        for rule in rules:
            if rule.protocol != "tcp":
                raise StepFailed(f"{rule.comment or 'a service'}: only TCP ports can be opened to "
                                 f"the private network (the sudo rule allows tcp), not "
                                 f"{rule.protocol}")
            try:
                command = ufw_allow_private(cidr, int(rule.port), ufw)
            except FirewallRuleError as exc:
                raise StepFailed(str(exc)) from None
            step.log(f"{rule.comment}: port {rule.port}/tcp from {cidr}")
            step.run(command, pty=False, timeout=60)


def _replica_for(service: Service) -> ServiceReplica:
    """The single replica of a stateful/gateway service on its server (created if missing)."""
    for r in service.replicas:
        if r.server_id == service.server_id and r.status != ReplicaStatus.REMOVED:
            return r
    replica = ServiceReplica(service=service, server_id=service.server_id,
                             container_name=default_container_name(service),
                             status=ReplicaStatus.PENDING)
    db.session.add(replica)
    db.session.commit()
    return replica


def _running_container(service: Service) -> str:
    for r in service.replicas:
        if r.status == ReplicaStatus.RUNNING:
            return r.container_name
    raise StepFailed(f"{service.name} has no running replica: deploy it first")


def _upsert_endpoints(service: Service, replica: ServiceReplica, port: int | None) -> None:
    if port is None:
        return
    wanted = [(EndpointScope.DOCKER_NETWORK, service_alias(service), None, 10)]
    if (service.config or {}).get("expose_private") and service.server and service.server.private_ip:
        wanted.append((EndpointScope.PRIVATE_NETWORK, service.server.private_ip,
                       service.server.private_ip, 20))
    existing = {(e.scope, e.hostname): e for e in service.endpoints}
    for scope, host, ip, prio in wanted:
        ep = existing.pop((scope, host), None)
        if ep is None:
            ep = Endpoint(service=service, scope=scope, hostname=host)
            db.session.add(ep)
        ep.service_replica_id = replica.id
        ep.ip_address, ep.port, ep.priority = ip, port, prio
        ep.health_status = HealthStatus.HEALTHY
    for ep in existing.values():
        db.session.delete(ep)


# --------------------------------------------------------------------------- gateway

def _caddy_said(result) -> str:
    """Caddy's last message (its log lines are JSON: the ``msg`` of the last one)."""
    import json
    lines = [ln.strip() for ln in ((result.stdout or "") + "\n" + (result.stderr or ""))
             .splitlines() if ln.strip()]
    if not lines:
        return "no message"
    try:
        said = json.loads(lines[-1]).get("msg") or lines[-1]
    except (ValueError, AttributeError):
        said = lines[-1]
    return str(said)[:300]


def install_gateway_config(ctx: OperationContext, gateway: Service, text: str | None = None,
                           *, container: str | None = None) -> bool:
    """Validate and install the gateway's Caddyfile, then reload Caddy without downtime.

    Returns False (an explicit no-op step) when the server already has
    exactly this config. On a failed reload the last good config is put
    back and reloaded, and the step fails.
    """
    driver = get_driver(gateway)
    server = gateway.server
    with ctx.step("Install gateway configuration", server=server) as step:
        # Refusals are the step's own reason: a Caddyfile that does not render or that
        # Caddy refuses here never reaches the gateway.
        try:
            text = driver.render_gateway_config(gateway) if text is None else text
            if caddy_binary():
                check_caddyfile(text)
        except CaddyfileError as exc:
            raise StepFailed(f"The gateway configuration was refused before it reached "
                             f"{server.name}: {exc}") from None
        container = container or _running_container(gateway)
        want = hashlib.sha256(text.encode()).hexdigest()
        res = step.run(driver.current_hash_cmd(), check=False, pty=False)
        if res.stdout.split()[:1] == [want]:
            step.unchanged("the gateway already has this configuration")
            return False
        step.put_file(CADDYFILE_NEXT, text, mode=0o644)
        check = step.run(driver.validate_cmd(container, f"{CONFIG_DIR_IN_CONTAINER}/Caddyfile.next"),
                         check=False, timeout=60)
        if check.exit_code != 0:
            raise StepFailed(f"The gateway's Caddy on {server.name} refused the new "
                             f"configuration ({_caddy_said(check)}); it was not installed and "
                             "the previous one is still serving.")
        step.run(driver.install_cmd())
        reload = step.run(driver.reload_cmd(container), check=False, timeout=60)
        if reload.exit_code != 0:
            step.log("reload failed: restoring the last good configuration")
            step.run(driver.restore_cmd(), check=False)
            step.run(driver.reload_cmd(container), check=False, timeout=60)
            raise StepFailed("Caddy refused the new configuration; the previous one is "
                             "still serving")
    return True


# --------------------------------------------------------------------------- service deploy

def update_warning(service: Service) -> str | None:
    """The downtime warning shown before an update of a stateful service (SPEC 11)."""
    behaviour = get_driver(service).update_behaviour
    return behaviour.warning if behaviour.downtime else None


def start_service_deploy(service: Service, user=None, *, image_digest: str | None = None,
                         confirm_downtime: bool = False, enqueue: bool = True):
    """Start a service_deploy (first deploy, redeploy or update to ``image_digest``).

    A service that is already running and would go down for it (Postgres,
    Valkey, the gateway) needs ``confirm_downtime=True``: the UI shows
    :func:`update_warning` with a checkbox first. Never called implicitly.
    """
    from app.operations import start_operation
    running = any(r.status == ReplicaStatus.RUNNING for r in service.replicas)
    warning = update_warning(service)
    if running and warning and not confirm_downtime:
        raise StepFailed(f"Confirm the downtime first: {warning}")
    params = {"confirm_downtime": bool(confirm_downtime)}
    if image_digest:
        params["image_digest"] = image_digest
    return start_operation(OperationKind.SERVICE_DEPLOY, target_type="service",
                           target_id=service.id, organisation_id=service.organisation_id,
                           user=user, params=params,
                           lock_keys=[f"service:{service.id}"] + (
                               [f"gateway:{service.server_id}"] if service.type == "caddy" else []),
                           summary=f"{'Update' if running else 'Deploy'} {service.name}",
                           enqueue=enqueue)


@operation_handler(OperationKind.SERVICE_DEPLOY)
def deploy_service(ctx: OperationContext) -> None:
    """Deploy (or update) a single-container service: Postgres, Valkey or the Caddy gateway."""
    service: Service = ctx.target
    if service is None:
        raise StepFailed("The service no longer exists.")
    try:
        _deploy_service(ctx, service)
    except BaseException:
        db.session.rollback()
        service.status = ServiceStatus.FAILED
        if service.update_status == UpdateStatus.UPDATING:
            service.update_status = UpdateStatus.AVAILABLE if service.available_image_digest \
                else UpdateStatus.UNKNOWN
        db.session.commit()
        raise


def _deploy_service(ctx: OperationContext, service: Service) -> None:
    driver = get_driver(service)
    if service.type == "laravel":
        raise StepFailed("Laravel services are deployed with their environment.")
    server = service.server
    if server is None:
        raise StepFailed(f"{service.name} is not placed on a server.")
    if service.type == "caddy":
        assert_single_gateway(service)

    if driver.ensure_secrets(service):
        db.session.commit()
    replica = _replica_for(service)
    running = replica.status == ReplicaStatus.RUNNING

    # 1. Image: a digest, never a moving tag.
    tag_ref = driver.image(service)
    with ctx.step(f"Resolve {tag_ref} to a digest") as step:
        digest = ctx.params.get("image_digest")
        if digest and not DIGEST_RE.fullmatch(str(digest)):
            raise StepFailed(f"{digest!r} is not a sha256 digest")
        if digest:
            step.log(f"pinned by the request: {digest}")
        else:
            try:
                digest = resolve_digest(tag_ref, org_credentials(service.organisation_id))
            except ImageError as exc:
                raise StepFailed(str(exc)) from None
            step.log(f"{tag_ref} -> {digest}")
        image = parse_image(tag_ref).with_digest(digest)
    previous = replica.image_digest
    is_update = running and previous and previous != digest
    if running and update_warning(service) and not ctx.params.get("confirm_downtime"):
        raise StepFailed(f"Downtime was not confirmed: {update_warning(service)}")
    ctx.operation.image_digest = digest
    service.status = ServiceStatus.DEPLOYING
    if is_update:
        service.update_status = UpdateStatus.UPDATING
    db.session.commit()

    # 2. Files.
    rctx = RenderContext(image=image, project_name=default_project_name(service),
                         container_name=replica.container_name, operation_id=ctx.id,
                         replica_id=replica.id, environment=driver.service_environment(service),
                         resources=driver.resources_for(service, replica),
                         private_ip=server.private_ip, published_port=replica.public_port)
    rendered = driver.render_compose(service, rctx)
    for key in driver.secret_keys:
        if rctx.environment.get(key):
            ctx.secret(rctx.environment[key])
    ensure_network(ctx, server)
    pull_image(ctx, server, image, service.organisation_id)
    if service.type == "valkey":
        with ctx.step("Write Valkey ACL file", server=server) as step:
            step.mkdir(acl_dir(service.id))
            step.put_file(f"{acl_dir(service.id)}/{ACL_FILE}",
                          driver.render_acl(service, list(service.slices)), mode=0o644)
    if service.type == "caddy":
        text = driver.render_gateway_config(service)
        check_caddyfile(text)
        with ctx.step("Write initial gateway configuration", server=server) as step:
            step.mkdir(CADDYFILE.rsplit("/", 1)[0])
            if running:
                # The live gateway keeps serving its file; the new one is installed
                # (validated, last good kept, reloaded) once the container is up.
                step.unchanged("the running gateway's configuration is replaced after start")
            else:
                step.put_file(CADDYFILE, text, mode=0o644)
    write_project(ctx, server, rendered)

    # 3. Start (an update: stop, keep the volume, start the new image).
    if is_update:
        with ctx.step(f"Stop {replica.container_name} (downtime starts)", server=server) as step:
            step.log(update_warning(service) or "")
            step.run(compose_cmd(rendered.directory, rendered.project_name, "stop"),
                     timeout=300)
    compose_up(ctx, server, rendered)
    status = wait_healthy(ctx, server, replica.container_name)
    volumes = driver.volume_names(service)
    if volumes:
        with ctx.step("Check named volumes", server=server) as step:
            for vol in volumes:
                step.run(cmd("docker", "volume", "inspect", "--format", "{{.Name}} {{.CreatedAt}}",
                             vol), pty=False)
            step.unchanged()
    cid = container_id(ctx, server, replica.container_name)

    # 4. Record.
    replica.status = ReplicaStatus.RUNNING
    replica.health_status = HealthStatus.HEALTHY if status == "healthy" else HealthStatus.UNKNOWN
    replica.image_digest = digest
    replica.operation_id = ctx.id
    replica.container_id = cid
    replica.internal_host = service_alias(service)
    replica.internal_port = driver.internal_port()
    replica.config = {**(replica.config or {}), "image": image,
                      "project": rendered.project_name, "directory": rendered.directory}
    service.current_image_digest = digest
    if service.available_image_digest == digest:
        service.available_image_digest = None
    service.update_status = UpdateStatus.AVAILABLE if service.available_image_digest \
        else UpdateStatus.CURRENT
    service.status = ServiceStatus.RUNNING
    _upsert_endpoints(service, replica, driver.internal_port())
    ctx.result.update({"image": image, "digest": digest, "previous_digest": previous,
                       "updated": bool(is_update), "volumes_kept": volumes})
    db.session.commit()

    open_firewall(ctx, server, driver.firewall_rules(service))
    if service.type == "caddy":
        install_gateway_config(ctx, service, container=replica.container_name)
    elif service.type == "postgres" and is_update:
        # Slices live in the volume; check each still answers after the update.
        for slice_ in service.slices:
            if slice_.status == SliceStatus.READY:
                _check_postgres_slice(ctx, service, slice_, replica.container_name)


# --------------------------------------------------------------------------- slices

def _check_postgres_slice(ctx, service, slice_, container) -> None:
    driver = get_driver(service)
    with ctx.step(f"Check database {slice_.name}", server=service.server) as step:
        [check] = driver.slice_commands(service, slice_, "check", container)
        res = step.run(check, pty=False)
        if res.stdout.strip().splitlines()[-1:] != ["1:1"]:
            raise StepFailed(f"database or user {slice_.name} is missing on the server")


def _apply_valkey_acl(ctx, service: Service, slice_: ServiceSlice, action: str) -> None:
    driver = get_driver(service)
    container = _running_container(service)
    with ctx.step(f"Apply Valkey ACL ({slice_.name})", server=service.server) as step:
        step.mkdir(acl_dir(service.id))
        step.put_file(f"{acl_dir(service.id)}/{ACL_FILE}",
                      driver.render_acl(service, list(service.slices)), mode=0o644)
        for command in driver.slice_commands(service, slice_, "load", container):
            step.run(command, pty=False)
        if action != "disable" and slice_.status != SliceStatus.DELETED:
            [check] = driver.slice_commands(service, slice_, "check", container)
            res = step.run(check, pty=False)
            if "on" not in res.stdout.split():
                raise StepFailed(f"Valkey does not report user {slice_.name} as enabled")


def _provision(ctx: OperationContext, slice_: ServiceSlice, action: str = "provision") -> None:
    service = slice_.service
    driver = get_driver(service)
    if slice_.credentials and slice_.credentials.get("password"):
        ctx.secret(slice_.credentials["password"])
    if slice_.type == SliceType.POSTGRES_DATABASE:
        container = _running_container(service)
        title = "Create database and user" if action == "provision" else "Set new password"
        with ctx.step(f"{title} {slice_.name}", server=service.server) as step:
            for command in driver.slice_commands(service, slice_, action, container):
                step.run(command, pty=False)
        _check_postgres_slice(ctx, service, slice_, container)
    elif slice_.type == SliceType.VALKEY_NAMESPACE:
        _apply_valkey_acl(ctx, service, slice_, action)
    elif slice_.type == SliceType.CADDY_ROUTE:
        _route_environment_slots(ctx, slice_)
        install_gateway_config(ctx, service)
    else:  # pragma: no cover
        raise StepFailed(f"unsupported slice type {slice_.type}")


def _route_environment_slots(ctx: OperationContext, slice_: ServiceSlice) -> None:
    """List the environment's slots in a route before installing it (what a deploy would):
    a domain attached after the first deploy answers at once, not 503 until a later deploy."""
    env = slice_.environment
    if env is None or not any(r.status == ReplicaStatus.RUNNING for svc in env.services
                              for r in svc.replicas):
        return  # never deployed: the first deploy lists the slots (and reloads once)
    from app.deploys.handlers import desired_route_config
    desired = desired_route_config(env, slice_)
    if desired is None or not desired.get("upstreams") or desired == (slice_.config or {}):
        return  # nothing to list, or already listed
    with ctx.step("Route the environment's slots") as step:
        step.log("upstreams: " + " ".join(desired["upstreams"]))
        for host in desired.get("redirect_from") or []:
            step.log(f"{host}: permanent redirect to {desired['hostnames'][0]}")
    slice_.config = desired
    db.session.commit()


def _regenerate(slice_: ServiceSlice) -> None:
    from app.attachments import regenerate_managed_variables
    if slice_.environment is not None:
        regenerate_managed_variables(slice_.environment)


@operation_handler(OperationKind.SLICE_PROVISION)
def provision_slice(ctx: OperationContext) -> None:
    """Create a slice against the running replica (no redeploy of the service)."""
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The slice no longer exists.")
    slice_.status = SliceStatus.PROVISIONING
    db.session.commit()
    try:
        _provision(ctx, slice_)
    except BaseException:
        db.session.rollback()
        slice_.status = SliceStatus.FAILED
        db.session.commit()
        raise
    slice_.status = SliceStatus.READY
    slice_.config = {**(slice_.config or {}), "provisioned_at": utcnow().isoformat()}
    _regenerate(slice_)
    db.session.commit()


@operation_handler(OperationKind.SLICE_CONFIGURE)
def configure_slice(ctx: OperationContext) -> None:
    """Slice actions: ``rotate`` the password, ``update`` a route, ``delete`` (confirmed)."""
    from app.drivers.secrets import generate_password
    slice_: ServiceSlice = ctx.target
    if slice_ is None:
        raise StepFailed("The slice no longer exists.")
    action = ctx.params.get("action")
    service = slice_.service
    driver = get_driver(service)
    if action == "rotate":
        if slice_.type == SliceType.CADDY_ROUTE:
            raise StepFailed("a route has no credentials")
        slice_.credentials = {**(slice_.credentials or {}), "password": generate_password()}
        db.session.commit()
        _provision(ctx, slice_, "rotate")
        _regenerate(slice_)
        ctx.result["note"] = "running containers keep the old password until redeployed"
        db.session.commit()
        return
    if action == "update":
        _provision(ctx, slice_)
        slice_.status = SliceStatus.READY
        db.session.commit()
        return
    if action != "delete":
        raise StepFailed(f"unknown slice action {action!r}")
    if ctx.params.get("confirm") != slice_.name:
        raise StepFailed("The deletion was not confirmed with the slice's name.")
    drop = bool(ctx.params.get("drop_data"))
    slice_.status = SliceStatus.DELETING
    db.session.commit()
    if slice_.type == SliceType.POSTGRES_DATABASE:
        container = _running_container(service)
        title = f"DROP database and user {slice_.name}" if drop else \
            f"Disable login of {slice_.name} (data kept)"
        with ctx.step(title, server=service.server) as step:
            for command in driver.slice_commands(service, slice_, "drop" if drop else "disable",
                                                 container):
                step.run(command, pty=False)
    elif slice_.type == SliceType.VALKEY_NAMESPACE:
        if drop:
            container = _running_container(service)
            with ctx.step(f"Delete keys under {slice_.config.get('prefix')}",
                          server=service.server) as step:
                [unlink, _] = driver.slice_commands(service, slice_, "drop", container)
                step.run(unlink, pty=False)
        slice_.status = SliceStatus.DELETED
        _apply_valkey_acl(ctx, service, slice_, "disable")
    slice_.status = SliceStatus.DELETED
    slice_.config = {**(slice_.config or {}), "deleted_at": utcnow().isoformat(),
                     "data_retained": not drop}
    env = slice_.environment
    for att in db.session.execute(db.select(EnvironmentAttachment).where(
            EnvironmentAttachment.service_slice_id == slice_.id)).scalars():
        db.session.delete(att)
    db.session.flush()
    if slice_.type == SliceType.CADDY_ROUTE:
        db.session.commit()
        install_gateway_config(ctx, service)
    if env is not None:
        from app.attachments import regenerate_managed_variables
        db.session.refresh(env)
        regenerate_managed_variables(env)
    ctx.result.update({"deleted": slice_.name, "data_retained": not drop})
    db.session.commit()


__all__ = ["deploy_service", "provision_slice", "configure_slice", "install_gateway_config",
           "write_project", "compose_up", "wait_healthy", "pull_image", "ensure_network",
           "start_service_deploy", "update_warning", "CaddyfileError"]
