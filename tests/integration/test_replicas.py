"""Issue 20.2 on a real sandbox server: two web replicas per server, and workers scaled.

One bed (one server, the sample app with Postgres and Valkey, and a worker service running
``php artisan queue:work``), deployed once with ``desired_replicas = 2`` for both. Workers
first (no load needed):

* the worker runs 2 containers in one slot, each running queue:work and each having passed
  Keystone's "keeps running" check;
* a scale 2 -> 3 starts exactly one container and touches neither of the others (same
  container id, same start time: not restarted), and the new one passed its check too;
* a scale 3 -> 1 stops the two highest with SIGTERM (queue:work exits 0, no SIGKILL),
  removes them (container gone, row REMOVED), and the first keeps its container;
* a job queued after the scales is processed by the worker that stays.

Then the web service, under closed-loop keep-alive load through the gateway:

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
                         "replicas", server_count=1, worker=True) as tb:
        for service_id in (tb.web_id, tb.worker_id):
            db.session.get(Service, service_id).desired_replicas = 2
        db.session.commit()
        push_new_commit(sandbox.git)
        tb.deploy()
        yield tb


def _web_replicas(bed, service_id: int | None = None):
    """The running replicas of the web service (or of ``service_id``), by index."""
    from app.extensions import db
    from app.models import ServiceReplica
    from app.models.enums import ReplicaStatus
    db.session.expire_all()
    rows = db.session.query(ServiceReplica).filter_by(service_id=service_id or bed.web_id,
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


def _inspect(bed, name: str) -> dict:
    """``{"id", "started_at", "restarts", "running"}`` of a container, {} once it is gone."""
    out = bed.sandbox_servers[0].exec(
        "docker", "inspect", "-f",
        "{{.Id}} {{.State.StartedAt}} {{.RestartCount}} {{.State.Running}}", name, check=False)
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 4:
        return {}
    return {"id": parts[0], "started_at": parts[1], "restarts": int(parts[2]),
            "running": parts[3] == "true"}


def _runs_queue_work(bed, name: str) -> bool:
    """The container's processes (``docker top``, seen from the server) include queue:work."""
    out = bed.sandbox_servers[0].exec("docker", "top", name, "-o", "pid,args", check=False)
    return out.returncode == 0 and any("artisan queue:work" in line
                                       for line in out.stdout.splitlines()[1:])


def _names(steps, name: str) -> list:
    """The steps naming container ``name`` itself (not a longer name it is a prefix of)."""
    pattern = re.compile(re.escape(name) + r"(?![-\w])")
    return [s for s in steps if pattern.search(s.name)]


def _kept_running(op, name: str) -> bool:
    """``op`` (or a child) has a succeeded "Check ... keep(s) running" step for ``name``."""
    return any(s.name.startswith("Check ") and s.name.rstrip(")").endswith("running")
               and s.status.value == "succeeded" for s in _names(_all_steps(op), name))


def _stop_events(bed, since: float, names: list[str]) -> dict[str, list[str]]:
    """What the server's Docker logged for ``names`` since ``since``: kill (with its signal)
    and die (with the exit code) events, in order, per container."""
    out = bed.sandbox_servers[0].exec(
        "docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 1:.3f}",
        "--filter", "type=container", "--filter", "event=kill", "--filter", "event=die",
        "--format", "{{json .}}", check=False).stdout
    events: dict[str, list[str]] = {n: [] for n in names}
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        if attrs.get("name") in events:
            detail = attrs.get("signal") if ev.get("Action") == "kill" else attrs.get("exitCode")
            events[attrs["name"]].append(f"{ev.get('Action')} {detail}")
    return events


def test_worker_replicas_scale_up_and_down_without_touching_the_others(bed):
    from app.deploys.scale import start_scale
    from app.extensions import db
    from app.models import Operation, Service, ServiceReplica
    from app.models.enums import ReplicaStatus
    from app.sandbox.testbed import wait_until

    def scale(count: int) -> Operation:
        op = start_scale(db.session.get(Service, bed.worker_id), count, enqueue=False)
        done = bed.run(op.id, expect=None)
        assert done.status.value == "succeeded", done.error
        return done

    # 1. The deploy started desired_replicas = 2 workers, in one slot, each running
    # queue:work and each checked by Keystone (it kept running, 0 restarts).
    two = _web_replicas(bed, bed.worker_id)
    assert [(r.config or {}).get("index") for r in two] == [0, 1], \
        [r.container_name for r in two]
    assert len({(r.config or {}).get("slot") for r in two}) == 1
    assert bed.containers(service_id=bed.worker_id) == sorted(r.container_name for r in two)
    deploy = db.session.get(Operation, two[0].operation_id)
    state = {}
    for r in two:
        state[r.container_name] = _inspect(bed, r.container_name)
        assert state[r.container_name]["running"] and r.container_id == \
            state[r.container_name]["id"][:80], (r.container_name, state)
        assert _runs_queue_work(bed, r.container_name), r.container_name
        assert _kept_running(deploy, r.container_name), r.container_name
    # Watched side by side: one "keep running" step (one window) for both, not one each.
    checks = {s.id for r in two for s in _names(_all_steps(deploy), r.container_name)
              if s.name.startswith("Check ")}
    assert len(checks) == 1, [s.name for s in _all_steps(deploy)]

    # 2. Scale 2 -> 3: exactly one new container; the two others are not touched.
    up = scale(3)
    three = _web_replicas(bed, bed.worker_id)
    assert [r.id for r in three[:2]] == [r.id for r in two] and len(three) == 3
    added = three[2]
    assert (added.config or {}).get("index") == 2 and added.operation_id == up.id
    assert (added.config or {}).get("slot") == (two[0].config or {}).get("slot")
    assert bed.containers(service_id=bed.worker_id) == sorted(r.container_name
                                                              for r in three)
    for r in two:  # same container, same start: never restarted, recreated or stopped
        assert _inspect(bed, r.container_name) == state[r.container_name], r.container_name
    assert _runs_queue_work(bed, added.container_name)
    assert _kept_running(up, added.container_name)
    steps = _all_steps(up)
    assert not any(_names(steps, r.container_name) for r in two), [s.name for s in steps]
    assert [s.name for s in steps if s.name.startswith("Start ")] == \
        [s.name for s in _names(steps, added.container_name) if s.name.startswith("Start ")]
    assert up.result.get("added") == 1 and up.result.get("removed") == 0
    print(f"\nworker deploy (2 replicas) {_seconds(deploy, 'service_deploy', bed.worker_id)} s, "
          f"scale 2 -> 3 {_seconds(up)} s")

    # 3. Scale 3 -> 1: the two highest get SIGTERM (queue:work ends its loop and exits 0:
    # no SIGKILL) and are removed; the first keeps its container.
    keep, leaving = three[0], three[1:]
    since = time.time() - 1
    down = scale(1)
    assert [r.id for r in _web_replicas(bed, bed.worker_id)] == [keep.id]
    assert _inspect(bed, keep.container_name) == state[keep.container_name]
    assert bed.containers(service_id=bed.worker_id) == [keep.container_name]
    for r in leaving:
        row = db.session.get(ServiceReplica, r.id)
        assert row.status == ReplicaStatus.REMOVED, (r.container_name, row.status)
        assert _inspect(bed, r.container_name) == {}, r.container_name  # removed, not only stopped
    events = _stop_events(bed, since, [r.container_name for r in leaving])
    assert all(ev == ["kill 15", "die 0"] for ev in events.values()), events
    steps = _all_steps(down)
    assert not _names(steps, keep.container_name), [s.name for s in steps]
    for r in leaving:
        assert [s.name.split(" (")[0] for s in _names(steps, r.container_name)] == \
            [f"Stop {r.container_name}"], [s.name for s in steps]
    assert "Start " not in " | ".join(s.name for s in steps)
    assert down.result.get("added") == 0 and down.result.get("removed") == 2
    print(f"scale 3 -> 1 {_seconds(down)} s")

    # 4. A job queued now is processed by the worker that stays (the sample's queue:work
    # pops the Valkey list Laravel's redis queue uses, under the environment's prefix).
    job = f"job-after-scale-{bed.tag}"
    push = bed.sandbox_servers[0].exec(
        "docker", "exec", keep.container_name, "php", "-r",
        "require 'bootstrap/app.php'; sample_redis()->rPush('queues:default', $argv[1]);",
        job, check=False)
    assert push.returncode == 0, push.stderr
    assert wait_until(lambda: f"Processed job: {job}" in _logs(bed, keep.container_name),
                      timeout=60), _logs(bed, keep.container_name)[-2000:]


def _seconds(op, kind: str | None = None, target_id: int | None = None) -> float | None:
    """How long ``op`` (or its child of ``kind`` on ``target_id``) ran, for the log."""
    if kind is not None:
        op = next((c for c in op.children if c.kind.value == kind and c.target_id == target_id),
                  None)
    if op is None or op.started_at is None or op.finished_at is None:
        return None
    return round((op.finished_at - op.started_at).total_seconds(), 1)


def _logs(bed, name: str) -> str:
    out = bed.sandbox_servers[0].exec("docker", "logs", name, check=False)
    return (out.stdout or "") + (out.stderr or "")


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
