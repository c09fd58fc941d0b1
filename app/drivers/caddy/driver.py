"""Caddy 2 gateway: exactly one per server, owning ports 80 and 443 (SPEC 15).

Routes come from ``caddy_route`` slices of the gateway service. The
Caddyfile lives at /home/keystone/gateway/Caddyfile; the *directory* is
bind-mounted at /etc/caddy, because a single-file bind mount pins the inode
and would never see an atomic rename. Installing a config:
validate inside the running container -> keep the current file as
``Caddyfile.last-good`` -> rename the new one in place -> ``caddy reload``
(graceful, through the admin API on localhost:2019 inside the container) ->
on failure put last-good back and reload it. The container itself is never
restarted for a route change.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Iterable

from app.drivers.base import (GATEWAY_DIR, Driver, DriverError, HealthCheck, PortSpec,
                              RenderContext, UpdateBehaviour, VolumeSpec)
from app.drivers.caddy.caddyfile import (CaddyfileError, GatewayOptions, Route, caddy_binary,
                                         check_caddyfile, render_caddyfile, validate_hostname)
from app.drivers.caddy.tls import AcmeSettings
from app.drivers.compose import base_service
from app.drivers.plan import Mkdir, PutFile, Run, StepPlan, Unchanged
from app.drivers.registry import register
from app.models.enums import AttachmentRole, DeployPolicy, ServiceCategory, SliceStatus, SliceType
from app.shell import Command, and_then, cmd, or_else, pipe

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service, ServiceSlice

CONFIG_DIR_IN_CONTAINER = "/etc/caddy"
CADDYFILE = f"{GATEWAY_DIR}/Caddyfile"
CADDYFILE_NEXT = f"{GATEWAY_DIR}/Caddyfile.next"
CADDYFILE_LAST_GOOD = f"{GATEWAY_DIR}/Caddyfile.last-good"
ACME_CA_ROOT = f"{GATEWAY_DIR}/acme_ca_root.pem"


class GatewayConflict(DriverError):
    pass


@register
class CaddyDriver(Driver):
    type = "caddy"
    category = ServiceCategory.GATEWAY
    version_track = "2"
    default_image = "caddy:2"
    deploy_policy = DeployPolicy.MANUAL_OR_ON_ROUTE_CHANGE
    ports = (PortSpec("http", 80, public=True), PortSpec("https", 443, public=True),
             PortSpec("http3", 443, protocol="udp", public=True))
    volumes = (VolumeSpec("caddy_data", "/data"), VolumeSpec("caddy_config", "/config"))
    slice_types = (SliceType.CADDY_ROUTE,)
    label = "Caddy 2 gateway (ports 80/443, one per server)"
    short_label = "Caddy gateway"
    name_base = "gateway"
    attach_roles = (AttachmentRole.GATEWAY,)
    routes_environment = True
    health_check = HealthCheck(("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/"),
                               interval="5s", timeout="3s", retries=6, start_period="5s")
    stop_grace_period = "15s"
    update_behaviour = UpdateBehaviour(
        stateful=False, downtime=True,
        warning=("Updating the gateway recreates the Caddy container: every site on this "
                 "server is unreachable for a few seconds. Certificates are kept in the "
                 "caddy_data volume."))

    def compose_service(self, service: "Service", ctx: RenderContext) -> dict[str, Any]:
        entry = base_service(self, service, ctx)
        entry["command"] = ["caddy", "run", "--config", f"{CONFIG_DIR_IN_CONTAINER}/Caddyfile",
                            "--adapter", "caddyfile"]
        entry["ports"] = ["80:80", "443:443", "443:443/udp"]
        entry["volumes"] = [f"{v.volume_name(service.id)}:{v.mount_path}" for v in self.volumes]
        entry["volumes"].append(f"{GATEWAY_DIR}:{CONFIG_DIR_IN_CONTAINER}:ro")
        entry["healthcheck"] = self.health_check.compose()
        return entry

    # -- plans (app.services_ops runs them) ------------------------------------

    def check_placement(self, service: "Service") -> None:
        assert_single_gateway(service)

    def deploy_lock_keys(self, service: "Service") -> list[str]:
        return [f"gateway:{service.server_id}"]

    def deploy_steps(self, service, *, running):
        text = self.render_gateway_config(service)
        acme = AcmeSettings.for_gateway(service)
        check_caddyfile(text, acme_ca_root_pem=acme.ca_root_pem)
        # The live gateway keeps serving its file; the new one is installed
        # (validated, last good kept, reloaded) once the container is up.
        write = Unchanged("the running gateway's configuration is replaced after start") \
            if running else PutFile(CADDYFILE, text, mode=0o644)
        actions = [Mkdir(CADDYFILE.rsplit("/", 1)[0]), write]
        if acme.ca_root_pem and not running:
            actions.append(PutFile(ACME_CA_ROOT, acme.ca_root_pem, mode=0o644))
        return [StepPlan("Write initial gateway configuration", tuple(actions))]

    def after_deploy_steps(self, service, container, *, is_update):
        return self.reconfigure_steps(service, container)

    def reconfigure_steps(self, service, container):
        """Validate and install the Caddyfile, then reload Caddy without downtime.

        An explicit no-op when the server already has exactly this config. On a
        failed reload the last good config is put back and reloaded, and the step fails.
        """
        text = self.render_gateway_config(service)
        acme = AcmeSettings.for_gateway(service)
        if caddy_binary():
            check_caddyfile(text, acme_ca_root_pem=acme.ca_root_pem)
        # The CA root is part of what "this configuration" means: a changed root alone
        # must reinstall and reload too.
        want = hashlib.sha256((text + (acme.ca_root_pem or "")).encode()).hexdigest()
        root = (PutFile(ACME_CA_ROOT, acme.ca_root_pem, mode=0o644),) if acme.ca_root_pem else ()
        return [StepPlan("Install gateway configuration", (
            Run(self.current_hash_cmd(bool(acme.ca_root_pem)), check=False, pty=False,
                unchanged_if=lambda out: out.split()[:1] == [want],
                unchanged_message="the gateway already has this configuration"),
            *root,
            PutFile(CADDYFILE_NEXT, text, mode=0o644),
            # The gateway's own Caddy judges the file before it replaces anything: a
            # refusal is the step's reason, and the refused file is removed.
            Run(self.validate_cmd(container, f"{CONFIG_DIR_IN_CONTAINER}/Caddyfile.next"),
                timeout=60, on_failure=(Run(cmd("rm", "-f", CADDYFILE_NEXT), check=False),),
                failure_log="caddy validate refused the new configuration",
                failure_message="The gateway's Caddy refused the new configuration; it was not "
                                "installed and the previous one is still serving"),
            Run(self.install_cmd()),
            Run(self.reload_cmd(container), timeout=60,
                on_failure=(Run(self.restore_cmd(), check=False),
                            Run(self.reload_cmd(container), check=False, timeout=60)),
                failure_log="reload failed: restoring the last good configuration",
                failure_message="Caddy refused the new configuration; the previous one is "
                                "still serving")))]

    def new_slice_credentials(self, slice_):
        raise DriverError("a route has no credentials")

    def slice_provision_steps(self, service, slice_, container, action="provision"):
        return self.reconfigure_steps(service, container)

    def slice_released_steps(self, service, container):
        return self.reconfigure_steps(service, container)

    def slice_peers(self, service, slice_):
        """The other gateways serving one of the route's names: their ACME challenge ring
        now includes this gateway, so their Caddyfiles change (docs/https.md)."""
        from app.extensions import db
        from app.models import Service as ServiceModel
        route = Route.from_config(slice_.config or {}, name=slice_.name)
        peers = []
        for gid in _ring(service, route):
            if gid != service.id:
                peer = db.session.get(ServiceModel, gid)
                if peer is not None and peer.server_id is not None:
                    peers.append(peer)
        return peers

    # -- routes -----------------------------------------------------------

    def routes(self, slices: Iterable["ServiceSlice"]) -> list[Route]:
        live = [s for s in slices if s.type == SliceType.CADDY_ROUTE
                and s.status not in (SliceStatus.DELETED, SliceStatus.DELETING)]
        return [Route.from_config(s.config or {}, name=s.name) for s in live]

    def render_gateway_config(self, service: "Service",
                              slices: Iterable["ServiceSlice"] | None = None) -> str:
        """The Caddyfile for this gateway from its route slices (validated tokens)."""
        cfg = service.config or {}
        acme = AcmeSettings.for_gateway(service)
        options = GatewayOptions(email=acme.email, grace_period=cfg.get("grace_period", "10s"),
                                 acme_ca=acme.ca, acme_ca_root=bool(acme.ca_root_pem),
                                 renewal_window_ratio=acme.renewal_window_ratio,
                                 renew_interval=acme.renew_interval)
        routes = self.routes(service.slices if slices is None else slices)
        for route in routes:
            route.challenge_peers = challenge_peers(service, route)
        return render_caddyfile(routes, options, header=f"Keystone gateway, service {service.id}")

    def new_slice_config(self, name: str, hostnames: list[str], tls: str = "auto",
                         upstreams: list | None = None, environment_id: int | None = None,
                         health_path: str | None = None,
                         redirect_from: list[str] | None = None,
                         hsts: bool = False) -> tuple[dict, dict | None]:
        hosts = [validate_hostname(h) for h in hostnames]
        cfg: dict[str, Any] = {"hostnames": hosts, "tls": tls, "upstreams": upstreams or []}
        if hsts:
            if tls == "off":
                raise CaddyfileError("HSTS needs HTTPS (tls is off)")
            cfg["hsts"] = True
        if redirect_from:
            # Answered with a permanent redirect to hosts[0] (e.g. www -> apex).
            cfg["redirect_from"] = [validate_hostname(h, allow_wildcard=False)
                                    for h in redirect_from]
        if environment_id is not None:
            cfg["environment_id"] = environment_id
        if health_path:
            cfg["health_path"] = health_path
        route = Route.from_config(cfg, name)  # validates upstreams / tls shape
        if redirect_from:
            render_caddyfile([route])  # a redirect to a wildcard or a repeated name is refused
        return cfg, None

    # -- installing a config (commands; the handler runs them) -----------

    def validate_cmd(self, container: str, path_in_container: str) -> Command:
        return cmd("docker", "exec", container, "caddy", "validate", "--config",
                   path_in_container, "--adapter", "caddyfile")

    def install_cmd(self) -> Command:
        """Keep the running config as last-good, then rename the validated one in place."""
        keep = or_else(cmd("test", "!", "-f", CADDYFILE), cmd("cp", "-p", CADDYFILE,
                                                              CADDYFILE_LAST_GOOD))
        return and_then(keep, cmd("mv", "-f", CADDYFILE_NEXT, CADDYFILE))

    def reload_cmd(self, container: str) -> Command:
        return cmd("docker", "exec", "-w", CONFIG_DIR_IN_CONTAINER, container, "caddy", "reload",
                   "--config", f"{CONFIG_DIR_IN_CONTAINER}/Caddyfile", "--adapter", "caddyfile")

    def restore_cmd(self) -> Command:
        return and_then(cmd("test", "-f", CADDYFILE_LAST_GOOD),
                        cmd("cp", "-p", CADDYFILE_LAST_GOOD, CADDYFILE))

    def current_hash_cmd(self, with_root: bool = False) -> Command:
        """sha256 of the installed Caddyfile (followed by the CA root when there is one)."""
        if with_root:
            return or_else(and_then(cmd("test", "-f", ACME_CA_ROOT),
                                    pipe(cmd("cat", CADDYFILE, ACME_CA_ROOT), cmd("sha256sum"))),
                           cmd("true"))
        return or_else(cmd("sha256sum", CADDYFILE), cmd("true"))

    def slice_commands(self, service, slice_, action, container, **params):
        # Route changes are whole-file installs (reconfigure_steps).
        raise DriverError("caddy routes are applied by installing the rendered Caddyfile")


def _ring(service: "Service", route: Route) -> list[int]:
    """Ids of the gateways (this one included) with a live ``tls auto`` route for one of
    ``route``'s names, in the organisation, sorted: the ACME challenge ring."""
    from app.extensions import db
    from app.models import Service as ServiceModel, ServiceSlice
    from flask import has_app_context
    if route.tls != "auto" or service.id is None or not has_app_context():
        return []  # rendering from data alone (no database): no other gateway is known
    names = set(route.all_hostnames)
    with db.session.no_autoflush:
        rows = db.session.execute(
            db.select(ServiceSlice.config, ServiceModel.id).join(
                ServiceModel, ServiceSlice.service_id == ServiceModel.id)
            .where(ServiceModel.type == CaddyDriver.type,
                   ServiceModel.organisation_id == service.organisation_id,
                   ServiceSlice.type == SliceType.CADDY_ROUTE,
                   ServiceSlice.status.not_in([SliceStatus.DELETED, SliceStatus.DELETING]))
        ).all()
    ids = {service.id}
    for cfg, gid in rows:
        cfg = cfg or {}
        hosts = set(cfg.get("hostnames") or []) | set(cfg.get("redirect_from") or [])
        if hosts & names and cfg.get("tls", "auto") == "auto":
            ids.add(gid)
    return sorted(ids)


def challenge_peers(service: "Service", route: Route) -> list[str]:
    """Private addresses of the other gateways that serve one of ``route``'s names, in ring
    order starting after this one (by service id): where an ACME HTTP-01 challenge this
    gateway did not start is forwarded (app.drivers.caddy.caddyfile, docs/https.md)."""
    from app.endpoints import Unreachable, cross_server_address
    from app.extensions import db
    from app.models import Server, Service as ServiceModel
    ring = _ring(service, route)
    if len(ring) < 2:
        return []
    at = ring.index(service.id)
    peers = []
    for gid in ring[at + 1:] + ring[:at]:
        gateway = db.session.get(ServiceModel, gid)
        server = db.session.get(Server, gateway.server_id) if gateway is not None else None
        if server is not None:
            try:  # its private IP; its public one only by the server's opt-in (SPEC 14)
                peers.append(cross_server_address(server)[1])
            except Unreachable:
                continue
    return peers


def assert_single_gateway(service: "Service") -> None:
    """Refuse a second gateway service on the same server (SPEC 15)."""
    from app.extensions import db
    from app.models import Service as ServiceModel
    server_id = service.server_id or (service.server.id if service.server is not None else None)
    if server_id is None:
        raise GatewayConflict("a gateway must be placed on a server")
    with db.session.no_autoflush:
        others = db.session.execute(
            db.select(ServiceModel).where(ServiceModel.type == CaddyDriver.type,
                                          ServiceModel.server_id == server_id,
                                          ServiceModel.id != (service.id or -1))).scalars().all()
    if others:
        raise GatewayConflict(f"server {server_id} already has a gateway "
                              f"(service {others[0].id}, {others[0].name!r}): there is "
                              "exactly one per server, it owns ports 80 and 443")


__all__ = ["CaddyDriver", "CaddyfileError", "GatewayConflict", "assert_single_gateway"]
