"""Scheduler mode changes between deploys (issue 13, defect 7) on real sandbox servers.

Two servers, a web and a worker service with one replica on each, deployed once; then each
mode change goes through the form's code (store on the environment, one ``config_change``
operation) and runs in the operations engine over real SSH. After every transition the test
reads the flag files in every replica on both servers, and from the sample app's own records
(``schedule_runs``: the PHP process's start and finish, its container's hostname) that single
mode never had two runners and that every mode did run where it said.
"""
from __future__ import annotations

import time

import pytest

from app.sandbox.testbed import wait_until
from tests.integration.test_deploys import assert_never_two_runners, schedule_runs
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration

FLAGGED = ('for c in $(docker ps -q --filter "label=dev.keystone.service=$1"); do '
           'if docker exec "$c" test -e /tmp/keystone-scheduler 2>/dev/null; then '
           'echo "$c"; fi; done')


@pytest.fixture(scope="module")
def sbed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "scheduler-modes", server_count=2) as tb:
        from app.deploys.service import add_role_service
        from app.extensions import db
        worker = add_role_service(tb.env, "worker")  # placed like web: both servers
        worker.config = {**worker.config, "scheduler_interval": tb.scheduler_interval,
                         "health": dict(tb.health), "stop_grace_seconds": 10}
        db.session.commit()
        tb.worker_id = worker.id
        yield tb


def flags(bed) -> dict[str, list[str]]:
    """Containers holding the scheduler flag, per service ("web" / "worker"), both servers,
    by short container id (a replica's container NAME is the same on both servers)."""
    out: dict[str, list[str]] = {"web": [], "worker": []}
    for server in bed.sandbox_servers:
        for role, sid in (("web", bed.web_id), ("worker", bed.worker_id)):
            res = server.exec("sh", "-c", FLAGGED, "sh", str(sid), check=False, timeout=60)
            out[role].extend(c[:12] for c in res.stdout.split())
    return {k: sorted(v) for k, v in out.items()}


def live(bed, service_id: int):
    from app.extensions import db
    from app.models import Service
    db.session.expire_all()
    return [r for r in db.session.get(Service, service_id).replicas
            if r.status.value == "running"]


def change(bed, mode: str, target_id: int | None = None):
    """What the form does (validated choice, stored, one operation), run by the engine."""
    from app.deploys.scheduler import scheduler_choice_error, start_scheduler_change
    env = bed.env
    error, choice = scheduler_choice_error(env, mode, str(target_id) if target_id else None,
                                           confirm=True)
    assert error is None, error
    enabled, mode, target = choice
    before = time.time()
    op = start_scheduler_change(env, None, enabled=enabled, mode=mode, target=target,
                                enqueue=False)
    assert op.kind.value == "config_change"
    done = bed.run(op.id)
    return done, before, time.time()


def hosts(replicas) -> set[str]:
    return {r.container_id[:12] for r in replicas}


def runs_between(bed, start: float, end: float | None = None):
    return [r for r in schedule_runs(bed) if r[1] >= start and (end is None or r[1] < end)]


def test_every_transition_takes_effect_at_once(sbed, sandbox):
    from app.sandbox.sample import push_new_commit
    push_new_commit(sandbox.git)
    sbed.deploy()
    webs, workers = live(sbed, sbed.web_id), live(sbed, sbed.worker_id)
    assert len(webs) == 2 and len(workers) == 2
    assert {r.server_id for r in webs} == set(sbed.server_ids)

    # After the first deploy: single mode, exactly one runner, a web replica.
    f = flags(sbed)
    assert len(f["web"]) == 1 and f["worker"] == [], f
    assert sbed.env.scheduler_replica_id in {r.id for r in webs}

    # single -> every_replica: the flag on every replica of the target, nowhere else.
    op, _, t_every = change(sbed, "every_replica", sbed.web_id)
    assert flags(sbed) == {"web": sorted(hosts(webs)), "worker": []}
    assert sbed.env.scheduler_replica_id is None
    # ... and both replicas really run schedule:run.
    assert wait_until(lambda: hosts(webs) <= {h for h, *_ in runs_between(sbed, t_every)},
                      timeout=90, interval=2), runs_between(sbed, t_every)

    # every_replica -> single: exactly one left (released and waited for before it returns).
    op, _, t_single = change(sbed, "single", sbed.web_id)
    f = flags(sbed)
    assert len(f["web"]) == 1 and f["worker"] == [], f
    runner = next(r for r in webs if r.container_id[:12] == f["web"][0])
    assert sbed.env.scheduler_replica_id == runner.id
    assert any(s.name.startswith("Release the scheduler on ") for s in op.steps)
    assert wait_until(lambda: runner.container_id[:12] in
                      {h for h, *_ in runs_between(sbed, t_single)}, timeout=90, interval=2)

    # Target change (single): the runner moves to one worker replica.
    op, _, t_worker = change(sbed, "single", sbed.worker_id)
    f = flags(sbed)
    assert f["web"] == [] and len(f["worker"]) == 1, f
    mover = next(r for r in workers if r.container_id[:12] == f["worker"][0])
    assert sbed.env.scheduler_replica_id == mover.id
    assert wait_until(lambda: mover.container_id[:12] in
                      {h for h, *_ in runs_between(sbed, t_worker)}, timeout=90, interval=2)

    # every_replica on the worker, then disabled: no runner anywhere.
    _, t_single_end, _ = change(sbed, "every_replica", sbed.worker_id)
    assert flags(sbed) == {"web": [], "worker": sorted(hosts(workers))}
    op, _, t_off = change(sbed, "disabled")
    assert flags(sbed) == {"web": [], "worker": []}
    assert sbed.env.scheduler_enabled is False and sbed.env.scheduler_replica_id is None

    # Single mode never had two runners: every run that started between the end of the
    # every_replica -> single change and the start of the worker's every_replica change,
    # on any replica, the web -> worker move included.
    single_runs = runs_between(sbed, t_single, t_single_end)
    assert {h for h, *_ in single_runs} == {runner.container_id[:12], mover.container_id[:12]}
    assert_never_two_runners(single_runs, sbed.scheduler_interval)
    # Disabled: nothing starts after the operation returned.
    time.sleep(2 * sbed.scheduler_interval + 1)
    assert runs_between(sbed, t_off) == []
