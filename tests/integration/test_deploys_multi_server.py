"""Multi-server web (issue 8): replicas on two sandbox servers, each server's Caddy balancing
over all of them -- its own replica through the slot's Docker alias, the other server's through
the private IP and the slot's fixed port -- built once, pushed to the sandbox registry and
pulled by digest. Runs after test_deploys.py (one gateway per server: separate module)."""
from __future__ import annotations

import json
import re

import pytest

from tests.integration.testbeds import connects, running_testbed
from bench.loadgen import LoadGenerator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed2(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "deploys-multi",
                 server_count=2) as tb:
        yield tb


def _answers(bed, server_index: int, n: int = 24) -> list[dict]:
    out = []
    for _ in range(n):
        status, body = bed.get("/", server_index)
        assert status == 200, body
        out.append(json.loads(body))
    return out


def test_each_gateway_balances_over_the_replicas_of_both_servers(bed2, sandbox):
    from app.sandbox.sample import push_new_commit
    head = push_new_commit(sandbox.git)
    op = bed2.deploy()
    assert op.result["commit"] == head
    env = bed2.env
    assert env.current_artifact.registry_ref  # built once, pushed, pulled by digest
    web = next(s for s in env.services if s.id == bed2.web_id)
    live = [r for r in web.replicas if r.status.value == "running"]
    assert sorted(r.server_id for r in live) == sorted(bed2.server_ids)
    assert all(r.public_port for r in live)  # published on the private IP for the other gateway
    ids = {r.container_id[:12] for r in live}
    for index in (0, 1):
        answers = _answers(bed2, index)
        assert {a["commit"] for a in answers} == {head}
        assert {a["hostname"] for a in answers} == ids, index   # both replicas, from each gateway
        # The replica on the other server reaches Postgres and Valkey over the private network.
        assert all(a["database"]["reachable"] and a["redis"]["reachable"] for a in answers), \
            [a for a in answers if not a["database"]["reachable"]][:1]
    # Exactly one scheduler runner for the environment, on one server.
    flags = []
    for s in bed2.sandbox_servers:
        for c in bed2.containers(bed2.sandbox_servers.index(s)):
            if s.exec("docker", "exec", c, "test", "-e", "/tmp/keystone-scheduler",
                      check=False).returncode == 0:
                flags.append(c)
    assert len(flags) == 1, flags


def _published_on_private_ip(server) -> list[int]:
    """Ports Docker publishes on the server's private address (its DNAT rules)."""
    rules = server.exec("iptables", "-w", "10", "-t", "nat", "-S", "DOCKER").stdout
    return sorted({int(m.group(1)) for m in re.finditer(
        rf"-d {re.escape(server.private_ip)}/32 .*--dport (\d+) -j DNAT", rules)})


def test_cross_server_ports_refuse_a_machine_outside_the_organisation(bed2, sandbox):
    # Issue 13 section 1: the slots published for the other server's gateway, Postgres and
    # Valkey: the organisation's other server connects (the deploy above proved the
    # traffic works); the sandbox's bare machine on the same private network is refused.
    first, second = bed2.sandbox_servers
    checked = 0
    for server, other in ((first, second), (second, first)):
        ports = _published_on_private_ip(server)
        assert ports, f"nothing is published on {server.name}'s private address"
        for port in ports:
            assert connects(other, server.private_ip, port) == "open", (server.name, port)
            assert connects(sandbox.bare, server.private_ip, port) == "refused", \
                (server.name, port)
            checked += 1
    assert checked >= 4  # a web slot on each server, Postgres and Valkey on the first


def test_two_server_cutover_under_load_on_both_gateways(bed2, sandbox):
    from app.sandbox.sample import push_new_commit
    old = bed2.commit_served(0)
    new = push_new_commit(sandbox.git)
    loads = [LoadGenerator(bed2.http_port(i), bed2.hostname, rps=40, connections=2,
                           max_seconds=600) for i in (0, 1)]
    for load in loads:
        load.start()
    try:
        op = bed2.deploy()
    finally:
        stats = [load.stop() for load in loads]
    assert op.result["commit"] == new != old
    assert "slice_configure" not in [c.kind.value for c in op.children]  # no gateway change
    for s in stats:
        assert s.requests > 20
        assert (s.non_2xx, s.connection_errors, s.post_failures) == (0, 0, 0), s
    assert bed2.commit_served(0) == new and bed2.commit_served(1) == new
