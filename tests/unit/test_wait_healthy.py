"""A service deploy waits for its container's health (app.services_ops.steps.wait_healthy).

Docker runs a container's first health check one ``interval`` (5 s) after the start,
however soon the service is up; with its 2 s poll a Postgres, Valkey or Caddy deploy
waited 5-7 s for nothing. While Docker says ``starting``, the step runs the driver's own
check in the container itself (``docker exec``, every 0.5 s) and the service is healthy
as soon as it passes. Without a check to run it waits for Docker as before; an exited or
unhealthy container still fails with its log.
"""
from __future__ import annotations

import contextlib
import types

import pytest

from app.drivers.base import HealthCheck
from app.operations import StepFailed
from app.services_ops import steps
from tests.unit.fake_clock import FakeClock


class _Step:
    def __init__(self, answer):
        self.commands, self.logs, self._answer = [], [], answer

    def run(self, command, **kw):
        text = command.render()
        self.commands.append(text)
        code, out = self._answer(text)
        return types.SimpleNamespace(exit_code=code, stdout=out)

    def log(self, line):
        self.logs.append(line)


class _Ctx:
    def __init__(self, answer):
        self.step_ = _Step(answer)

    @contextlib.contextmanager
    def step(self, name, server=None, **kw):
        yield self.step_

    def check_cancelled(self):
        pass


@pytest.fixture()
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(steps.time, "monotonic", c.monotonic)
    monkeypatch.setattr(steps.time, "sleep", c.sleep)
    return c


def _server(answers):
    """inspect answers in turn (the last one repeats); the probe passes from call N on."""
    state = {"inspects": 0, "probes": 0}

    def answer(text):
        if text.startswith("docker inspect"):
            i = min(state["inspects"], len(answers["inspect"]) - 1)
            state["inspects"] += 1
            return 0, answers["inspect"][i] + "\n"
        if text.startswith("docker exec"):
            state["probes"] += 1
            return (0 if state["probes"] >= answers.get("probe_passes_at", 1) else 1), ""
        return 0, "log lines\n"
    return answer, state


def test_the_drivers_check_run_by_keystone_ends_the_wait_before_dockers_first_check(clock):
    answer, state = _server({"inspect": ["starting"], "probe_passes_at": 3})
    ctx = _Ctx(answer)
    probe = HealthCheck(("valkey-cli -h 127.0.0.1 ping | grep -q PONG",), shell_form=True)
    status = steps.wait_healthy(ctx, None, "ks-svc-7", probe=probe.exec_argv())
    assert status == "healthy"
    assert state["probes"] == 3 and clock.slept == pytest.approx(2 * steps.PROBE_INTERVAL)
    assert ctx.step_.commands[1] == ("docker exec ks-svc-7 sh -c "
                                     "'valkey-cli -h 127.0.0.1 ping | grep -q PONG'")
    assert "run by Keystone" in ctx.step_.logs[-1]


def test_exec_form_checks_run_as_given():
    check = HealthCheck(("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"))
    assert check.exec_argv() == ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]
    assert HealthCheck(("a b", "c"), shell_form=True).exec_argv() == ["sh", "-c", "a b c"]


def test_docker_saying_healthy_first_needs_no_probe(clock):
    answer, state = _server({"inspect": ["healthy"]})
    assert steps.wait_healthy(_Ctx(answer), None, "ks-svc-7", probe=["true"]) == "healthy"
    assert state["probes"] == 0 and clock.slept == 0


def test_without_a_check_it_waits_for_docker_at_the_old_pace(clock):
    answer, state = _server({"inspect": ["starting", "starting", "healthy"]})
    assert steps.wait_healthy(_Ctx(answer), None, "ks-svc-7") == "healthy"
    assert state["probes"] == 0 and clock.slept == pytest.approx(2 * steps.POLL_INTERVAL)


@pytest.mark.parametrize("final", ["unhealthy", "exited"])
def test_a_container_that_fails_still_fails_with_its_log(clock, final):
    answer, state = _server({"inspect": ["starting", final], "probe_passes_at": 99})
    ctx = _Ctx(answer)
    with pytest.raises(StepFailed, match=f"did not become healthy \\(state: {final}\\)"):
        steps.wait_healthy(ctx, None, "ks-svc-7", probe=["false"])
    assert ctx.step_.commands[-1] == "docker logs --tail 40 ks-svc-7"


def test_a_probe_that_never_passes_ends_at_the_timeout(clock):
    answer, state = _server({"inspect": ["starting"], "probe_passes_at": 10 ** 9})
    with pytest.raises(StepFailed, match="state: starting"):
        steps.wait_healthy(_Ctx(answer), None, "ks-svc-7", timeout=5, probe=["false"])
    assert state["probes"] == pytest.approx(5 / steps.PROBE_INTERVAL, abs=2)
