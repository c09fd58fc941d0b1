"""Parallel fan-out (issue 20 part 1): the concurrency limiter, the per-server grouping of
logs, and child operations run side by side by the operations engine (recording
connections: real threads, sessions, locks and cancel; no SSH)."""
import threading

import pytest

from app.extensions import db
from app.jobs import run_operation
from app.models import Operation, Server
from app.models.enums import OperationKind, OperationStatus as S
from app.operations import StepFailed, cancel_operation, start_operation
from app.operations.columns import Node, per_server_groups, split_lines
from app.operations.fanout import (Background, Child, max_concurrency, overlapping,
                                   run_limited)
from app.shell import cmd
from tests.factories import build_org
from tests.opsupport import clean_streams, fake_servers, handlers, slow_servers  # noqa: F401

K = OperationKind.CONFIG_CHANGE
R = OperationKind.REPLICA_DEPLOY


# --------------------------------------------------------------------------- the limiter

def test_run_limited_never_runs_more_than_the_limit_and_keeps_the_order():
    lock, running, peak = threading.Lock(), [0], [0]
    pair = threading.Barrier(2, timeout=10)  # two at a time must meet, or the barrier breaks

    def work(n):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        pair.wait()
        with lock:
            running[0] -= 1
        return n * 10

    outcomes = run_limited(list(range(6)), work, 2)
    assert [o.result for o in outcomes] == [0, 10, 20, 30, 40, 50]
    assert all(o.ok for o in outcomes)
    assert peak[0] == 2
    assert max_concurrency([(o.started_at, o.ended_at) for o in outcomes]) <= 2


def test_run_limited_starts_nothing_after_a_failure_and_reports_it():
    seen, failures = [], []

    def work(n):
        seen.append(n)
        if n == 1:
            raise ValueError("server 1 broke")
        return n

    outcomes = run_limited([0, 1, 2, 3], work, 1, on_failure=failures.append)
    assert seen == [0, 1]
    assert [o.started for o in outcomes] == [True, True, False, False]
    assert isinstance(outcomes[1].error, ValueError) and outcomes[1].failed_order == 1
    assert failures == [outcomes[1]]
    assert not outcomes[2].ok and outcomes[2].error is None


def test_run_limited_rejects_a_limit_below_one():
    with pytest.raises(ValueError):
        run_limited([1], lambda n: n, 0)


def test_overlap_and_concurrency_of_intervals():
    assert overlapping([(0, 5), (1, 6), (4, 9)])
    assert not overlapping([(0, 2), (1, 3), (2.5, 4)])
    assert not overlapping([(0, 1)])
    assert max_concurrency([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert max_concurrency([(0, 1), (1, 2)]) == 1  # one ends as the next starts


# --------------------------------------------------------------------------- grouping

def test_background_runs_at_once_and_hands_its_error_to_whoever_joins():
    gate = threading.Event()
    ran = []

    def work():
        gate.wait(10)
        ran.append(True)
        raise ValueError("migration broke")

    bg = Background(work, name="t")
    assert not bg.done and not bg.wait(0.05)  # running beside the caller
    gate.set()
    error = bg.join()
    assert ran == [True] and bg.done and isinstance(error, ValueError)
    assert bg.ended_at >= bg.started_at
    assert Background(lambda: None).join() is None


def test_in_background_steps_belong_to_the_operation_and_overlap_the_caller(
        app, clean_streams, handlers):
    g = build_org()
    both = threading.Barrier(2, timeout=20)  # the caller and the background step at once

    @handlers(K)
    def parent(ctx):
        def migrate():
            with ctx.step("migrate", server=g.server.id) as step:
                step.run(cmd("echo", "migrating"))
                both.wait()
        bg = ctx.in_background(migrate, name="migrate")
        with ctx.step("create the new replica", server=g.server.id) as step:
            step.run(cmd("echo", "created"))
            both.wait()
        assert bg.join() is None

    with fake_servers():
        op = _start(g)
        assert run_operation(op.id) == "succeeded"
    db.session.expire_all()
    steps = db.session.get(Operation, op.id).steps
    assert sorted(s.name for s in steps) == ["create the new replica", "migrate"]
    assert overlapping([(s.started_at.timestamp(), s.finished_at.timestamp()) for s in steps])


def test_children_that_ran_per_server_become_one_column_per_server():
    nodes = [Node(2, 1), Node(3, 2, server_id=7), Node(4, 2, server_id=8), Node(5, 3),
             Node(6, 1), Node(9, 6, server_id=7)]  # 6 has per-server children on one server
    groups = per_server_groups(nodes)
    assert [g.parent_id for g in groups] == [2]
    cols = groups[0].columns
    assert [(c.server_id, c.child_ids, c.op_ids) for c in cols] == [(7, [3], [3, 5]),
                                                                  (8, [4], [4])]
    assert [g.parent_id for g in per_server_groups(nodes, min_servers=1)] == [2, 6]
    lines = [(1, "plan"), (3, "==> Start on a"), (4, "==> Start on b"), (5, "nested on a"),
             (3, "healthy a")]
    assert split_lines(lines, groups[0]) == {7: ["==> Start on a", "nested on a", "healthy a"],
                                            8: ["==> Start on b"]}


# --------------------------------------------------------------------------- the engine

def _servers(g, n):
    servers = [g.server]
    for i in range(2, n + 1):
        servers.append(Server(organisation_id=g.org.id, name=f"web-{i}",
                              public_ip=f"203.0.113.{10 + i}", private_ip=f"10.0.0.{i + 1}"))
    db.session.add_all(servers[1:])
    db.session.commit()
    return [s.id for s in servers]


def _start(g):
    return start_operation(K, target_type="environment", target_id=g.environment.id,
                           organisation_id=g.org.id, enqueue=False,
                           lock_keys=[f"environment:{g.environment.id}"])


def _children(op_id):
    db.session.expire_all()
    return db.session.get(Operation, op_id).children


def _intervals(children):
    return [(c.started_at.timestamp(), c.finished_at.timestamp()) for c in children]


def test_children_run_side_by_side_each_on_its_server(app, clean_streams, handlers):
    g = build_org()
    ids = _servers(g, 4)
    met = threading.Barrier(4, timeout=20)  # all four inside their step at once, or it breaks

    def child(server_id):
        def handler(ctx):
            with ctx.step("work", server=server_id) as step:
                step.run(cmd("echo", "pull"))
                met.wait()
                step.log(f"on server {server_id}")
        return handler

    @handlers(K)
    def parent(ctx):
        ctx.run_children([Child(R, "service", g.web.id, child(sid), server_id=sid,
                                summary=f"on {sid}") for sid in ids])

    with fake_servers() as fake:
        op = _start(g)
        assert run_operation(op.id) == "succeeded"
    children = _children(op.id)
    assert [c.status for c in children] == [S.SUCCEEDED] * 4
    assert sorted(c.params["server_id"] for c in children) == ids  # created in any order
    assert overlapping(_intervals(children))
    assert sorted(c.host for c in fake.connections) == sorted(
        db.session.get(Server, i).public_ip for i in ids)  # one connection per server
    assert all(f"on server {c.params['server_id']}" in c.steps[0].logs for c in children)


def test_the_limit_bounds_how_many_children_run_at_once(app, clean_streams, handlers):
    g = build_org()
    ids = _servers(g, 3)

    def quick(ctx):
        with ctx.step("work", server=ctx.params["server_id"]) as step:
            step.run(cmd("echo", "x"))

    @handlers(K)
    def parent(ctx):
        ctx.run_children([Child(R, "service", g.web.id, quick, server_id=sid) for sid in ids],
                         limit=1)

    with fake_servers():
        op = _start(g)
        assert run_operation(op.id) == "succeeded"
    children = _children(op.id)
    assert len(children) == 3
    assert max_concurrency(_intervals(children)) == 1


def test_a_failing_child_stops_its_siblings_and_fails_the_parent(app, clean_streams, handlers):
    g = build_org()
    ids = _servers(g, 3)
    running = threading.Barrier(3, timeout=20)

    def slow(ctx):
        with ctx.step("pull", server=ctx.params["server_id"]) as step:
            running.wait()
            step.run(cmd("sleep", "600"))

    def broken(ctx):
        with ctx.step("start", server=ctx.params["server_id"]):
            running.wait()
            raise StepFailed("port 8080 is already allocated on this server")

    @handlers(K)
    def parent(ctx):
        ctx.run_children([Child(R, "service", g.web.id, h, server_id=sid)
                          for h, sid in zip((slow, broken, slow), ids)])

    with slow_servers(forever=True, interval=0.05, match="sleep") as conns:
        op = _start(g)
        assert run_operation(op.id) == "failed"
    children = sorted(_children(op.id), key=lambda c: c.params["server_id"])
    assert [c.status for c in children] == [S.CANCELLED, S.FAILED, S.CANCELLED]
    assert "already allocated" in children[1].error
    assert all("another server" in children[i].error for i in (0, 2))
    assert all(c.terminated.is_set() for c in conns if any("sleep" in x.masked for x in c.calls))
    parent_op = db.session.get(Operation, op.id)
    assert f"#{children[1].id}" in parent_op.error and "already allocated" in parent_op.error


def test_cancel_reaches_every_child_thread(app, clean_streams, handlers):
    g = build_org()
    ids = _servers(g, 3)
    started = threading.Barrier(4, timeout=20)

    def slow(ctx):
        with ctx.step("health", server=ctx.params["server_id"]) as step:
            started.wait()
            step.run(cmd("sleep", "600"))

    @handlers(K)
    def parent(ctx):
        ctx.run_children([Child(R, "service", g.web.id, slow, server_id=sid) for sid in ids])

    op = _start(g)
    op_id = op.id

    def cancel_when_all_run():
        started.wait()
        with app.app_context():
            cancel_operation(db.session.get(Operation, op_id))
            db.session.remove()

    threading.Thread(target=cancel_when_all_run, daemon=True).start()
    with slow_servers(forever=True, interval=0.05, match="sleep") as conns:
        assert run_operation(op_id) == "cancelled"
    assert [c.status for c in _children(op_id)] == [S.CANCELLED] * 3
    assert sum(c.terminated.is_set() for c in conns) == 3


def test_sibling_children_still_take_their_locks_one_at_a_time(app, clean_streams, handlers):
    g = build_org()
    ids = _servers(g, 2)

    def quick(ctx):
        with ctx.step("touch the gateway", server=ctx.params["server_id"]) as step:
            step.run(cmd("echo", "hold"))

    @handlers(K)
    def parent(ctx):
        # A key no ancestor holds: the two siblings must not hold it at the same time.
        ctx.run_children([Child(R, "service", g.web.id, quick, server_id=sid,
                                lock_keys=("gateway:shared",)) for sid in ids])

    with fake_servers():
        op = _start(g)
        assert run_operation(op.id) == "succeeded"
    children = _children(op.id)
    assert [c.status for c in children] == [S.SUCCEEDED] * 2
    assert max_concurrency(_intervals(children)) == 1


# --------------------------------------------------------------------------- the page

def test_the_operation_page_shows_one_column_per_server(app, client, clean_streams, handlers):
    from tests.conftest import sign_in
    g = build_org()
    ids = _servers(g, 2)

    def child(ctx):
        with ctx.step(f"Start the replica on server {ctx.params['server_id']}",
                      server=ctx.params["server_id"]) as step:
            step.log(f"healthy on {ctx.params['server_id']}")

    @handlers(K)
    def parent(ctx):
        ctx.run_child(R, "service", g.web.id, lambda sctx: sctx.run_children(
            [Child(R, "service", g.web.id, child, server_id=sid) for sid in ids]),
            summary="Deploy web")

    with fake_servers():
        op = _start(g)
        assert run_operation(op.id) == "succeeded"
    sign_in(client, g.user)
    page = client.get(f"/operations/{op.id}").get_data(as_text=True)
    assert "Per server: Deploy web" in page
    assert page.count("data-server-column") == 2
    for sid in ids:
        name = db.session.get(Server, sid).name
        assert f"<h3>{name}" in page
        assert f"healthy on {sid}" in page
    first, second = page.split("data-server-column")[1:3]
    assert f"healthy on {ids[0]}" in first and f"healthy on {ids[1]}" not in first
    assert f"healthy on {ids[1]}" in second
