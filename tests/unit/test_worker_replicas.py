"""New worker replicas of one server are watched side by side (issue 20.2).

A worker has no HTTP endpoint: Keystone checks that it keeps running, without a restart,
for ``OBSERVE_SECONDS``. Several new workers of a server (a deploy's placement, a scale
up) start first and are then watched in one window, with one ``docker inspect`` of all of
them per look, instead of one window each (3 workers: 10 s, not 30 s). A worker that
crashes is named and removed with its log; web replicas keep starting one by one.
The sandbox test is tests/integration/test_replicas.py.
"""
from __future__ import annotations

import contextlib
import types

import pytest

from app.deploys import replica_steps
from app.deploys.handlers import EnvironmentDeploy
from app.deploys.planning import ServiceChange
from app.deploys.replica_steps import OBSERVE_SECONDS, WorkersCrashed
from app.deploys.scale import ServiceScale
from app.models.enums import ReplicaStatus
from tests.unit.fake_clock import FakeClock


class _Step:
    def __init__(self, name, inspect):
        self.name, self.commands, self.logs, self._inspect = name, [], [], inspect

    def run(self, command, **kw):
        text = command.render()
        self.commands.append(text)
        return types.SimpleNamespace(exit_code=0, stdout=self._inspect(text))

    def log(self, line):
        self.logs.append(line)


class _Ctx:
    id = 57

    def __init__(self, inspect):
        self.steps: list[_Step] = []
        self._inspect = inspect

    @contextlib.contextmanager
    def step(self, name, server=None, **kw):
        s = _Step(name, self._inspect)
        self.steps.append(s)
        yield s

    def check_cancelled(self):
        pass


def _line(name, restarts=0, running="true"):
    return f"/{name} id-{name} sha256:img {running} healthy {restarts} 0"


def _change(role="worker"):
    return ServiceChange(service_id=12, name="worker", role=role, reasons=("scale",),
                         placements=(), health={"interval": 0.5, "path": "/up", "timeout": 3,
                                                "retries": 3},
                         drain_seconds=0.0, stop_timeout=10)


@pytest.fixture()
def deploy(monkeypatch):
    """An EnvironmentDeploy whose container starts are recorded, not run."""
    clock = FakeClock()
    monkeypatch.setattr(replica_steps.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(replica_steps.time, "sleep", clock.sleep)
    monkeypatch.setattr(replica_steps, "db", types.SimpleNamespace(
        session=types.SimpleNamespace(get=lambda model, key: None)))
    d = EnvironmentDeploy.__new__(EnvironmentDeploy)
    d.new, d.started, d.removed, d.crashing = {}, [], [], set()

    def inspect(command):  # a line per named container that runs (without its name: one)
        lines = [_line(n, restarts=1 if n in d.crashing else 0)
                 for n in d.launched_names if n in command]
        if "{{.Name}}" not in command:
            lines = [line.split(" ", 1)[1] for line in lines]
        return "\n".join(lines)

    d.ctx = _Ctx(inspect)
    d.launched_names = []

    def launch(rctx, change, server_id, slot, index, old=()):
        name = f"ks-worker-12-{slot}-op57" + (f"-r{index + 1}" if index else "")
        d.launched_names.append(name)
        return types.SimpleNamespace(container_name=name, status=ReplicaStatus.STARTING,
                                     container_id=None, health_status=None)

    def mark_running(replica, parts):
        replica.status, replica.container_id = ReplicaStatus.RUNNING, parts[0]

    d._launch_replica = launch
    d._mark_running = mark_running
    d._remove_failed = lambda rctx, replica, server: d.removed.append(replica.container_name)
    d.clock_ = clock
    return d


def test_a_servers_new_workers_are_watched_side_by_side_in_one_window(deploy):
    made = deploy._start_replicas(deploy.ctx, _change(), 3, "green", range(3))
    names = ["ks-worker-12-green-op57", "ks-worker-12-green-op57-r2",
             "ks-worker-12-green-op57-r3"]
    assert [r.container_name for r in made] == names
    assert [s.name for s in deploy.ctx.steps] == [f"Check {', '.join(names)} keep running"]
    step = deploy.ctx.steps[0]
    # One window of OBSERVE_SECONDS for all three (one after another it was three), each
    # look one `docker inspect` naming every one of them.
    assert deploy.clock_.slept == pytest.approx(OBSERVE_SECONDS)
    assert len(step.commands) > 2 and all(
        c.startswith("docker inspect") and all(n in c for n in names) for c in step.commands)
    assert [r.container_id for r in made] == [f"id-{n}" for n in names]
    assert all(r.status == ReplicaStatus.RUNNING for r in made)
    assert sorted(deploy.new) == [(12, 3, 0), (12, 3, 1), (12, 3, 2)]
    assert not deploy.removed


def test_a_crashing_worker_is_named_and_removed_and_the_batch_fails(deploy):
    deploy.crashing = {"ks-worker-12-blue-op57-r2"}
    with pytest.raises(WorkersCrashed) as failed:
        deploy._start_replicas(deploy.ctx, _change(), 3, "blue", [0, 1])
    assert failed.value.names == ("ks-worker-12-blue-op57-r2",)
    assert "ks-worker-12-blue-op57-r2 is crash-looping: it restarted 1 time" in str(failed.value)
    # Its log is kept and it goes; the healthy one is left to the operation's clean-up
    # (it removes every replica the operation started), and nothing counts as new.
    assert deploy.removed == ["ks-worker-12-blue-op57-r2"]
    assert deploy.new == {}


def test_a_worker_gone_from_the_server_is_named(deploy):
    deploy.launched_names = ["ks-worker-12-blue-op57"]  # r2 never shows in the inspect
    step = _Step("look", lambda command: _line("ks-worker-12-blue-op57"))
    with pytest.raises(WorkersCrashed) as failed:
        deploy._check_all_running(step, ["ks-worker-12-blue-op57", "ks-worker-12-blue-op57-r2"],
                                  "right after it started")
    assert failed.value.names == ("ks-worker-12-blue-op57-r2",)
    assert str(failed.value) == "ks-worker-12-blue-op57-r2 is gone (right after it started)"


def test_web_replicas_and_a_single_worker_still_start_one_by_one(deploy):
    calls = []
    deploy._start_replica = lambda rctx, change, server_id, slot, index, old=(): \
        calls.append((change.role, index)) or index
    assert deploy._start_replicas(deploy.ctx, _change("web"), 3, "blue", range(2)) == [0, 1]
    assert deploy._start_replicas(deploy.ctx, _change(), 3, "blue", [2]) == [2]
    assert calls == [("web", 0), ("web", 1), ("worker", 2)]
    assert deploy.ctx.steps == []


def test_one_worker_keeps_its_own_step_name(deploy):
    deploy.launched_names = ["ks-worker-12-blue-op57"]
    replica = types.SimpleNamespace(container_name="ks-worker-12-blue-op57", status=None,
                                    container_id=None)
    deploy._health_check(deploy.ctx, None, _change(), [replica], None, "worker")
    assert [s.name for s in deploy.ctx.steps] == ["Check ks-worker-12-blue-op57 keeps running"]
    assert all(" --format " in c and "{{.Name}}" not in c for c in deploy.ctx.steps[0].commands)
    assert replica.container_id == "id-ks-worker-12-blue-op57"
    assert replica.status == ReplicaStatus.RUNNING
    assert deploy.clock_.slept == pytest.approx(OBSERVE_SECONDS)


def test_a_scale_up_starts_each_servers_missing_replicas_together(monkeypatch):
    s = ServiceScale.__new__(ServiceScale)
    calls, collected = [], []
    s._start_replicas = lambda ctx, change, server_id, slot, indices: \
        calls.append((server_id, slot, list(indices)))
    s._in_thread = lambda made, *ids: s
    s._collect = lambda made: collected.append(made)
    s.artifact, s.env = types.SimpleNamespace(id=1), types.SimpleNamespace(id=2)
    s.ctx = types.SimpleNamespace(in_parallel=lambda items, work: [work(i) for i in items])
    s._ensure_routes = s._await_gateways = s._claim_scheduler_on_new = lambda *a: None
    s._add(_change(), [(1, "blue", 1), (1, "blue", 2), (2, "green", 1)])
    assert calls == [(1, "blue", [1, 2]), (2, "green", [1])]
    assert collected == [{}]
    calls.clear()
    s._add(_change(), [(1, "blue", 2)])  # one server: no threads
    assert calls == [(1, "blue", [2])] and collected == [{}]
