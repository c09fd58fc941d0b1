"""Issue 20.3: the control plane scales out.

PostgreSQL as DATABASE_URL, 2 gunicorn web processes (each its own port, as on its own
machine) and 4 ``keystone worker`` processes (each with only DATABASE_URL, REDIS_URL and
the keys, its own instance folder) on one real redis-server: 10 environments deployed at
once over HTTP through the deploy form of both web processes (one environment twice), a
worker SIGKILLed mid-deploy. Then the same with SQLite, 1 web process and 1 worker:
``make run``'s single-process default.

What is asserted (the harness is bench.control_plane's, one place): every environment
ends deployed (the killed deploy ``interrupted`` by the reaper, its retry succeeds); no
lock row is ever held by an operation that is not running, no two holders of a key ran
at the same time, none is left; each deploy ran once; the operations list and the live
logs of every web process match the database.

Cheap by design: the sample app is built once (one environment, pushed to the sandbox
registry) and the 10 environments run that pushed image (the external_registry build
strategy), one replica each, no gateway, no migrations.
"""
from __future__ import annotations

import json

import pytest

from bench.control_plane import World, run_round

pytestmark = pytest.mark.integration

BUILT: dict = {}  # the pushed sample image, built once for the module


@pytest.fixture(scope="module")
def cp_redis(tmp_path_factory):
    """A redis-server of the module's own (the workers' and webs' one Redis)."""
    from app import embedded_redis
    work = tmp_path_factory.mktemp("cp-redis")
    proc = embedded_redis.start(work / "redis.sock", work / "redis")
    yield f"unix://{work / 'redis.sock'}"
    proc.terminate()
    proc.wait(timeout=10)


def check(r, world, *, workers: int, web: int, twice: int) -> None:
    detail = json.dumps(r.as_dict(), default=str)
    print(f"\n{world.backend}: {detail}")
    env_ids = world.fleet.env_ids
    assert r.workers == workers and r.web == web, detail
    # All 10 environments deployed: each one's last deploy succeeded.
    for env_id in env_ids:
        last = r.op_ids[env_id][-1]
        assert r.statuses[last] == "succeeded", detail
    # The SIGKILLed deploy was ended by the reaper (not by its dead worker), and retried.
    assert r.killed is not None, detail
    assert r.killed["status"] == "interrupted", detail
    assert "its worker process died" in r.killed["error"], detail
    assert r.killed["retry"] == "succeeded", detail
    expected = {op for ops in r.op_ids.values() for op in ops}
    bad = {op: s for op, s in r.statuses.items() if s != "succeeded"}
    assert set(bad) == {r.killed["op"]}, detail
    assert len(expected) == len(env_ids) + 2, detail  # + the second deploy + the retry
    assert len(r.op_ids[twice]) >= 2, detail
    # No lock taken twice.
    assert r.lock_samples > 10, detail
    assert r.lock_violations == [], detail
    assert r.overlaps == [], detail
    assert r.locks_left == [], detail
    assert r.step_repeats == [], detail
    # The operations list and the live logs of every web process.
    assert r.list_mismatches == [], detail
    assert r.log_mismatches == [], detail
    assert r.followed is not None and r.followed["same"], detail
    assert r.followed["end"] == r.followed["db_status"] == "succeeded", detail
    # One replica running per environment.
    running = {e: r.containers.get(str(world.fleet.web_of[e])) for e in env_ids}
    assert running == {e: 1 for e in env_ids}, detail
    if workers > 1:
        assert r.max_running_deploys >= 2, detail   # they did run side by side
    else:
        assert r.max_running_deploys == 1, detail


def test_postgres_two_web_processes_four_workers_ten_concurrent_deploys(
        sandbox, provisioned_servers, cp_redis, tmp_path_factory):
    with World(sandbox, tmp_path_factory.mktemp("cp-postgres"), cp_redis,
               backend="postgres", count=10) as world:
        BUILT["image"] = world.fleet.image
        plane = world.plane(web=2, workers=4)
        try:
            twice = world.fleet.env_ids[3]
            r = run_round(world.fleet, plane, env_ids=world.fleet.env_ids, kill=True,
                          twice=twice)
        finally:
            plane.stop()
        check(r, world, workers=4, web=2, twice=twice)


def test_sqlite_one_web_process_one_worker_ten_concurrent_deploys(
        sandbox, provisioned_servers, cp_redis, tmp_path_factory, migrated_db_template):
    with World(sandbox, tmp_path_factory.mktemp("cp-sqlite"), cp_redis, backend="sqlite",
               count=10, image=BUILT.get("image"),
               sqlite_template=migrated_db_template) as world:
        plane = world.plane(web=1, workers=1)
        try:
            twice = world.fleet.env_ids[3]
            r = run_round(world.fleet, plane, env_ids=world.fleet.env_ids, kill=True,
                          twice=twice)
        finally:
            plane.stop()
        check(r, world, workers=1, web=1, twice=twice)
