"""Parallel fan-out (issue 20 part 1) on four real servers Keystone provisioned.

The session sandbox has two servers; this module grows it to four for itself (two more
server containers, provisioned by Keystone's own ``server_provision``: the ``keystone``
user, UFW on) and shrinks it back after. Two deploys prove the point:

1. a deploy to the four servers runs their per-server work side by side: the recorded
   start and end times of the ``replica_deploy`` children (and of the image pulls)
   overlap -- no wall-clock threshold;
2. a deploy of a configuration change (no build) where one server cannot start its new
   replica, for a real reason on that server (a process already listens on the new slot's
   private port, so Docker cannot publish it), rolls back every server: no new replica
   stays anywhere, the old ones keep serving, and the load through two gateways sees 0
   failed requests.
"""
from __future__ import annotations

import os
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.operations.fanout import overlapping
from bench.loadgen import LoadGenerator
from app.sandbox.testbed import wait_until
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration

SERVERS = 4


@pytest.fixture(scope="module")
def four_servers(sandbox_manager, sandbox, provisioned_servers, tmp_path_factory,
                 migrated_db_template, redis_url):
    from app.extensions import db
    from app.sandbox.testbed import provision_sandbox_servers
    from tests.conftest import make_app
    info = sandbox_manager.up(servers=SERVERS, bare=True)
    app = make_app(tmp_path_factory.mktemp("fanout-provision"), migrated_db_template, redis_url)

    def provision(server):  # both new servers at once: each its own app context and session
        with app.app_context():
            try:
                return provision_sandbox_servers(types.SimpleNamespace(servers=[server]))
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=2) as pool:
        print(list(pool.map(provision, info.servers[2:])))
    with app.app_context():
        db.engine.dispose()
    yield info
    if os.environ.get("KEYSTONE_KEEP_SANDBOX") != "1":
        sandbox_manager.up(servers=2, bare=True)  # the extra servers go, with their volumes


@pytest.fixture(scope="module")
def bed4(four_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(four_servers, tmp_path_factory, migrated_db_template, redis_url,
                         "fanout", server_count=SERVERS) as tb:
        yield tb


def _intervals(ops):
    return [(o.started_at.timestamp(), o.finished_at.timestamp()) for o in ops]


def _replica_children(op):
    service_deploy = next(c for c in op.children if c.kind.value == "service_deploy")
    return [c for c in service_deploy.children if c.kind.value == "replica_deploy"]


def test_a_deploy_to_four_servers_runs_the_per_server_work_side_by_side(bed4):
    op = bed4.deploy()
    children = _replica_children(op)
    assert sorted(c.params["server_id"] for c in children) == sorted(bed4.server_ids)
    assert all(c.status.value == "succeeded" for c in children)
    # Every server's start + health check was running at one same moment.
    assert overlapping(_intervals(children)), _intervals(children)
    # The server that built the image has it: every other server pulls, side by side.
    pulls = [s for s in op.steps if s.name.startswith("Pull image on ")]
    assert len(pulls) == SERVERS - 1, [s.name for s in pulls]
    assert overlapping([(s.started_at.timestamp(), s.finished_at.timestamp()) for s in pulls])
    web = next(s for s in bed4.env.services if s.id == bed4.web_id)
    live = [r for r in web.replicas if r.status.value == "running"]
    assert sorted(r.server_id for r in live) == sorted(bed4.server_ids)
    head = op.result["commit"]
    assert [bed4.commit_served(i) for i in range(SERVERS)] == [head] * SERVERS


def test_one_failing_server_rolls_back_every_server_with_no_failed_request(bed4):
    from app.deploys.slots import other_slot, slot_port
    from app.extensions import db
    from app.models import EnvironmentVariable
    from app.models.enums import VariableSource
    old = bed4.commit_served(0)
    web = next(s for s in bed4.env.services if s.id == bed4.web_id)
    before = {r.server_id: r for r in web.replicas if r.status.value == "running"}
    old_containers = [bed4.containers(i) for i in range(SERVERS)]
    # Something real on the fourth server: a process holds the new slot's private port.
    last = bed4.sandbox_servers[-1]
    slot = other_slot((before[bed4.server_ids[-1]].config or {}).get("slot"))
    port = slot_port(bed4.web_id, slot)
    squat = last.exec("sh", "-c", f"setsid socat TCP-LISTEN:{port},bind={last.private_ip},"
                      "fork,reuseaddr SYSTEM:true >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        held = wait_until(lambda: "in use" in last.exec(
            "python3", "-c", "import socket,sys; socket.socket().bind((sys.argv[1], "
            "int(sys.argv[2])))", last.private_ip, str(port), check=False).stderr, timeout=10)
        assert held, f"nothing holds {last.private_ip}:{port} on {last.name}"
        # A change of configuration (one variable): the build is reused, so the deploy goes
        # straight to the per-server work, where the fourth server fails.
        db.session.add(EnvironmentVariable(environment_id=bed4.env_id, key="FANOUT_TEST",
                                           value="2", source=VariableSource.USER))
        db.session.commit()
        loads = [LoadGenerator(bed4.http_port(i), bed4.hostname, rps=30, connections=2,
                               max_seconds=600) for i in (0, SERVERS - 1)]
        for load in loads:
            load.start()
        try:
            op = bed4.deploy(expect="failed")
        finally:
            stats = [load.stop() for load in loads]
    finally:
        last.exec("kill", squat, check=False)
    for s in stats:
        assert s.requests > 10
        assert (s.non_2xx, s.connection_errors, s.post_failures) == (0, 0, 0), s
    children = {c.params["server_id"]: c for c in _replica_children(op)}
    failed = children[bed4.server_ids[-1]]
    assert failed.status.value == "failed"
    assert "address already in use" in (failed.error or "") or \
        "already allocated" in (failed.error or ""), failed.error
    # The others were stopped (or had finished) and every new replica is gone again.
    assert all(c.status.value in ("cancelled", "succeeded")
               for sid, c in children.items() if sid != bed4.server_ids[-1])
    db.session.expire_all()
    web = next(s for s in bed4.env.services if s.id == bed4.web_id)
    made = [r for r in web.replicas if r.operation_id == op.id]
    assert made and all(r.status.value in ("removed", "failed") for r in made), \
        [(r.server_id, r.status.value) for r in made]
    assert [bed4.containers(i) for i in range(SERVERS)] == old_containers
    still = {r.server_id: r.id for r in web.replicas if r.status.value == "running"}
    assert still == {sid: r.id for sid, r in before.items()}
    assert [bed4.commit_served(i) for i in range(SERVERS)] == [old] * SERVERS
    assert any(s.name == "Reuse build artifact" for s in op.steps)  # no build: a config change
    assert bed4.env.status.value == "deployed"
