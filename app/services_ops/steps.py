"""Building blocks of service operations, and the runner of driver plans.

* :func:`run_plan` -- one recorded step per :class:`app.drivers.plan.StepPlan`;
* :func:`apply_service_config` -- a driver's ``reconfigure_steps`` against the
  running container (e.g. the gateway's Caddyfile: validate, install with the
  last good kept, graceful reload, roll back on failure);
* :func:`write_project` -- upload compose.yml/.env/compose.env (0600) of a
  :class:`~app.drivers.base.RenderedCompose`;
* :func:`compose_up` / :func:`wait_healthy` -- start a project, wait for the
  container's health check;
* :func:`pull_image` -- pull an image, logged in to its registry with an
  operation-private ``DOCKER_CONFIG`` (logout in ``finally``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import posixpath
import time
from typing import TYPE_CHECKING, Iterable, Sequence

import sqlalchemy as sa

from app.builds.artifacts import RegistrySession
from app.builds.commands import pull as pull_cmd
from app.drivers import get_driver
from app.drivers.base import DOCKER_NETWORK, RenderedCompose, default_container_name
from app.drivers.compose import INTERPOLATION_ENV_TEXT, compose_cmd, ensure_network_cmd
from app.drivers.plan import Action, Log, Mkdir, PutFile, Run, StepPlan, Unchanged
from app.extensions import db
from app.models import Service, ServiceReplica
from app.models.enums import ReplicaStatus
from app.operations import OperationContext, StepFailed
from app.provisioning.commands import (UFW_PATH, FirewallRuleError, firewall_allow,
                                       firewall_installed, ufw_allow_private)
from app.registries.images import org_registry, parse_image
from app.shell import cmd

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Server

HEALTH_TIMEOUT = 180
POLL_INTERVAL = 2.0
PROBE_INTERVAL = 0.5  # wait_healthy running the container's own check


# --------------------------------------------------------------------------- driver plans

def run_plan(ctx: OperationContext, server: "Server | None", plans: Iterable[StepPlan]) -> bool:
    """Run each planned step on ``server``; False when every one was an explicit no-op."""
    changed = False
    for plan in plans:
        with ctx.step(plan.title, server=None if plan.local else server) as step:
            if _run_actions(step, plan.actions):
                changed = True
    return changed


def _run_actions(step, actions: Sequence[Action]) -> bool:
    for action in actions:
        if isinstance(action, Mkdir):
            step.mkdir(action.path)
        elif isinstance(action, PutFile):
            step.put_file(action.path, action.content, mode=action.mode)
        elif isinstance(action, Log):
            step.log(action.text)
        elif isinstance(action, Unchanged):
            step.unchanged(action.message)
        elif isinstance(action, Run):
            res = step.run(action.command, timeout=action.timeout, pty=action.pty,
                           check=action.check and not action.on_failure)
            if action.unchanged_if is not None and action.unchanged_if(res.stdout):
                step.unchanged(action.unchanged_message)
                return False
            if action.on_failure and res.exit_code != 0:
                if action.failure_log:
                    step.log(action.failure_log)
                _run_actions(step, action.on_failure)
                raise StepFailed(action.failure_message or f"{step.name}: the command failed")
            problem = action.expect(res.stdout) if action.expect is not None else None
            if problem:
                raise StepFailed(problem)
        else:  # pragma: no cover - a driver bug
            raise TypeError(f"not a plan action: {action!r}")
    return not step.skipped


def apply_service_config(ctx: OperationContext, service: Service, *,
                         container: str | None = None) -> bool:
    """Apply the service's rendered configuration to its running container (no restart)."""
    container = container or running_container(service)
    plans = get_driver(service).reconfigure_steps(service, container)
    return run_plan(ctx, service.server, plans)


# --------------------------------------------------------------------------- replicas

def replica_for(service: Service) -> ServiceReplica:
    """The single replica of a single-container service on its server (created if missing)."""
    for r in service.replicas:
        if r.server_id == service.server_id and r.status != ReplicaStatus.REMOVED:
            return r
    replica = ServiceReplica(service=service, server_id=service.server_id,
                             container_name=default_container_name(service),
                             status=ReplicaStatus.PENDING)
    db.session.add(replica)
    db.session.commit()
    return replica


def running_container(service: Service) -> str:
    for r in service.replicas:
        if r.status == ReplicaStatus.RUNNING:
            return r.container_name
    raise StepFailed(f"{service.name} has no running replica: deploy it first")


# --------------------------------------------------------------------------- building blocks

def pull_image(ctx: OperationContext, server: "Server", image: str, organisation_id: int,
               *, timeout: int = 900) -> None:
    """``docker pull`` on the server, logged in to the image's registry if the org has credentials.

    The login uses the build's :class:`app.builds.artifacts.RegistrySession`:
    an operation-private ``DOCKER_CONFIG`` directory, ``docker logout`` and
    its removal in a ``finally``, so no credential stays in the server user's
    ``~/.docker/config.json``.
    """
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
                 timeout: float = HEALTH_TIMEOUT, probe: list[str] | None = None) -> str:
    """Poll the container's health until healthy; fail with its last log lines otherwise.

    ``probe`` is the container's own health check (``HealthCheck.exec_argv``). Docker
    runs its first check one interval (5 s) after the start, however soon the service is
    up; while Docker still says ``starting``, the step runs the same check itself every
    PROBE_INTERVAL and the service is healthy as soon as it passes. Docker's own status
    (the periodic health check reads it) follows at its next check.
    """
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
            if status == "starting" and probe:
                checked = step.run(cmd("docker", "exec", container, *probe), check=False,
                                   pty=False, timeout=30)
                if checked.exit_code == 0:
                    step.log(f"{container}: healthy (its health check passed, run by Keystone; "
                             "Docker says so at its next check)")
                    return "healthy"
            ctx.check_cancelled()
            time.sleep(PROBE_INTERVAL if probe else POLL_INTERVAL)


def container_id(ctx: OperationContext, server: "Server", container: str) -> str | None:
    with ctx.step(f"Inspect {container}", server=server) as step:
        res = step.run(cmd("docker", "inspect", "--format", "{{.Id}}", container), check=False,
                       pty=False)
        step.unchanged()
    return res.stdout.strip() or None


def ensure_network(ctx: OperationContext, server: "Server") -> None:
    with ctx.step(f"Ensure Docker network {DOCKER_NETWORK}", server=server) as step:
        step.run(ensure_network_cmd(), timeout=60)


def open_firewall(ctx: OperationContext, server: "Server", rules,
                  sources: list[str] | None = None) -> None:
    """Cross-server ports: reachable from the organisation's own servers only.

    Such a port is published by Docker on the server's private address only. Docker's
    published ports bypass UFW (DNAT, then FORWARD: docs/firewall.md), so who may
    connect is kept by ``keystone-firewall`` in DOCKER-USER, through the sudo rule
    provisioning wrote: the private addresses of the organisation's servers, and
    nobody else on the private network. The UFW rule (``sudo -n ufw allow from
    NETWORK to any port PORT proto tcp``, the same words as the sudoers entry, see
    app.provisioning.commands.UFW_PRIVATE_ALLOW) keeps UFW's own view consistent.

    A server without a private network whose ``public_fallback`` opt-in is on (SPEC 14,
    app.endpoints) publishes on its public IP instead: the sources are then the OTHER
    servers' public IPs, in DOCKER-USER and one UFW rule each, never everyone.
    """
    from app.endpoints import Unreachable, cross_server_address, peer_sources
    from app.models.enums import EndpointScope
    if not rules:
        return
    try:
        scope, address = cross_server_address(server)
    except Unreachable:
        return  # nothing was published for the other servers (the consumers say why)
    ufw = (server.facts or {}).get("ufw_path") or UFW_PATH
    if scope == EndpointScope.PRIVATE_NETWORK:
        ufw_sources = [(server.facts or {}).get("private_network") or
                       str(ipaddress.ip_network(f"{address}/16", strict=False))]
        if sources is None:
            sources = _organisation_private_addresses(server)
        title = "Open cross-server ports to the organisation's servers"
    else:
        # Public fallback (the server's explicit opt-in): the peer servers' public IPs, one
        # by one, in UFW as in DOCKER-USER; never "from any".
        if sources is None:
            sources = peer_sources(server, scope)
        ufw_sources = list(sources)
        title = "Open cross-server ports to the organisation's servers' public IPs"
    with ctx.step(title, server=server) as step:
        for rule in rules:
            if rule.protocol != "tcp":
                raise StepFailed(f"{rule.comment or 'a service'}: only TCP ports can be opened to "
                                 f"the private network (the sudo rule allows tcp), not "
                                 f"{rule.protocol}")
        if not sources:
            step.unchanged("no other server of the organisation has a public IP: "
                           "the port stays closed to everyone but this server")
            return
        have_ufw = step.run(cmd("test", "-x", ufw), check=False, pty=False).exit_code == 0
        have_helper = step.run(firewall_installed(), check=False, pty=False).exit_code == 0
        if not have_helper and scope == EndpointScope.PUBLIC:
            # Docker-published ports bypass UFW: on the public IP that is the whole internet.
            raise StepFailed(f"{server.name}: keystone-firewall is not installed, so a port "
                             "published on its public IP would be open to everyone; "
                             "re-provision the server first")
        if not have_helper:
            step.log("keystone-firewall is not installed on this server (provisioned before it "
                     "existed): re-provision it, or any machine on the network can "
                     "reach these ports")
        for rule in rules:
            try:
                commands = []
                if have_ufw:
                    commands += [ufw_allow_private(src, int(rule.port), ufw)
                                 for src in ufw_sources]
                if have_helper:
                    commands.append(firewall_allow(address, int(rule.port), sources))
            except FirewallRuleError as exc:
                raise StepFailed(str(exc)) from None
            step.log(f"{rule.comment}: {address}:{rule.port}/tcp from "
                     f"{', '.join(sources)}")
            for command in commands:
                _run_iptables_command(step, command)
        if not have_ufw and not have_helper:
            step.unchanged("neither ufw nor keystone-firewall is installed on this server")


def require_public_firewall(ctx: OperationContext, server: "Server", rules) -> None:
    """Before anything is published on a public IP (the public fallback, SPEC 14): the
    DOCKER-USER helper must be there, or the port would be open to everyone the moment the
    container starts (UFW never sees Docker-published ports). Nothing to do otherwise."""
    from app.endpoints import Unreachable, cross_server_address
    from app.models.enums import EndpointScope
    if not rules:
        return
    try:
        scope, address = cross_server_address(server)
    except Unreachable:
        return
    if scope != EndpointScope.PUBLIC:
        return
    with ctx.step("Check the firewall helper before publishing on the public IP",
                  server=server) as step:
        if step.run(firewall_installed(), check=False, pty=False).exit_code != 0:
            raise StepFailed(f"{server.name}: keystone-firewall is not installed, so a port "
                             f"published on its public IP {address} would be open to "
                             "everyone; re-provision the server first")
        step.unchanged("keystone-firewall is installed")


IPTABLES_BUSY = ("problem running", "xtables lock", "Resource temporarily unavailable")
IPTABLES_TRIES = 5


def _run_iptables_command(step, command) -> None:
    """Run a ufw / keystone-firewall command, again when iptables was busy.

    Docker changes the same tables whenever a container with a published port starts
    (another replica of this deploy, on this server, at this very moment): ufw then
    fails with "ERROR: problem running" (iptables-restore could not take the xtables
    lock). That is transient; anything else fails the step at once."""
    for attempt in range(1, IPTABLES_TRIES + 1):
        res = step.run(command, pty=False, timeout=60, check=False)
        if res.exit_code == 0:
            return
        text = (res.stdout or "") + (getattr(res, "stderr", "") or "")
        if attempt == IPTABLES_TRIES or not any(m in text for m in IPTABLES_BUSY):
            step.run(command, pty=False, timeout=60)  # fails the step with its output
            return
        step.log(f"iptables was busy (attempt {attempt} of {IPTABLES_TRIES}): trying again")
        time.sleep(attempt)


def _organisation_private_addresses(server: "Server") -> list[str]:
    """The private addresses of the organisation's servers (this one included)."""
    from app.models import Server
    rows = db.session.execute(sa.select(Server.private_ip).where(
        Server.organisation_id == server.organisation_id,
        Server.private_ip.is_not(None))).scalars()
    addresses = set()
    for value in rows:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            continue
        if address.version == 4:
            addresses.add(str(address))
    return sorted(addresses, key=ipaddress.ip_address)
