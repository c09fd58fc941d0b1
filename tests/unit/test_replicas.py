"""Replicas per server (issue 20.2), the pure parts: names, aliases and ports per replica,
the gateway's upstreams and Caddyfile, the planner's placements, the config hash, the
resource limits in the compose file and the capacity sums (issue 21.7)."""
from __future__ import annotations

import pytest

from app.deploys.capacity import Commitment, server_load
from app.deploys.planning import (EnvironmentSnapshot, ReplicaFact, SchedulerFact, ServiceFact,
                                  config_hash, plan_deploy, replica_count, service_replicas)
from app.deploys.slots import (EXTRA_PORT_BASE, MAX_REPLICAS, PORT_BASE, SLOTS, container_name,
                               project_name, slot_alias, slot_port, upstreams)
from app.drivers.base import Resources
from app.drivers.caddy.caddyfile import Route, check_caddyfile, render_caddyfile
from app.metrics import Sample, capacity_facts, parse_nproc

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_the_first_replica_keeps_the_names_and_port_of_one_replica_keystone():
    assert slot_alias("web", 7, "blue") == slot_alias("web", 7, "blue", 0) \
        == "web-7-blue.internal"
    assert slot_alias("web", 7, "blue", 1) == "web-7-blue-r2.internal"
    assert container_name("web", 7, "green", 57, 2) == "ks-web-7-green-op57-r3"
    assert project_name(7, "green", 57, 1) == "ks-svc-7-green-op57-r2"
    assert container_name("web", 7, "green", 57) == "ks-web-7-green-op57"
    assert slot_port(7, "blue") == 20014 and slot_port(7, "green", 0) == 20015
    with pytest.raises(ValueError):
        slot_alias("web", 7, "blue", MAX_REPLICAS)
    with pytest.raises(ValueError):
        container_name("web", 7, "blue", 1, -1)


def test_every_replica_port_is_unique_across_services_slots_and_replicas():
    seen = {}
    for sid in range(1, 400):
        for slot in SLOTS:
            for index in range(MAX_REPLICAS):
                port = slot_port(sid, slot, index)
                assert port not in seen, (sid, slot, index, seen.get(port))
                seen[port] = (sid, slot, index)
                assert (port >= EXTRA_PORT_BASE) == (index > 0) and port >= PORT_BASE
    with pytest.raises(ValueError):
        slot_port(10_000, "blue", 1)


def test_upstreams_list_each_replica_of_each_slot_of_each_server():
    ups = upstreams("web", 7, 1, [(2, "10.0.0.3"), (1, "10.0.0.2")], replicas=2)
    assert [u.address for u in ups] == [
        "web-7-blue.internal:8080", "web-7-blue-r2.internal:8080",
        "web-7-green.internal:8080", "web-7-green-r2.internal:8080",
        f"10.0.0.3:{slot_port(7, 'blue')}", f"10.0.0.3:{slot_port(7, 'blue', 1)}",
        f"10.0.0.3:{slot_port(7, 'green')}", f"10.0.0.3:{slot_port(7, 'green', 1)}"]
    assert [(u.slot, u.index) for u in ups[:4]] == [("blue", 0), ("blue", 1), ("green", 0),
                                                    ("green", 1)]
    # one replica: exactly the list of one-replica Keystone (no route change on upgrade)
    assert [u.address for u in upstreams("web", 7, 1, [(1, None)])] == \
        ["web-7-blue.internal:8080", "web-7-green.internal:8080"]


def test_the_caddyfile_balances_and_health_checks_every_replica():
    ups = upstreams("web", 7, 1, [(1, None)], replicas=3)
    route = Route.from_config({"hostnames": ["shop.example.com"], "tls": "off",
                               "upstreams": [u.address for u in ups],
                               "health_path": "/.keystone/ready"}, "shop")
    text = render_caddyfile([route])
    line = next(ln.strip() for ln in text.splitlines() if "reverse_proxy " in ln)
    assert line.split()[1:7] == [u.address for u in ups]
    assert "health_uri /.keystone/ready" in text and "lb_policy round_robin" in text
    check_caddyfile(text)


def _svc(replicas=(), desired=2, roles=("web",), servers=(1,), cfg="h1"):
    return ServiceFact(id=1, name="web", deploy_policy="with_environment", roles=roles,
                       desired_revision=1, config_hash=cfg, server_ids=servers,
                       replicas=tuple(replicas), desired_replicas=desired)


def _replica(id, index, server_id=1, slot="blue", digest=OLD):
    return ReplicaFact(id=id, server_id=server_id, container_name=f"c{id}", slot=slot,
                       image_digest=digest, status="running", health="healthy", revision=1,
                       config_hash="h1", index=index)


def _snap(*services):
    return EnvironmentSnapshot(environment_id=1, services=services,
                               scheduler=SchedulerFact(enabled=False))


def test_a_deploy_places_every_replica_of_a_server_in_the_free_slot_together():
    svc = _svc([_replica(10, 0), _replica(11, 1), _replica(12, 0, server_id=2),
                _replica(13, 1, server_id=2)], desired=2, servers=(1, 2))
    plan = plan_deploy(_snap(svc), NEW)
    (change,) = plan.changes
    assert [(p.server_id, p.slot, p.count) for p in change.placements] == \
        [(1, "green", 2), (2, "green", 2)]
    assert sorted(r.id for r in change.old_replicas) == [10, 11, 12, 13]


def test_a_count_left_unapplied_is_a_reason_to_deploy_and_an_applied_one_is_not():
    two = [_replica(10, 0), _replica(11, 1)]
    assert plan_deploy(_snap(_svc(two, desired=2)), OLD).noop
    plan = plan_deploy(_snap(_svc(two, desired=3)), OLD)
    assert plan.changes[0].reasons == ("3 replicas per server",)
    assert plan.changes[0].placements[0].count == 3


def test_workers_scale_and_a_websocket_service_keeps_one():
    assert replica_count("web", 3) == 3 and replica_count("worker", 4) == 4
    assert replica_count("websocket", 3) == 1
    assert replica_count("web", 99) == MAX_REPLICAS and replica_count("web", 0) == 1
    assert service_replicas(["worker"], 2) == 2 and service_replicas(["web", "worker"], 2) == 2
    assert service_replicas(["websocket"], 2) == 1
    ws = _svc([], desired=3, roles=("websocket",))
    assert plan_deploy(_snap(ws), NEW).changes[0].placements[0].count == 1


def test_the_replica_count_is_not_in_the_config_hash_but_the_limits_are():
    base = config_hash({}, ["web"], {"A": "1"}, {"cpus": None, "memory_mb": None})
    assert base == config_hash({}, ["web"], {"A": "1"}, {"cpus": None, "memory_mb": None})
    assert base != config_hash({}, ["web"], {"A": "1"}, {"cpus": 0.5, "memory_mb": None})
    assert base != config_hash({}, ["web"], {"A": "1"}, {"cpus": None, "memory_mb": 256})


def test_limits_render_as_compose_data():
    assert Resources(cpus=0.5, memory_mb=512).compose() == {
        "cpus": "0.5", "mem_limit": "512m", "memswap_limit": "512m"}
    assert Resources().compose() == {}


def test_capacity_sums_limit_times_replicas_and_warns_on_over_commit():
    load = server_load(1, "web-1", {"cores": 2, "mem_total_mb": 2048}, [
        Commitment("web", 3, 0.75, 512), Commitment("worker", 2, 0.25, None),
        Commitment("postgres", 1, None, 1024)])
    assert load.cpus_committed == 2.75 and load.memory_committed_mb == 2560
    assert load.unlimited == ("worker", "postgres")
    assert len(load.warnings) == 2
    assert "CPU limits add up to 2.75 of 2 cores (138 %)" in load.warnings[0]
    assert "memory limits add up to 2560 of 2048 MiB" in load.warnings[1]
    fits = server_load(1, "web-1", {"cores": 4, "mem_total_mb": 8192},
                       [Commitment("web", 2, 1.0, 1024)])
    assert fits.warnings == ()
    unknown = server_load(1, "web-1", None, [Commitment("web", 2, 1.0, 1024)])
    assert unknown.warnings and "not measured yet" in unknown.warnings[0]


def test_the_metrics_probe_records_the_capacity_once():
    assert parse_nproc(["4"]) == 4 and parse_nproc(["", "x"]) is None and parse_nproc([]) is None
    sample = Sample(cpu_percent=1, mem_used_mb=100, mem_total_mb=2047.6, disk_used_gb=1,
                    disk_total_gb=10, load1=0, load5=0, load15=0, cores=2)
    facts = capacity_facts({"os": "Debian"}, sample)
    assert facts == {"os": "Debian", "capacity": {"cores": 2, "mem_total_mb": 2048}}
    assert capacity_facts(facts, sample) is None  # unchanged: no write
    assert capacity_facts({}, Sample(1, 1, 1, 1, 1, 0, 0, 0)) is None  # no nproc section
