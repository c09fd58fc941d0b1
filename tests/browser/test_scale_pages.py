"""Issue 20's pages in a real browser: a finished multi-server deploy shows one column per
server with each server's own log lines and the deploy's time per phase; a service's
resources page shows each server's capacity against limit x replicas and saves a limit.

The rows are written as a finished deploy leaves them (the sandbox tiers produce them for
real in test_fanout.py and test_replicas.py); here the browser reads and drives the pages.
"""
import datetime as dt

import pytest
import sqlalchemy as sa

from tests.browser.test_operation_log import _app
from tests.browser.test_signup import signup

pytestmark = pytest.mark.browser


def _seed(app, email: str) -> dict:
    from app.extensions import db
    from app.models import (Application, Environment, Operation, OperationStep, Server,
                            Service, User)
    from app.models.enums import (DeployPolicy, OperationKind, OperationStatus,
                                  ServerStatus, ServiceCategory, StepStatus)
    with app.app_context():
        org_id = db.session.execute(sa.select(User).where(User.email == email)) \
            .scalar_one().organisation.id
        servers = [Server(organisation_id=org_id, name=f"web-{i}", public_ip=f"203.0.113.{i}",
                          private_ip=f"10.0.0.{i}", status=ServerStatus.ACTIVE,
                          facts={"capacity": {"cores": 2, "mem_total_mb": 4096}})
                   for i in (1, 2)]
        application = Application(organisation_id=org_id, name="shop",
                                  repository_url="git@example.com:acme/shop.git")
        db.session.add_all([*servers, application])
        db.session.flush()
        env = Environment(application_id=application.id, name="production")
        db.session.add(env)
        db.session.flush()
        web = Service(organisation_id=org_id, environment_id=env.id, name="web",
                      category=ServiceCategory.APPLICATION, type="laravel",
                      driver_name="laravel", deploy_policy=DeployPolicy.WITH_ENVIRONMENT,
                      process_roles=["web"], desired_replicas=2,
                      config={"server_ids": [s.id for s in servers]})
        db.session.add(web)
        db.session.flush()
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        ago = lambda s: now - dt.timedelta(seconds=s)  # noqa: E731
        done = dict(status=OperationStatus.SUCCEEDED, organisation_id=org_id)
        deploy = Operation(kind=OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                           target_id=env.id, started_at=ago(40), finished_at=ago(1),
                           summary="Deploy shop/production",
                           result={"phases": {"resolve": 0.3, "artifact": 0.2, "pull": 2.1,
                                              "start": 1.7, "health": 0.6, "gateway": 0.9,
                                              "drain_window": 1.5, "drain": 1.5, "stop": 0.8},
                                   "timing": {"total_s": 9.6, "work_s": 2.7,
                                              "overhead_s": 6.9}}, **done)
        db.session.add(deploy)
        db.session.flush()
        parent = Operation(kind=OperationKind.SERVICE_DEPLOY, target_type="service",
                           target_id=web.id, parent_id=deploy.id, started_at=ago(30),
                           finished_at=ago(5), summary="Deploy web", **done)
        db.session.add(parent)
        db.session.flush()
        for i, server in enumerate(servers):
            child = Operation(kind=OperationKind.REPLICA_DEPLOY, target_type="service",
                              target_id=web.id, parent_id=parent.id, started_at=ago(29),
                              finished_at=ago(20 + i), params={"server_id": server.id},
                              summary=f"web: green slot on {server.name}", **done)
            db.session.add(child)
            db.session.flush()
            db.session.add(OperationStep(
                operation_id=child.id, name=f"Start web in the green slot on {server.name}",
                order=1, status=StepStatus.SUCCEEDED, started_at=ago(29), finished_at=ago(21),
                logs=f"started on {server.name}\nhealthy on {server.name}\n"))
        db.session.commit()
        return {"deploy_id": deploy.id, "env_id": env.id, "web_id": web.id,
                "servers": [s.name for s in servers]}


def test_per_server_columns_phases_and_the_resources_page(page, live_server, screenshot):
    base = live_server["url"]
    email = signup(page, base)
    page.wait_for_url(lambda url: "/signup" not in url)
    app = _app(live_server["env"])
    seeded = _seed(app, email)

    page.goto(f"{base}/operations/{seeded['deploy_id']}")
    columns = page.locator("[data-server-column]")
    assert columns.count() == 2
    for i, name in enumerate(seeded["servers"]):
        column = columns.nth(i)
        assert name in column.locator("h3").inner_text()
        log = column.locator("[data-server-log]").inner_text()
        assert f"healthy on {name}" in log
        other = seeded["servers"][1 - i]
        assert f"healthy on {other}" not in log  # each column holds its own server's lines
    phases = page.locator("[data-phases]").inner_text()
    assert "drain window 1.5 s" in phases and "everything else 6.9 s" in phases
    screenshot(page, "operation-per-server")

    page.goto(f"{base}/environments/{seeded['env_id']}/services/{seeded['web_id']}/resources")
    body = page.locator("main").inner_text()
    assert all(name in body for name in seeded["servers"])
    assert page.locator("[data-capacity]").first.inner_text().startswith("Capacity: 2 cores, 4096 MiB")
    page.get_by_label("CPU limit per replica").fill("0.5")
    page.get_by_label("Memory limit per replica").fill("512m")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Resource limits of web saved").wait_for()
    # limit x replicas per server: 0.5 x 2 and 512 MiB x 2
    assert page.locator("[data-committed-cpus]").first.inner_text() == "1 CPUs"
    assert page.locator("[data-committed-memory]").first.inner_text() == "1024 MiB"
    screenshot(page, "service-resources")
    with app.app_context():
        from app.extensions import db
        from app.models import Service
        web = db.session.get(Service, seeded["web_id"])
        assert (web.default_cpu_limit, web.default_memory_limit_mb) == (0.5, 512)
