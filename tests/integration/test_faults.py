"""Issue 15, section 3: faults injected into real deploys under HTTP load.

The scenarios are bench.faults' own (one place; ``python -m bench.faults`` runs the same
code and prints the figures). One shared bed for the module: the sample app on sandbox
server 1 (env A, the one under load) and another application's environment with its own
gateway on server 2 (env B), deployed by two real ``keystone worker`` processes on the
module's own Redis (scenario 2 restarts it). Every scenario asserts, for the deploy it
faults: a clear end state (failed or interrupted) with the reason on a step, no lock
left, 0 failed requests and 0 lost POSTs on the previous version, and a retry that
succeeds. (The issue names tests/security/test_faults.py; that directory is the fast
tier without Docker, so the module lives with the other sandbox tests.)
"""
from __future__ import annotations

import json

import pytest

from bench.faults import FaultBed, Outcome
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faults(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template):
    from flask import current_app

    from app import embedded_redis
    from app.sandbox.sample import push_new_commit
    work = tmp_path_factory.mktemp("faults")
    proc = embedded_redis.start(work / "redis.sock", work / "redis")
    fb = None
    try:
        with running_testbed(sandbox, tmp_path_factory, migrated_db_template,
                             f"unix://{work / 'redis.sock'}", "faults", server_count=1) as bed:
            fb = FaultBed(bed, sandbox, current_app._get_current_object(), work)
            try:
                fb.setup()
                yield fb
            finally:
                fb.close()
                push_new_commit(sandbox.git)  # leave a good head for later modules
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def check(out: Outcome) -> None:
    detail = out.as_dict()
    print(f"\nscenario {out.scenario}: {json.dumps(detail)}")
    if out.scenario == "7":
        assert out.status == "succeeded", detail
    else:
        assert out.status in ("failed", "interrupted"), detail
        assert out.reason, detail
    assert out.locks_left == [], detail
    assert out.failed_requests == 0, detail
    assert out.lost_posts == 0, detail
    assert out.requests > 0, detail
    assert out.retry_status == "succeeded", detail
    assert out.survived, detail


def test_7_same_environment_deploys_wait_while_another_environment_deploys_in_parallel(faults):
    check(faults.scenario_7())


def test_1_sigkilled_worker_mid_deploy(faults):
    out = faults.scenario_1()
    check(out)
    assert out.status == "interrupted" and "died" in out.reason, out.as_dict()


def test_3_ssh_connection_cut_mid_step(faults):
    out = faults.scenario_3()
    check(out)
    assert "SSH connection" in out.reason, out.as_dict()


def test_4_gateway_given_an_invalid_caddyfile(faults):
    out = faults.scenario_4()
    check(out)
    assert "Caddy" in out.reason and "refused" in out.reason, out.as_dict()


def test_2_redis_restarts_mid_deploy(faults):
    check(faults.scenario_2())


def test_5_server_container_restarts_mid_deploy(faults):
    check(faults.scenario_5())


def test_6_server_disk_fills_during_a_build(faults):
    out = faults.scenario_6()
    check(out)
    assert "space" in out.reason, out.as_dict()
