"""Endpoints (SPEC 14): the rows deploys write are what attachments and cross-server upstreams
read; the public fallback only when the server explicitly allows it (database, no server)."""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from app.attachments import (AttachmentError, attach_postgres, consumer_endpoint,
                             effective_environment, regenerate_managed_variables)
from app.drivers.base import FirewallRule, service_alias
from app.endpoints import (Unreachable, cross_server_address, peer_sources,
                           retire_endpoints_of_gone_replicas, set_replica_endpoint_health,
                           slot_endpoint_address, upsert_service_endpoints,
                           upsert_slot_endpoint)
from app.extensions import db
from app.models import Endpoint, Server, Service, ServiceReplica
from app.models.enums import EndpointScope, HealthStatus, ReplicaStatus
from tests.factories import build_org


@pytest.fixture()
def graph(app):
    g = build_org()
    g.lonely = Server(organisation=g.org, name="lonely", public_ip="198.51.100.7")  # no private
    g.peer = Server(organisation=g.org, name="web-2", public_ip="198.51.100.8",
                    private_ip="10.0.0.3")
    db.session.add_all([g.lonely, g.peer])
    db.session.commit()
    return g


def _pg_replica(g, server=None) -> ServiceReplica:
    replica = ServiceReplica(service=g.postgres, server=server or g.server,
                             container_name="ks-postgres", status=ReplicaStatus.RUNNING)
    db.session.add(replica)
    db.session.flush()
    return replica


def test_the_routing_preference_and_its_refusal(graph):
    assert cross_server_address(graph.server) == (EndpointScope.PRIVATE_NETWORK, "10.0.0.2")
    with pytest.raises(Unreachable, match="lonely has no private IP.*allow the public-network "
                                          "fallback"):
        cross_server_address(graph.lonely)
    graph.lonely.public_fallback = True
    assert cross_server_address(graph.lonely) == (EndpointScope.PUBLIC, "198.51.100.7")
    graph.lonely.public_ip = None
    with pytest.raises(Unreachable, match="neither a private IP nor a public"):
        cross_server_address(graph.lonely)


def test_attachment_variables_come_from_the_endpoint_rows(graph):
    """A deploy's rows, not the server's columns: a port the row says is the port the
    environment gets (same server: the Docker alias; another server: the published one)."""
    pg = graph.postgres
    pg.config = {"expose_private": True}
    replica = _pg_replica(graph)
    upsert_service_endpoints(pg, replica, 5432, published_port=15432)
    db.session.flush()
    rows = {(e.scope, e.hostname, e.port) for e in pg.endpoints}
    assert rows == {(EndpointScope.DOCKER_NETWORK, service_alias(pg), 5432),
                    (EndpointScope.PRIVATE_NETWORK, "10.0.0.2", 15432)}
    assert consumer_endpoint(pg, graph.server.id) == (service_alias(pg), 5432)
    assert consumer_endpoint(pg, graph.peer.id) == ("10.0.0.2", 15432)

    # Managed variables of an environment on the other server follow the rows.
    env = type(graph.environment)(application=graph.application, name="staging", branch="dev")
    db.session.add(env)
    web = Service(organisation=graph.org, environment=env, name="web2", type="laravel",
                  category=graph.web.category, driver_name="laravel", process_roles=["web"],
                  server=graph.peer)
    db.session.add(web)
    db.session.flush()
    attach_postgres(env, pg)
    values = effective_environment(env)
    assert (values["DB_HOST"], values["DB_PORT"]) == ("10.0.0.2", "15432")
    private = next(e for e in pg.endpoints if e.scope == EndpointScope.PRIVATE_NETWORK)
    private.port = 25432  # what the next deploy would record
    assert regenerate_managed_variables(env) == ["DB_PORT"]
    assert effective_environment(env)["DB_PORT"] == "25432"


def test_without_the_opt_in_a_server_without_private_network_is_refused(graph):
    pg = graph.postgres
    pg.server = graph.lonely
    pg.config = {"expose_private": True}
    db.session.flush()
    with pytest.raises(AttachmentError, match="lonely has no private IP"):
        consumer_endpoint(pg, graph.server.id)
    # Same server: the Docker network, whatever the server's networks.
    assert consumer_endpoint(pg, graph.lonely.id) == (service_alias(pg), 5432)


def test_with_the_opt_in_the_public_ip_is_the_endpoint(graph):
    pg = graph.postgres
    pg.server = graph.lonely
    pg.config = {"expose_private": True}
    graph.lonely.public_fallback = True
    db.session.flush()
    # Before the deploy: the endpoint it will write.
    assert consumer_endpoint(pg, graph.server.id) == ("198.51.100.7", 5432)
    replica = _pg_replica(graph, graph.lonely)
    upsert_service_endpoints(pg, replica, 5432)
    db.session.flush()
    public = [e for e in pg.endpoints if e.scope == EndpointScope.PUBLIC]
    assert [(e.hostname, e.ip_address, e.port, e.priority) for e in public] == \
        [("198.51.100.7", "198.51.100.7", 5432, 30)]
    assert consumer_endpoint(pg, graph.peer.id) == ("198.51.100.7", 5432)


def test_a_private_endpoint_is_refused_to_a_server_without_private_network(graph):
    pg = graph.postgres
    pg.config = {"expose_private": True}
    upsert_service_endpoints(pg, _pg_replica(graph), 5432)
    db.session.flush()
    with pytest.raises(AttachmentError, match="lonely has no private IP: it cannot reach"):
        consumer_endpoint(pg, graph.lonely.id)


def test_the_service_deploy_publishes_on_the_public_ip_only_by_opt_in(graph):
    from app.drivers import get_driver
    from app.services_ops.deploy import _publish_address, plan_service_deploy
    pg = graph.postgres
    pg.server = graph.lonely
    pg.config = {"expose_private": True}
    db.session.flush()
    assert _publish_address(pg, graph.lonely) is None
    graph.lonely.public_fallback = True
    address = _publish_address(pg, graph.lonely)
    assert address == "198.51.100.7"
    plan = plan_service_deploy(get_driver(pg), pg, image="postgres:18", container_name="ks-pg",
                               running=False, private_ip=address)
    assert "198.51.100.7:5432:5432" in plan.rendered.compose_yaml


class _Ctx:
    """Records what open_firewall runs (a fake of the operations engine, pure)."""

    def __init__(self, helper=True):
        self.ran: list[str] = []
        self.titles: list[str] = []
        self.helper = helper

    @contextmanager
    def step(self, name, server=None):
        ctx = self
        ctx.titles.append(name)

        class Step:
            def run(self, command, **kw):
                ctx.ran.append(command.render())
                missing = not ctx.helper and command.render().endswith("keystone-firewall")
                return SimpleNamespace(exit_code=1 if missing else 0, stdout="")

            def log(self, line):
                pass

            def unchanged(self, line=""):
                ctx.ran.append(f"unchanged: {line}")

        yield Step()


def test_public_fallback_opens_the_port_to_the_peers_public_ips_only(graph):
    from app.services_ops.steps import open_firewall
    other_org = build_org(email="x@example.com", organisation="Other")
    other_org.server.public_ip = "192.0.2.99"
    graph.lonely.public_fallback = True
    db.session.flush()
    assert peer_sources(graph.lonely, EndpointScope.PUBLIC) == ["198.51.100.8", "203.0.113.10"]
    ctx = _Ctx()
    open_firewall(ctx, graph.lonely, [FirewallRule(5432, "tcp", "postgres 7")])
    assert ctx.titles == ["Open cross-server ports to the organisation's servers' public IPs"]
    assert ctx.ran == [
        "test -x /usr/sbin/ufw", "test -x /usr/local/sbin/keystone-firewall",
        "sudo -n /usr/sbin/ufw allow from 198.51.100.8 to any port 5432 proto tcp",
        "sudo -n /usr/sbin/ufw allow from 203.0.113.10 to any port 5432 proto tcp",
        "sudo -n /usr/local/sbin/keystone-firewall allow 198.51.100.7 5432 "
        "198.51.100.8,203.0.113.10"]
    assert not any("192.0.2.99" in line or "from any" in line or "0.0.0.0" in line
                   for line in ctx.ran)


def test_without_the_opt_in_nothing_is_opened_on_a_server_without_private_network(graph):
    from app.services_ops.steps import open_firewall
    ctx = _Ctx()
    open_firewall(ctx, graph.lonely, [FirewallRule(5432, "tcp", "postgres 7")])
    assert ctx.ran == [] and ctx.titles == []


def test_laravel_slots_on_another_server_are_read_from_their_endpoint(graph):
    from app.deploys.slots import slot_port, upstreams
    web = graph.web
    replica = ServiceReplica(service=web, server=graph.lonely, container_name="ks-web-blue",
                             status=ReplicaStatus.STARTING)
    db.session.add(replica)
    db.session.flush()
    port = slot_port(web.id, "blue")
    with pytest.raises(Unreachable, match="lonely has no private IP"):
        upsert_slot_endpoint(web, replica, graph.lonely, port)
    graph.lonely.public_fallback = True
    spec = upsert_slot_endpoint(web, replica, graph.lonely, port)
    db.session.flush()
    assert (spec.scope, spec.hostname, spec.port) == (EndpointScope.PUBLIC, "198.51.100.7", port)
    assert slot_endpoint_address(web.id, graph.lonely, port) == f"198.51.100.7:{port}"
    ups = upstreams(web.name, web.id, graph.server.id,
                    [(graph.server.id, "10.0.0.2"), (graph.lonely.id, None)],
                    remote_address=lambda sid, p: slot_endpoint_address(
                        web.id, db.session.get(Server, sid), p))
    remote = [u.address for u in ups if not u.same_server]
    assert remote == [f"198.51.100.7:{slot_port(web.id, 'blue')}",
                      f"198.51.100.7:{slot_port(web.id, 'green')}"]
    # The row is the source: an address the deploy recorded is the one the gateway dials.
    row = db.session.query(Endpoint).filter_by(service_id=web.id, port=port).one()
    row.ip_address = "198.51.100.70"
    db.session.flush()
    assert slot_endpoint_address(web.id, graph.lonely, port) == f"198.51.100.70:{port}"


def test_endpoint_health_follows_the_replica(graph):
    pg = graph.postgres
    replica = _pg_replica(graph)
    upsert_service_endpoints(pg, replica, 5432)
    db.session.commit()
    assert set_replica_endpoint_health(replica.id, "unhealthy") == 1
    db.session.expire_all()
    assert {e.health_status for e in pg.endpoints} == {HealthStatus.UNHEALTHY}
    set_replica_endpoint_health(replica.id, HealthStatus.HEALTHY)
    db.session.expire_all()
    assert {e.health_status for e in pg.endpoints} == {HealthStatus.HEALTHY}
    replica.status = ReplicaStatus.REMOVED
    db.session.flush()
    assert retire_endpoints_of_gone_replicas() == 1
    db.session.expire_all()
    assert {e.health_status for e in pg.endpoints} == {HealthStatus.UNKNOWN}


def test_public_fallback_refuses_a_server_without_the_docker_user_helper(graph):
    """UFW never sees Docker-published ports: without keystone-firewall a public port would
    be open to the whole internet, so the step fails instead of pretending."""
    from app.operations import StepFailed
    from app.services_ops.steps import open_firewall
    graph.lonely.public_fallback = True
    db.session.flush()
    ctx = _Ctx(helper=False)
    with pytest.raises(StepFailed, match="would be open to everyone"):
        open_firewall(ctx, graph.lonely, [FirewallRule(5432, "tcp", "postgres 7")])
    assert not any("allow" in line for line in ctx.ran)


def test_nothing_is_published_on_a_public_ip_before_the_helper_is_checked(graph):
    """The check runs before the container starts (a refused step leaves nothing exposed);
    on the private network it adds no step."""
    from app.operations import StepFailed
    from app.services_ops.steps import require_public_firewall
    rules = [FirewallRule(5432, "tcp", "postgres 7")]
    ctx = _Ctx(helper=False)
    require_public_firewall(ctx, graph.server, rules)          # private: nothing to check
    require_public_firewall(ctx, graph.lonely, rules)          # no opt-in: nothing published
    assert ctx.titles == []
    graph.lonely.public_fallback = True
    db.session.flush()
    with pytest.raises(StepFailed, match="198.51.100.7 would be open to everyone"):
        require_public_firewall(ctx, graph.lonely, rules)
    ok = _Ctx(helper=True)
    require_public_firewall(ok, graph.lonely, rules)
    assert ok.ran[-1] == "unchanged: keystone-firewall is installed"
