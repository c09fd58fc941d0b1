"""get_child_or_404: a child reached through another parent of the same organisation is a
404, for every view that loads "parent, then child" (variables, slices, artifacts,
environments of an application, services of an environment)."""
from __future__ import annotations

import pytest
from flask_login import login_user
from werkzeug.exceptions import NotFound

from app.extensions import db
from app.models import Application, Environment, EnvironmentVariable, Service, ServiceSlice
from app.models.enums import DeployPolicy, ServiceCategory
from app.scoping import get_child_or_404, get_for_org_or_404
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org


def _second_parents(g):
    """A second application, environment and postgres service in the same organisation."""
    app2 = Application(organisation=g.org, name="blog", repository_url="git@github.com:acme/blog.git")
    env2 = Environment(application=app2, name="staging", branch="main")
    pg2 = Service(organisation=g.org, name="postgres-2", category=ServiceCategory.DATABASE,
                  type="postgres", version_track="18", driver_name="postgres", server=g.server,
                  deploy_policy=DeployPolicy.DEPENDENCY_ONLY)
    db.session.add_all([app2, env2, pg2])
    db.session.commit()
    return app2, env2, pg2


def test_get_child_or_404_checks_the_parent(app):
    g = build_org()
    _app2, env2, _pg2 = _second_parents(g)
    with app.test_request_context():
        login_user(g.user)
        env = get_for_org_or_404(Environment, g.environment.id)
        var = get_child_or_404(env, EnvironmentVariable, g.variable.id, "environment_id")
        assert var.id == g.variable.id
        with pytest.raises(NotFound):
            get_child_or_404(env2, EnvironmentVariable, g.variable.id, "environment_id")
        with pytest.raises(NotFound):
            get_child_or_404(env, EnvironmentVariable, "7x", "environment_id")
        with pytest.raises(NotFound):
            get_child_or_404(env, ServiceSlice, g.slice.id, "service_id")


def test_urls_with_a_child_of_another_parent_are_404(app, client):
    g = build_org()
    app2, env2, pg2 = _second_parents(g)
    sign_in(client, g.user)
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    before = (g.variable.value, g.slice.name)
    urls = [
        ("POST", f"/environments/{env2.id}/variables/{g.variable.id}/reveal"),
        ("POST", f"/environments/{env2.id}/variables/{g.variable.id}"),
        ("POST", f"/environments/{env2.id}/variables/{g.variable.id}/delete"),
        ("GET", f"/services/{pg2.id}/slices/{g.slice.id}/delete"),
        ("POST", f"/services/{pg2.id}/slices/{g.slice.id}/delete"),
        ("POST", f"/environments/{env2.id}/rollback/{g.artifact.id}"),
        ("POST", f"/environments/{env2.id}/services/{g.web.id}/embedded-worker"),
        ("GET", f"/applications/{app2.id}/environments/{g.environment.id}/build"),
    ]
    for method, url in urls:
        resp = client.open(url, method=method, headers={"X-CSRFToken": token},
                           data={"csrf_token": token, "value": "changed", "confirm": "x"})
        assert resp.status_code == 404, f"{method} {url} answered {resp.status_code}"
    db.session.expire_all()
    assert (db.session.get(EnvironmentVariable, g.variable.id).value,
            db.session.get(ServiceSlice, g.slice.id).name) == before
