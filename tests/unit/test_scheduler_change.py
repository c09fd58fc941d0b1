"""Scheduler mode changes between deploys (pure planner of app.deploys.scheduler)."""
from app.deploys.scheduler import LiveReplica, plan_scheduler_change

WEB, WORKER = 1, 2
W1 = LiveReplica(10, WEB, 1, "ks-web-1-blue-op1")
W2 = LiveReplica(11, WEB, 2, "ks-web-1-blue-op1b")
K1 = LiveReplica(20, WORKER, 1, "ks-worker-2-blue-op1")
K2 = LiveReplica(21, WORKER, 2, "ks-worker-2-blue-op1b")
ALL = (W1, W2, K1, K2)


def ids(replicas):
    return sorted(r.id for r in replicas)


def test_single_to_every_replica_claims_every_replica_of_the_target():
    ch = plan_scheduler_change(enabled=True, mode="every_replica", target_service_id=WEB,
                               replicas=ALL, current_runner_id=10)
    assert ids(ch.claim) == [10, 11]
    assert ids(ch.release) == [20, 21]
    assert ch.runner_replica_id is None


def test_every_replica_to_disabled_releases_every_replica():
    ch = plan_scheduler_change(enabled=False, mode="every_replica", target_service_id=WEB,
                               replicas=ALL, current_runner_id=None)
    assert ch.claim == () and ids(ch.release) == [10, 11, 20, 21]
    assert ch.runner_replica_id is None


def test_every_replica_to_single_keeps_exactly_one_and_releases_the_rest():
    ch = plan_scheduler_change(enabled=True, mode="single", target_service_id=WEB,
                               replicas=ALL, current_runner_id=None)
    assert ids(ch.claim) == [10]
    assert ids(ch.release) == [11, 20, 21]
    assert ch.runner_replica_id == 10


def test_single_keeps_the_current_runner_when_it_is_a_replica_of_the_target():
    ch = plan_scheduler_change(enabled=True, mode="single", target_service_id=WEB,
                               replicas=ALL, current_runner_id=11)
    assert ids(ch.claim) == [11] and 11 not in ids(ch.release)


def test_target_change_moves_the_runner_to_the_worker():
    ch = plan_scheduler_change(enabled=True, mode="single", target_service_id=WORKER,
                               replicas=ALL, current_runner_id=10)
    assert ids(ch.claim) == [20]
    assert ids(ch.release) == [10, 11, 21]
    assert ch.runner_replica_id == 20


def test_nothing_running_claims_nothing():
    ch = plan_scheduler_change(enabled=True, mode="single", target_service_id=WEB,
                               replicas=(), current_runner_id=None)
    assert ch.claim == () and ch.release == () and ch.runner_replica_id is None
    assert ch.describe() == "no replica runs the scheduler"


def test_claim_and_release_never_overlap():
    for mode in ("single", "every_replica"):
        for target in (WEB, WORKER, None):
            for enabled in (True, False):
                ch = plan_scheduler_change(enabled=enabled, mode=mode, target_service_id=target,
                                           replicas=ALL, current_runner_id=10)
                assert not set(ids(ch.claim)) & set(ids(ch.release))
                assert set(ids(ch.claim)) | set(ids(ch.release)) == {10, 11, 20, 21}
                if mode == "single":
                    assert len(ch.claim) <= 1
