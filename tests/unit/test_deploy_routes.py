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
