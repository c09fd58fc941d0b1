"""The gateway side of a deploy: the route slices and their desired configuration, and the
confirmation that every gateway put new replicas in rotation (or took drained ones out).
A part of :class:`app.deploys.handlers.EnvironmentDeploy`, kept apart by concern."""
from __future__ import annotations

import time

import sqlalchemy as sa

from app.deploys import commands as dc
from app.deploys.gateway_health import health_events
from app.deploys.planning import DeployPlan, health_settings, service_replicas
from app.deploys.service import app_services, primary_web, service_server_ids
from app.deploys.slots import (HEALTH_FAILS, HEALTH_INTERVAL_MS, HEALTH_PASSES, HEALTH_TIMEOUT,
                               READY_PATH, WEBSOCKET_MATCHER, WEBSOCKET_PATHS, upstreams)
from app.deploys.values import stdout_text
from app.endpoints import slot_endpoint_address
from app.extensions import db
from app.models import Server, Service, ServiceReplica, ServiceSlice
from app.models.enums import DeployPolicy, OperationKind, SliceStatus, SliceType
from app.operations import OperationContext, StepFailed
from app.services_ops.steps import apply_service_config, running_container

ROUTE_HEALTH = {"interval": f"{HEALTH_INTERVAL_MS}ms", "timeout": HEALTH_TIMEOUT,
                "fails": HEALTH_FAILS, "passes": HEALTH_PASSES}
GATEWAY_CONFIRM_SECONDS = 90
"""How long a gateway may take to put an armed replica in rotation before the deploy fails."""
GATEWAY_DRAIN_CONFIRM_SECONDS = 60
"""How long to wait for every gateway to take a drained replica out of rotation."""
GATEWAY_POLL_SECONDS = 0.1
"""Between two reads of a gateway's log (one `docker logs --since` over the open SSH connection,
some 50 ms). Caddy checks every 250 ms: reading at that pace found a change up to a check late."""
STAMP_MARGIN_SECONDS = 1.0
"""Clock margin when reading another server's gateway log against this server's stamp."""


class GatewayRouting:
    """Gateway routes and confirmation: mixed into EnvironmentDeploy."""

    # ---------------------------------------------------------------- gateway routes
    def _route_slices(self) -> list[ServiceSlice]:
        env = self.env
        ids = {a.service_slice_id for a in env.attachments if a.service_slice_id}
        rows = db.session.execute(sa.select(ServiceSlice).where(
            ServiceSlice.type == SliceType.CADDY_ROUTE,
            sa.or_(ServiceSlice.environment_id == env.id, ServiceSlice.id.in_(ids or {-1}))
        )).scalars().all()
        return [s for s in rows if s.status not in (SliceStatus.DELETED, SliceStatus.DELETING)]

    def _slot_addresses(self, service: Service, gateway_server_id: int, *,
                        with_slots: bool = False) -> list:
        server_ids = service_server_ids(service)
        servers = db.session.execute(sa.select(Server).where(Server.id.in_(server_ids))) \
            .scalars().all()
        by_id = {s.id: s for s in servers}
        ups = upstreams(service.name, service.id, gateway_server_id,
                        [(s.id, s.private_ip) for s in servers],
                        replicas=self._route_replicas(service),
                        remote_address=lambda server_id, port: slot_endpoint_address(
                            service.id, by_id[server_id], port))
        if with_slots:
            return [(u.server_id, u.slot, u.index, u.address) for u in ups]
        return [u.address for u in ups]

    def _route_replicas(self, service: Service) -> int:
        """How many replicas per slot the routes list for ``service`` (a scale may override
        it while it adds or removes replicas: app.deploys.scale)."""
        override = getattr(self, "route_replicas", None) or {}
        if service.id in override:
            return override[service.id]
        return service_replicas(service.process_roles, service.desired_replicas)

    def _websocket_service(self) -> Service | None:
        """The environment's websocket (Reverb) service deployed with it, if any."""
        for svc in app_services(self.env):
            if "websocket" in (svc.process_roles or []) and \
                    svc.deploy_policy == DeployPolicy.WITH_ENVIRONMENT and service_server_ids(svc):
                return svc
        return None

    def _desired_route(self, route: ServiceSlice) -> dict | None:
        web_id = (route.config or {}).get("service_id")
        web = db.session.get(Service, web_id) if web_id else primary_web(self.env)
        gateway = route.service
        if web is None or gateway is None or gateway.server_id is None:
            return None
        cfg = dict(route.config or {})
        cfg.update(upstreams=self._slot_addresses(web, gateway.server_id),
                   health_path=READY_PATH, health=dict(ROUTE_HEALTH), dial_timeout="1s",
                   lb_try_duration="5s", lb_try_interval="250ms", service_id=web.id)
        ws = self._websocket_service()
        if ws is not None:
            # Reverb's Pusher paths to the websocket slots: a named path matcher and its own
            # `handle` in the same site, with the same active health check on the ready path.
            # Its active health check asks the websocket server's own health path (Laravel
            # Reverb answers GET /up; it has no Keystone ready handler, see _health_check).
            cfg["path_routes"] = [{"name": WEBSOCKET_MATCHER, "paths": list(WEBSOCKET_PATHS),
                                   "upstreams": self._slot_addresses(ws, gateway.server_id),
                                   "health_path": health_settings(ws.config, ws.name)["path"],
                                   "service_id": ws.id}]
        else:
            cfg.pop("path_routes", None)
        return cfg

    def _ensure_routes(self, plan: DeployPlan) -> None:
        """Only when a route does not list exactly the slots yet (first deploy, new server)."""
        for route in self._route_slices():
            desired = self._desired_route(route)
            if desired is None or desired == (route.config or {}):
                continue
            gateway = route.service
            self.ctx.run_child(
                OperationKind.SLICE_CONFIGURE, "service_slice", route.id,
                lambda cctx, r=route, d=desired: self._configure_route(cctx, r, d),
                lock_keys=[f"gateway:{gateway.server_id}"],
                summary=f"Route {', '.join((route.config or {}).get('hostnames', []))}: "
                        "list the blue/green slots")

    def _configure_route(self, cctx: OperationContext, route: ServiceSlice, desired: dict) -> None:
        with cctx.step("Route the environment's slots") as step:
            step.log("upstreams: " + " ".join(desired["upstreams"]))
            for pr in desired.get("path_routes") or []:
                step.log(f"{' '.join(pr['paths'])} ({pr['name']}): " + " ".join(pr["upstreams"]))
            step.log(f"active health check {READY_PATH} every {ROUTE_HEALTH['interval']}: "
                     "later deploys change no gateway configuration")
        previous = (dict(route.config or {}), route.status)
        route.config = desired
        route.status = SliceStatus.READY
        db.session.commit()
        try:
            apply_service_config(cctx, route.service)
        except BaseException:
            # Not installed: the route stays as the gateway has it, so the next deploy
            # tries again (it installs only routes whose config differs).
            db.session.rollback()
            route.config, route.status = previous
            db.session.commit()
            raise

    # ---------------------------------------------------------------- gateway confirmation
    def _gateways(self) -> list[tuple[Service, Server, str]]:
        """(gateway service, its server, its container) of every route of this environment."""
        out: dict[int, tuple[Service, Server, str]] = {}
        for route in self._route_slices():
            gateway = route.service
            if gateway is None or gateway.server_id is None or gateway.id in out:
                continue
            try:
                container = running_container(gateway)
            except StepFailed:
                continue
            out[gateway.id] = (gateway, db.session.get(Server, gateway.server_id), container)
        return list(out.values())

    def _address_on(self, gateway_server_id: int, replica: ServiceReplica) -> str | None:
        """The address a gateway on ``gateway_server_id`` dials for ``replica``'s slot."""
        service = db.session.get(Service, replica.service_id)
        slot = (replica.config or {}).get("slot")
        index = int((replica.config or {}).get("index") or 0)
        try:
            slots = self._slot_addresses(service, gateway_server_id, with_slots=True)
        except ValueError:
            return None
        for server_id, s, i, address in slots:
            if server_id == replica.server_id and s == slot and i == index:
                return address
        return None

    def _routed_new_replicas(self) -> list[ServiceReplica]:
        return [r for r in self.new.values()
                if (r.config or {}).get("role") in ("web", "websocket")]

    def _gateway_log(self, step, container: str, since: float):
        res = step.run(dc.gateway_log_since(container, since), check=False, pty=False,
                       timeout=60, quiet=True)
        return health_events(stdout_text(res)) if res.exit_code == 0 else {}

    def _await_gateways(self) -> None:
        """Arm the new replicas and wait until every gateway has them in rotation.

        Keystone decides, the gateways follow. Caddy's admin API does not show
        active health (caddyserver/caddy#6135), but the gateway's own log does:
        a failed check is a line, and so is the switch to healthy ("host is up").
        A switch is only logged when the slot was down, so per web replica:

        1. wait until every gateway has failed HEALTH_FAILS checks of its slot since
           it started (it answers 503 "not armed"): the slot is down everywhere;
        2. arm it (its ready path answers 200 from now on);
        3. wait until every gateway logged "host is up" for the slot after that.

        A websocket slot is checked by the gateways on Reverb's own health path: it
        goes up by itself, and step 3 waits for that. Nothing old is drained before
        all of this holds; a failure here removes the new replicas (drained first
        when armed) and the old ones keep serving.
        """
        replicas = self._routed_new_replicas()
        web = [r for r in replicas if (r.config or {}).get("role") == "web"]
        gateways = self._gateways()

        def started_at(r: ServiceReplica) -> float:
            return float((r.config or {}).get("started_at") or time.time()) \
                - STAMP_MARGIN_SECONDS

        if gateways and web:
            self._watch_gateways(
                "has the new slots down until they are armed", web, gateways,
                since=started_at,
                done=lambda ev, r: ev.failures_after(started_at(r)) >= HEALTH_FAILS,
                what="down (not armed yet)")
        def arm(replica_id: int) -> None:  # in a thread of its own: rows loaded by id
            r = db.session.get(ServiceReplica, replica_id)
            server = db.session.get(Server, r.server_id)
            with self.ctx.step(f"Arm {r.container_name}: Keystone's checks passed",
                               server=server) as step:
                self._arm(step, r)

        # Every new replica passed its checks: the servers arm theirs side by side.
        self._side_by_side([r.id for r in web], arm)

        def armed_at(r: ServiceReplica) -> float:
            cfg = r.config or {}
            return float(cfg.get("armed_at") or cfg.get("started_at") or time.time()) \
                - STAMP_MARGIN_SECONDS

        if gateways and replicas:
            self._watch_gateways(
                "has the new replicas in rotation", replicas, gateways, since=armed_at,
                done=lambda ev, r: ev.up_after(armed_at(r)), what="in rotation")
        def still_runs(replica_id: int) -> None:
            r = db.session.get(ServiceReplica, replica_id)
            server = db.session.get(Server, r.server_id)
            with self.ctx.step(f"Check {r.container_name} still runs", server=server) as step:
                self._check_not_crashing(step, r.container_name, "during the deploy")
                step.log("running, 0 restarts")

        self._side_by_side([r.id for r in replicas], still_runs)

    def _side_by_side(self, ids: list[int], work) -> None:
        """``work(id)`` for each id, one thread per id (app.operations.fanout) when several."""
        if len(ids) > 1:
            self.ctx.in_parallel(ids, work)
        else:
            for i in ids:
                work(i)

    def _watch_gateways(self, title: str, replicas: list[ServiceReplica], gateways,
                        since, done, what: str) -> None:
        """Poll each gateway's log until ``done(events, replica)`` holds for every replica."""
        for gateway, server, container in gateways:
            with self.ctx.step(f"Wait until the gateway on {server.name} {title}",
                               server=server) as step:
                pending: dict[str, ServiceReplica] = {}
                for r in replicas:
                    address = self._address_on(server.id, r)
                    if address:
                        pending[address] = r
                if not pending:
                    step.unchanged("this gateway does not route these replicas")
                    continue
                first = min(since(r) for r in pending.values())
                step.log(f"reading {container}'s log (Caddy's active health checks) for "
                         + ", ".join(sorted(pending)))
                deadline = time.monotonic() + GATEWAY_CONFIRM_SECONDS
                while pending:
                    self.ctx.check_cancelled()
                    events = self._gateway_log(step, container, first)
                    for address in list(pending):
                        r = pending[address]
                        if address in events and done(events[address], r):
                            step.log(f"{address} ({r.container_name}): {what}")
                            del pending[address]
                    if not pending:
                        break
                    if time.monotonic() > deadline:
                        raise StepFailed(
                            f"the gateway on {server.name} did not see "
                            + ", ".join(f"{a} ({r.container_name})" for a, r in pending.items())
                            + f" {what} within {GATEWAY_CONFIRM_SECONDS}s; nothing old was "
                            "touched")
                    time.sleep(GATEWAY_POLL_SECONDS)

    def _await_out_of_rotation(self, ctx: OperationContext,
                               drained: list[tuple[ServiceReplica, float]]) -> None:
        """Wait until every gateway failed HEALTH_FAILS checks of each drained replica.

        That is when Caddy marks the slot down and sends it nothing new. Bounded: a
        gateway that cannot be read (stopped, unreachable) is logged and not waited for.
        """
        for gateway, server, container in self._gateways():
            pending = {}
            for replica, stamp in drained:
                address = self._address_on(server.id, replica)
                if address:
                    pending[address] = (replica, stamp - STAMP_MARGIN_SECONDS)
            if not pending:
                continue
            since = min(s for _, s in pending.values())
            deadline = time.monotonic() + GATEWAY_DRAIN_CONFIRM_SECONDS
            with ctx.step(f"Wait until the gateway on {server.name} stops sending to "
                          + ", ".join(r.container_name for r, _ in pending.values()),
                          server=server) as gstep:
                while pending:
                    ctx.check_cancelled()
                    events = self._gateway_log(gstep, container, since)
                    for address in list(pending):
                        replica, after = pending[address]
                        fails = events[address].failures_after(after) if address in events else 0
                        if fails >= HEALTH_FAILS:
                            gstep.log(f"{address} ({replica.container_name}): out of rotation "
                                      f"({fails} failed checks since it was drained)")
                            del pending[address]
                    if not pending:
                        break
                    if time.monotonic() > deadline:
                        gstep.log("not confirmed within "
                                  f"{GATEWAY_DRAIN_CONFIRM_SECONDS}s: "
                                  + ", ".join(sorted(pending)) + "; going on")
                        break
                    time.sleep(GATEWAY_POLL_SECONDS)

