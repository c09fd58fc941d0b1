"""Issue 20.2 on a real sandbox server: two web replicas per server.

One bed (one server, the sample app with Postgres and Valkey), deployed once with
``desired_replicas = 2``. Then, under closed-loop keep-alive load through the gateway:

* both replicas of the serving slot receive production requests (their own access logs,
  the image's web server logs every request; the gateways' ready checks do not count);
* a deploy of a new commit replaces BOTH replicas of the slot together (two new ones in
  the other slot, both old ones drained and stopped) with 0 failed requests, and both new
  replicas receive traffic;
* a scale 2 -> 1 (service_scale) drains and stops the second replica only: the first keeps
  its container (same id, never re-armed), no new container starts, and no request fails.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from bench.loadgen import LoadGenerator
from tests.integration.testbeds import commit_of, running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app.extensions import db
    from app.models import Service
    from app.sandbox.sample import push_new_commit
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "replicas", server_count=1) as tb:
        web = db.session.get(Service, tb.web_id)
        web.desired_replicas = 2
        db.session.commit()
        push_new_commit(sandbox.git)
        tb.deploy()
        yield tb


def _web_replicas(bed):
    from app.extensions import db
    from app.models import ServiceReplica
    from app.models.enums import ReplicaStatus
    db.session.expire_all()
    rows = db.session.query(ServiceReplica).filter_by(service_id=bed.web_id,
                                                      status=ReplicaStatus.RUNNING).all()
    return sorted(rows, key=lambda r: (r.config or {}).get("index", 0))


def _served(bed, container: str, since: float) -> int:
    """Production requests ``container`` answered since ``since`` (its access log)."""
    out = bed.sandbox_servers[0].exec("docker", "logs", "--since", f"{since:.3f}", container,
                                      check=False)
    n = 0
    for line in ((out.stdout or "") + (out.stderr or "")).splitlines():
        if not line.startswith("{") or '"request"' not in line:
            continue
        try:
            req = json.loads(line).get("request") or {}
        except ValueError:
            continue
        if req.get("remote_ip") not in ("127.0.0.1", "::1") \
                and req.get("uri") not in ("/.keystone/ready", "/up"):
            n += 1
    return n


def _container_id(bed, name: str) -> str:
    return bed.sandbox_servers[0].exec("docker", "inspect", "-f", "{{.Id}}", name,
                                       check=False).stdout.strip()


def _assert_no_failure(stats, *, resets_allowed: bool = False):
    assert stats.requests > 50, stats.as_dict()
    failed = (stats.non_2xx, stats.connection_errors) if resets_allowed else \
        (stats.non_2xx, stats.connection_errors, stats.raw_resets)
    assert not any(failed), (stats.as_dict(), dict(stats.statuses), dict(stats.errors),
                             stats.samples)


def test_two_replicas_serve_through_a_cutover_and_a_scale_down(bed, sandbox):
    from app.deploys.scale import start_scale
    from app.extensions import db
    from app.models import Operation, Service
    from app.sandbox.sample import push_new_commit

    before = _web_replicas(bed)
    assert len(before) == 2, [r.container_name for r in before]
    assert {(r.config or {}).get("index") for r in before} == {0, 1}
    assert len({(r.config or {}).get("slot") for r in before}) == 1
    # Each replica is an upstream of its own on the gateway (its own health check).
    route = next(a.service_slice for a in bed.env.attachments
                 if a.service_slice is not None and a.service_slice.type.value == "caddy_route")
    ups = route.config["upstreams"]
    assert len(ups) == 4 and {r.internal_host + ":8080" for r in before} <= set(ups), ups

    # 1. Load, then a deploy of a new commit: both replicas of the slot are replaced.
    load = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/", connections=8,
                         post_ratio=0.0, body_key=commit_of, max_seconds=900, timeout=30)
    since = time.time()
    with load:
        time.sleep(4)
        old_served = {r.container_name: _served(bed, r.container_name, since) for r in before}
        new_commit = push_new_commit(sandbox.git)
        op = bed.deploy(expect=None)
        assert op.status.value == "succeeded", op.error
        after = _web_replicas(bed)
        cutover_at = time.time()
        time.sleep(4)
        new_served = {r.container_name: _served(bed, r.container_name, cutover_at)
                      for r in after}
    _assert_no_failure(load.stats)
    assert all(n > 0 for n in old_served.values()), old_served
    assert len(after) == 2 and not {r.id for r in after} & {r.id for r in before}
    assert len({(r.config or {}).get("slot") for r in after}) == 1
    assert {(r.config or {}).get("slot") for r in after} != \
        {(r.config or {}).get("slot") for r in before}
    assert all(n > 0 for n in new_served.values()), new_served
    assert bed.containers() == sorted(r.container_name for r in after)
    assert load.stats.bodies[new_commit] > 0

    # 2. Scale 2 -> 1 under load: no cutover of the replica that stays.
    keep, leave = after
    keep_id = _container_id(bed, keep.container_name)
    load2 = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/", connections=8,
                          post_ratio=0.0, body_key=commit_of, max_seconds=600, timeout=30)
    with load2:
        time.sleep(2)
        scale = start_scale(db.session.get(Service, bed.web_id), 1, enqueue=False)
        done = bed.run(scale.id, expect=None)
        assert done.status.value == "succeeded", done.error
        time.sleep(2)
    # The gateway change (the removed replica leaves the route) closes idle keep-alive
    # connections; a client re-sends on a reused connection reset before any byte (what
    # browsers do, counted as raw resets); no request fails.
    _assert_no_failure(load2.stats, resets_allowed=True)
    remaining = _web_replicas(bed)
    assert [r.id for r in remaining] == [keep.id]
    assert _container_id(bed, keep.container_name) == keep_id
    assert bed.containers() == [keep.container_name]
    assert load2.stats.bodies[new_commit] == load2.stats.requests
    names = [s.name for s in sorted(_all_steps(db.session.get(Operation, scale.id)),
                                    key=lambda s: s.id)]
    steps = " | ".join(names)
    assert f"Drain {leave.container_name}" in steps and f"Stop {leave.container_name}" in steps
    # The staying replica is named by no step (its name is a prefix of the other's).
    assert not re.search(re.escape(keep.container_name) + r"(?![-\w])", steps), steps
    assert "Start " not in steps and "Arm " not in steps, steps
    # Off the gateway after it was drained, before it stopped.
    route_step = names.index("Route the environment's slots")
    assert names.index(f"Drain {leave.container_name}") < route_step < next(
        i for i, n in enumerate(names) if n.startswith(f"Stop {leave.container_name}")), names
    route = db.session.get(type(route), route.id)
    assert len(route.config["upstreams"]) == 2, route.config["upstreams"]


def _all_steps(op):
    out = list(op.steps)
    for child in op.children:
        out += _all_steps(child)
    return out
