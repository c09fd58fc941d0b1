"""The deploy planner (pure): what changes, the no-op deploy, migrations once, scheduler order."""
import pytest

from app.deploys.planning import (EnvironmentSnapshot, PlanError, ReplicaFact, SchedulerFact,
                                  ServiceFact, config_hash, health_settings, migration_settings,
                                  plan_deploy, stop_timeout)
from app.deploys.slots import (container_name, other_slot, reverse_proxy_options, slot_alias,
                               slot_port, upstreams)

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def replica(id, server_id=1, slot="blue", digest=OLD, status="running", cfg="h1", rev=1):
    return ReplicaFact(id=id, server_id=server_id, container_name=f"ks-web-1-{slot}-op{id}",
                       slot=slot, image_digest=digest, status=status, health="healthy",
                       revision=rev, config_hash=cfg)


def web(replicas=(), servers=(1,), cfg="h1", config=None, id=1, name="web", roles=("web",),
        policy="with_environment", rev=1):
    return ServiceFact(id=id, name=name, deploy_policy=policy, roles=roles, desired_revision=rev,
                       config_hash=cfg, server_ids=servers, replicas=tuple(replicas),
                       config=config or {})


def snap(*services, scheduler=None):
    return EnvironmentSnapshot(environment_id=1, services=tuple(services),
                               scheduler=scheduler or SchedulerFact(target_service_id=1,
                                                                    runner_replica_id=10))


def kinds(plan):
    return [p.kind for p in plan.phases]


def test_first_deploy_starts_in_blue_and_migrates_before_the_switch():
    plan = plan_deploy(snap(web()), NEW)
    assert [c.name for c in plan.changes] == ["web"]
    assert plan.changes[0].reasons == ("first deploy",)
    assert plan.changes[0].placements[0].slot == "blue"
    assert plan.migration.command == "php artisan migrate --force"
    assert kinds(plan).index("migrate") < kinds(plan).index("start")
    assert "drain" not in kinds(plan) and "stop" not in kinds(plan)


def test_new_artifact_goes_to_the_free_slot_and_retires_the_old_one():
    plan = plan_deploy(snap(web([replica(10)])), NEW)
    change = plan.changes[0]
    assert change.reasons == ("new artifact",)
    assert change.placements[0].slot == "green"
    assert [r.id for r in change.old_replicas] == [10]
    k = kinds(plan)
    assert k.index("health") < k.index("await_gateway") < k.index("drain") < k.index("stop")


def test_after_an_interrupted_deploy_the_leftover_slot_is_reused_never_the_serving_one():
    # blue serves; an interrupted deploy left a never-checked replica in green.
    serving, leftover = replica(10, slot="blue"), replica(11, slot="green", digest=NEW,
                                                          status="starting")
    plan = plan_deploy(snap(web([serving, leftover])), NEW)
    placement = plan.changes[0].placements[0]
    assert placement.slot == "green"
    assert {r.id for r in placement.old} == {10, 11}  # both retired by this deploy
    # The same when the serving replica is the newer row.
    plan = plan_deploy(snap(web([replica(9, slot="green", digest=NEW, status="starting"),
                                 replica(12, slot="blue")])), NEW)
    assert plan.changes[0].placements[0].slot == "green"


def test_a_first_deploy_interrupted_before_its_checks_is_not_a_no_op_on_retry():
    # The worker was SIGKILLed while the only replica was health-checked (tests/integration/
    # test_control_plane.py): the retry of the same artifact must start a replica again,
    # in the leftover's slot (removed first), not report "nothing changed".
    plan = plan_deploy(snap(web([replica(11, slot="blue", digest=NEW, status="starting")])),
                       NEW)
    assert not plan.noop
    change = plan.changes[0]
    assert change.reasons == ("an interrupted deploy left a replica that never passed its "
                              "checks",)
    assert change.placements[0].slot == "blue"
    assert [r.id for r in change.placements[0].old] == [11]


def test_a_redeploy_interrupted_before_its_checks_is_not_a_no_op_either():
    # green serves the artifact; an interrupted redeploy of it left a starting replica in blue.
    plan = plan_deploy(snap(web([replica(10, slot="green", digest=NEW),
                                 replica(11, slot="blue", digest=NEW, status="starting")])), NEW)
    assert not plan.noop
    assert plan.changes[0].placements[0].slot == "blue"   # never the serving green


def test_no_change_deploy_says_so_and_touches_nothing():
    plan = plan_deploy(snap(web([replica(10, digest=NEW)])), NEW)
    assert plan.noop
    assert plan.phases == ()
    assert plan.migration is None
    assert "Nothing changed" in plan.summary()
    assert plan.unchanged == (("web", "already runs this artifact and configuration"),)


def test_config_or_revision_change_redeploys_only_that_service():
    worker = web([replica(20, slot="blue", digest=NEW)], id=2, name="worker", roles=("worker",))
    plan = plan_deploy(snap(web([replica(10, digest=NEW)], cfg="h2"), worker,
                            scheduler=SchedulerFact(target_service_id=1, runner_replica_id=10)), NEW)
    assert [(c.name, c.reasons) for c in plan.changes] == [("web", ("configuration changed",))]
    plan = plan_deploy(snap(web([replica(10, digest=NEW)], rev=2)), NEW)
    assert plan.changes[0].reasons == ("revision 2",)


def test_dependency_services_are_never_deployed():
    pg = web(id=3, name="postgres", roles=(), policy="dependency_only")
    plan = plan_deploy(snap(web([replica(10, digest=NEW)]), pg), NEW)
    assert plan.noop
    assert ("postgres", "deploy policy dependency_only") in plan.unchanged


def test_migrations_run_once_per_deploy_even_with_several_services():
    worker = web([replica(20)], id=2, name="worker", roles=("worker",))
    ws = web([replica(30)], id=3, name="ws", roles=("websocket",))
    plan = plan_deploy(snap(worker, ws, web([replica(10)])), NEW)
    assert len(plan.changes) == 3
    assert [c.role for c in plan.changes] == ["web", "websocket", "worker"]
    assert kinds(plan).count("migrate") == 1
    assert plan.migration.service_id == 1


def test_migration_modes_and_timing():
    plan = plan_deploy(snap(web([replica(10)], config={"migration_mode": "disabled"})), NEW)
    assert plan.migration is None and "migrate" not in kinds(plan)
    plan = plan_deploy(snap(web([replica(10)], config={"migration_mode": "manual"})), NEW)
    assert plan.migration is None
    plan = plan_deploy(snap(web([replica(10)], config={"migration_timing": "post_switch",
                                                        "migration_command": "php artisan migrate --force --step"})), NEW)
    k = kinds(plan)
    assert k.index("stop") < k.index("migrate")
    assert plan.migration.command.endswith("--step")
    with pytest.raises(PlanError, match="migration_mode"):
        migration_settings({"migration_mode": "sometimes"})
    assert migration_settings({}) == ("auto", "pre_switch", "php artisan migrate --force")


def test_scheduler_is_released_before_it_is_claimed_and_before_old_replicas_stop():
    plan = plan_deploy(snap(web([replica(10)])), NEW)
    k = kinds(plan)
    assert k.index("health") < k.index("scheduler_release") < k.index("scheduler_claim")
    assert k.index("scheduler_claim") < k.index("drain") < k.index("stop")
    release = plan.phases[k.index("scheduler_release")]
    claim = plan.phases[k.index("scheduler_claim")]
    assert release.detail["replica_ids"] == (10,)
    assert claim.detail == {"server_id": 1, "slot": "green"}


def test_scheduler_single_on_multi_server_claims_exactly_one_replica():
    plan = plan_deploy(snap(web([replica(10, 1), replica(11, 2)], servers=(1, 2))), NEW)
    claims = [p for p in plan.phases if p.kind == "scheduler_claim"]
    assert len(claims) == 1 and claims[0].detail["server_id"] == 1
    release = next(p for p in plan.phases if p.kind == "scheduler_release")
    assert set(release.detail["replica_ids"]) == {10, 11}


def test_scheduler_moves_when_its_replica_vanished_even_without_changes():
    plan = plan_deploy(snap(web([replica(12, digest=NEW)]),
                            scheduler=SchedulerFact(target_service_id=1, runner_replica_id=10)), NEW)
    assert not plan.changes and not plan.noop
    assert kinds(plan) == ["scheduler_release", "scheduler_claim"]
    assert plan.phases[1].detail == {"replica_id": 12}


def test_scheduler_disabled_and_every_replica():
    plan = plan_deploy(snap(web([replica(10)]), scheduler=SchedulerFact(enabled=False)), NEW)
    assert "scheduler_claim" not in kinds(plan)
    plan = plan_deploy(snap(web([replica(10)]), scheduler=SchedulerFact(
        mode="every_replica", target_service_id=1)), NEW)
    claim = next(p for p in plan.phases if p.kind == "scheduler_claim")
    assert claim.detail == {"every_replica": True}


def test_multi_server_placements_and_slots_per_server():
    plan = plan_deploy(snap(web([replica(10, 1, "green"), replica(11, 2, "blue")],
                                servers=(1, 2))), NEW)
    slots = {p.server_id: p.slot for p in plan.changes[0].placements}
    assert slots == {1: "blue", 2: "green"}


def test_removed_server_replicas_are_retired():
    plan = plan_deploy(snap(web([replica(10, 1), replica(11, 2)], servers=(1,))), NEW)
    placements = plan.changes[0].placements
    assert [(p.server_id, p.slot) for p in placements] == [(1, "green"), (2, "")]
    assert {r.id for r in plan.changes[0].old_replicas} == {10, 11}


def test_health_settings_and_stop_timeout_cover_the_drain():
    assert health_settings({})["path"] == "/up"
    h = health_settings({"health": {"path": "/health", "interval": 0.5, "retries": 5}})
    assert (h["path"], h["interval"], h["retries"]) == ("/health", 0.5, 5)
    with pytest.raises(PlanError, match=r"^service\.health\.path: must start with /"):
        health_settings({"health": {"path": "up; id"}})
    assert stop_timeout("web", {"drain_seconds": 30}, 30.0) >= 30
    # One default for a worker's grace (issue 16 section 2): its job timeout plus 10 s, as
    # the container's stop_grace_period says (app.drivers.laravel.settings).
    assert stop_timeout("worker", {}, 0) == 70
    assert stop_timeout("worker", {"stop_grace_seconds": 120}, 0) == 120


def test_config_hash_changes_with_env_but_not_with_migration_settings():
    a = config_hash({"x": 1}, ["web"], {"A": "1"})
    assert a == config_hash({"x": 1, "migration_mode": "manual"}, ["web"], {"A": "1"})
    assert a != config_hash({"x": 1}, ["web"], {"A": "2"})
    assert "1" not in a or len(a) == 16


def test_slots_names_and_upstreams():
    assert other_slot(None) == "blue" and other_slot("blue") == "green"
    assert slot_alias("Web App", 7, "blue") == "web-app-7-blue.internal"
    assert slot_port(7, "blue") == 20014 and slot_port(7, "green") == 20015
    assert container_name("web", 7, "green", 57) == "ks-web-7-green-op57"
    ups = upstreams("web", 7, 1, [(2, "10.0.0.3"), (1, "10.0.0.2")])
    assert [u.address for u in ups] == ["web-7-blue.internal:8080", "web-7-green.internal:8080",
                                        "10.0.0.3:20014", "10.0.0.3:20015"]
    assert reverse_proxy_options()["health_uri"] == "/.keystone/ready"
