"""When a deploy (re)writes the gateway route: at the cutover, or -- when the plan has no
cutover phase, e.g. the first deploy of a newly added websocket service -- before recording."""
from __future__ import annotations

from app.deploys.handlers import EnvironmentDeploy
from app.deploys.planning import DeployPlan, Phase


class _Ctx:
    def __init__(self):
        self.children = []

    def check_cancelled(self):
        pass

    def run_child(self, kind, *args, **kwargs):
        self.children.append(kind)


def _deploy(phases):
    d = EnvironmentDeploy.__new__(EnvironmentDeploy)
    d.ctx, d.env = _Ctx(), type("Env", (), {"id": 1})()
    calls = []
    d._ensure_routes = lambda plan: calls.append("routes")
    d._await_gateways = lambda: calls.append("await gateways")
    d._record = lambda plan: calls.append("record")
    d._service_deploy = lambda *a: None
    plan = DeployPlan(digest="sha256:x", changes=(), unchanged=(), migration=None,
                      phases=tuple(Phase(k) for k in phases))
    return d, plan, calls


def test_routes_are_ensured_before_record_when_there_is_no_cutover():
    d, plan, calls = _deploy(["health", "record"])
    d._run_phases(plan)
    assert calls == ["routes", "await gateways", "record"]


def test_routes_are_ensured_once_at_the_cutover():
    # The gateways' confirmation comes before the cutover child: nothing old is drained
    # until every gateway has the new replicas in rotation.
    d, plan, calls = _deploy(["await_gateway", "drain", "stop", "record"])
    d._run_phases(plan)
    assert calls == ["routes", "await gateways", "record"]
    assert d.cutover_started
    assert [k.value for k in d.ctx.children] == ["gateway_cutover"]


def test_the_cutover_signals_the_drain_before_the_scheduler_changes_hands():
    # The gateways count failed checks of the drained replica while the scheduler moves:
    # the hand-over costs no time of its own; the wait, the window and the stop come after.
    from app.deploys.timing import NULL_CLOCK
    d, _, calls = _deploy([])
    d.clock = NULL_CLOCK
    change = object()
    d.plan = type("Plan", (), {"change_for": staticmethod(lambda sid: change)})()
    d._drain_signal = lambda ctx, c: calls.append("drain signal") or ["stamp"]
    d._scheduler_release = lambda ctx, p: calls.append("scheduler release")
    d._scheduler_claim = lambda ctx, p: calls.append("scheduler claim")
    d._drain_wait = lambda ctx, c, drained: calls.append(f"drain wait {drained}")
    d._stop_old = lambda ctx, c: calls.append("stop")
    d._cutover(d.ctx, [Phase("await_gateway"), Phase("scheduler_release", 1),
                       Phase("scheduler_claim", 1), Phase("drain", 1), Phase("stop", 1)])
    assert calls == ["drain signal", "scheduler release", "scheduler claim",
                     "drain wait ['stamp']", "stop"]
