"""Status pages tell the truth while and after an operation runs (issue 14, defects 4, 5, 6)."""
import datetime as dt

from app.extensions import db
from app.models import (EnvironmentAttachment, Operation, OperationStep, Service, ServiceSlice)
from app.models.enums import (AttachmentRole, DeployPolicy, OperationKind, OperationStatus as S,
                              ServiceCategory, SliceType, StepStatus)
from tests.factories import build_org

NOW = dt.datetime(2026, 12, 2, 6, 0, 0)


def _op(g, status, kind=OperationKind.ENVIRONMENT_DEPLOY, **kw):
    op = Operation(organisation_id=g.org.id, kind=kind, target_type="environment",
                   target_id=g.environment.id, status=status, **kw)
    db.session.add(op)
    db.session.flush()
    return op


def _step(op, order, name, status, cleanup=False):
    step = OperationStep(operation=op, name=name, order=order, status=status, is_cleanup=cleanup,
                         started_at=NOW if status is not StepStatus.PENDING else None)
    db.session.add(step)
    return step


def _route(g, port=8081):
    gateway = Service(organisation=g.org, name="gateway", category=ServiceCategory.GATEWAY,
                      type="caddy", driver_name="caddy", server=g.server,
                      deploy_policy=DeployPolicy.DEPENDENCY_ONLY)
    route = ServiceSlice(service=gateway, environment=g.environment, name="shop_production",
                         type=SliceType.CADDY_ROUTE,
                         config={"hostnames": ["shop.localhost"], "hostname": "shop.localhost",
                                 "scheme": "http", "public_port": port})
    db.session.add_all([gateway, route,
                        EnvironmentAttachment(environment=g.environment, service=gateway,
                                              service_slice=route, role=AttachmentRole.GATEWAY)])


def test_a_failed_operation_without_steps_says_why(app, client, auth):
    g = build_org()
    op = _op(g, S.FAILED, error="The server sandbox-2 is not provisioned.", started_at=NOW,
             finished_at=NOW)
    db.session.commit()
    auth.login(email="b@example.com")
    page = client.get(f"/operations/{op.id}").get_data(as_text=True)
    assert "No steps yet" not in page
    assert "No step ran: The server sandbox-2 is not provisioned." in page


def test_a_failed_deploy_says_the_previous_version_keeps_serving(app, client, auth):
    g = build_org()
    ok = _op(g, S.SUCCEEDED, started_at=NOW, finished_at=NOW, result={"commit": "c0ffee" * 6 + "abcd"})
    bad = _op(g, S.FAILED, started_at=NOW, finished_at=NOW, error="Health check failed")
    g.environment.current_artifact = g.artifact
    db.session.commit()
    auth.login(email="b@example.com")
    page = client.get(f"/operations/{bad.id}").get_data(as_text=True)
    assert "the previous version (<code>c0ffeec0ffee</code>) keeps serving" in page
    assert "Live at" not in page
    page = client.get(f"/operations/{ok.id}").get_data(as_text=True)
    assert "keeps serving" not in page


def test_live_at_with_port_on_operation_environment_and_dashboard(app, client, auth):
    g = build_org()
    _route(g, port=8081)
    g.environment.current_artifact = g.artifact
    ok = _op(g, S.SUCCEEDED, started_at=NOW, finished_at=NOW)
    db.session.commit()
    auth.login(email="b@example.com")
    link = '<a class="live-url" href="http://shop.localhost:8081/">http://shop.localhost:8081/</a>'
    for path in (f"/operations/{ok.id}", f"/environments/{g.environment.id}", "/"):
        page = client.get(path).get_data(as_text=True)
        assert link in page, path


def test_nothing_deployed_means_no_live_link(app, client, auth):
    g = build_org()
    _route(g)
    db.session.commit()
    auth.login(email="b@example.com")
    page = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "Live at" not in page and "shop.localhost:8081" not in page
    assert "not live" in client.get("/").get_data(as_text=True)


def test_running_operation_shows_step_n_of_m_planned_steps_and_ticking_durations(app, client, auth):
    g = build_org()
    before = _op(g, S.SUCCEEDED, started_at=NOW, finished_at=NOW)
    for n, name in enumerate(["Plan the deploy", "Build", "Health check", "Switch"], start=1):
        _step(before, n, name, StepStatus.SUCCEEDED)
    _step(before, 5, "Remove the build directory", StepStatus.SUCCEEDED, cleanup=True)
    running = _op(g, S.RUNNING, started_at=NOW)
    _step(running, 1, "Plan the deploy", StepStatus.SUCCEEDED)
    _step(running, 2, "Build", StepStatus.RUNNING)
    db.session.commit()
    auth.login(email="b@example.com")
    page = client.get(f"/operations/{running.id}").get_data(as_text=True)
    assert "step 2 of 4" in page
    assert page.count('class="planned"') == 2 and "Health check" in page and "Switch" in page
    assert "Remove the build directory" not in page  # clean-up is not part of the plan
    assert page.count("data-elapsed=") == 2  # the operation's and the running step's
    finished = client.get(f"/operations/{before.id}").get_data(as_text=True)
    assert "data-elapsed" not in finished and 'class="planned"' not in finished
    assert "following live output" not in finished and "complete log (succeeded)" in finished


def test_rows_of_unfinished_operations_refresh_themselves_until_they_end(app, client, auth):
    g = build_org()
    op = _op(g, S.PENDING)
    db.session.commit()
    auth.login(email="b@example.com")
    page = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert f'hx-get="/operations/{op.id}/row"' in page
    row = client.get(f"/operations/{op.id}/row").get_data(as_text=True)
    assert "status-pending" in row and "hx-trigger" in row
    op.status, op.started_at, op.finished_at = S.SUCCEEDED, NOW, NOW + dt.timedelta(seconds=3)
    db.session.commit()
    row = client.get(f"/operations/{op.id}/row").get_data(as_text=True)
    assert "status-succeeded" in row and "hx-trigger" not in row and "3.0s" in row
    assert "data-ago=" in row


def test_the_environment_page_last_deploy_badge_refreshes_until_the_deploy_ends(app, client, auth):
    g = build_org()
    auth.login(email="b@example.com")
    op_id = g.operation.id  # build_org's environment deploy, pending
    page = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert f'hx-get="/operations/{op_id}/badge"' in page
    g.operation.status, g.operation.started_at, g.operation.finished_at = S.FAILED, NOW, NOW
    db.session.commit()
    badge = client.get(f"/operations/{op_id}/badge").get_data(as_text=True)
    assert "status-failed" in badge and "hx-trigger" not in badge
