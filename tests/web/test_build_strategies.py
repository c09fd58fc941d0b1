"""Build strategies through the UI (SPEC 6, issue 21 item 1): a builder service is created from
New service and chosen in the build settings; external_registry needs no git and no key."""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from app.builds import check_build_plan, runs_prebuilt_image
from app.deploys.timing import NULL_CLOCK
from app.drivers import get_driver
from app.models import Operation, Service
from app.models.enums import (OperationKind, ServerStatus, ServiceCategory, ServiceStatus)
from tests.conftest import sign_in
from tests.factories import build_org


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    graph.server.status = ServerStatus.ACTIVE
    db.session.commit()
    sign_in(client, graph.user)
    return graph


def post(client, url, token, data):
    return client.post(url, data={"csrf_token": token, **data})


def build_form(env, **data):
    base = {"branch": env.branch, "strategy": "target_server", "registry_id": "",
            "php_version": "8.3", "base_image": "", "document_root": "public",
            "health_path": "/up", "js_tool": "none", "js_command": "", "image": "",
            "builder_service_id": ""}
    base.update(data)
    return base


def test_a_builder_is_created_from_new_service_and_chosen_in_the_build_settings(
        client, db, g, auth):
    token = auth.csrf()
    html = client.get("/services/new").get_data(as_text=True)
    assert "Image builder" in html
    resp = post(client, "/services/new", token, {"type": "builder", "name": "builder-1",
                                                 "server_id": str(g.server.id)})
    assert resp.status_code == 302
    builder = db.session.execute(sa.select(Service).where(Service.name == "builder-1")
                                 ).scalar_one()
    assert (builder.category, builder.type, builder.config) == \
        (ServiceCategory.BUILDER, "builder", {})
    op = db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.SERVICE_DEPLOY, Operation.target_id == builder.id)
    ).scalar_one()
    assert resp.headers["Location"].endswith(f"/operations/{op.id}")
    page = client.get(f"/services/{builder.id}")
    assert page.status_code == 200 and "builder-1" in page.get_data(as_text=True)
    assert client.get("/services/").status_code == 200

    env = g.environment
    url = f"/applications/{g.application.id}/environments/{env.id}/build"
    page = client.get(url).get_data(as_text=True)
    assert "builder-1 on web-1 (new)" in page
    resp = post(client, url, token, build_form(env, strategy="dedicated_builder",
                                               builder_service_id=str(builder.id),
                                               registry_id=str(g.registry.id)))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.session.refresh(env)
    assert env.build_config["strategy"] == "dedicated_builder"
    assert env.build_config["builder_service_id"] == builder.id
    # Not deployed yet: the plan refuses with the reason and a link to the builder.
    problems = {p.code: p for p in check_build_plan(env, [g.server])}
    assert "builder_not_ready" in problems
    assert problems["builder_not_ready"].action_endpoint == "services.show"
    builder.status = ServiceStatus.RUNNING
    db.session.commit()
    assert "builder_not_ready" not in {p.code for p in check_build_plan(env, [g.server])}


def test_a_service_that_is_not_a_builder_cannot_be_chosen_as_one(client, db, g, auth):
    env = g.environment
    url = f"/applications/{g.application.id}/environments/{env.id}/build"
    resp = post(client, url, auth.csrf(), build_form(env, strategy="dedicated_builder",
                                                     builder_service_id=str(g.postgres.id)))
    assert resp.status_code == 400
    db.session.refresh(env)
    assert (env.build_config or {}).get("builder_service_id") is None


def test_external_registry_needs_no_deploy_key_nor_verified_repository(client, db, g, auth):
    env = g.environment
    url = f"/applications/{g.application.id}/environments/{env.id}/build"
    ref = "registry.example.com/acme/shop:1.4.0"
    resp = post(client, url, auth.csrf(), build_form(env, strategy="external_registry",
                                                     image=ref))
    assert resp.status_code == 302
    db.session.refresh(env)
    assert runs_prebuilt_image(env.build_config) and env.build_config["image"] == ref
    g.application.deploy_key_private = None
    g.application.repository_known_hosts = None
    db.session.commit()
    codes = {p.code for p in check_build_plan(env, [g.server])}
    assert not codes & {"deploy_key", "repository", "repository_unverified"}, codes
    # A target_server build does need them.
    assert not runs_prebuilt_image({"strategy": "target_server"})
    assert not runs_prebuilt_image({"strategy": "nonsense"})


def test_external_registry_resolves_no_commit_at_deploy(g, db, monkeypatch):
    """The deploy's artifact step: no "Resolve <branch>" (git ls-remote) for external images;
    the build layer gets no commit and pins the image by digest itself."""
    from app.deploys import handlers
    env = g.environment
    env.build_config = {"strategy": "external_registry", "image": "registry.example.com/a:1"}
    db.session.commit()
    seen = {}

    def no_git(*a, **k):
        raise AssertionError("git must not run for external_registry")

    def find_or_build(ctx, environment, sha, servers, clock=None):
        seen["sha"] = sha
        return "artifact", None, set()

    monkeypatch.setattr(handlers, "resolve_commit", no_git)
    monkeypatch.setattr(handlers, "find_or_build", find_or_build)
    steps = []

    @contextmanager
    def step(name, server=None):
        steps.append(name)
        yield SimpleNamespace(log=lambda *_: None)

    deploy = handlers.EnvironmentDeploy.__new__(handlers.EnvironmentDeploy)
    deploy.ctx = SimpleNamespace(params={}, step=step)
    deploy.env = env
    deploy.clock = NULL_CLOCK
    assert deploy._artifact([g.server]) == "artifact"
    assert seen == {"sha": None} and steps == []


def test_the_builder_driver_is_a_registered_container_less_role():
    driver = get_driver("builder")
    assert driver.category == ServiceCategory.BUILDER and driver.runs_container is False
    service = SimpleNamespace(id=41)
    plans = driver.readiness_steps(service)
    rendered = [a.command.render() for p in plans for a in p.actions if hasattr(a, "command")]
    assert rendered == ["docker version --format '{{.Server.Version}}'",
                        "docker build --help", "docker push --help"]
    check = plans[0].actions[0].expect
    assert check("27.3.1\n") is None and "did not answer" in check("Cannot connect\n")
    assert driver.image_on_track("docker:27") is not None
