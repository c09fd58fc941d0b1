import sqlalchemy as sa

from app.models import AuditEvent
from tests.factories import SECRET_SENTINELS, build_org
from tests.conftest import sign_in


def login_as(client, graph):
    sign_in(client, graph.user)


def test_environment_page_shows_services_attachments_and_masks_secrets(app, client, db):
    g = build_org()
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "production" in html and "web" in html and "postgres" in html
    assert "APP_KEY" in html
    assert SECRET_SENTINELS["env_value"] not in html
    assert "Reveal" in html
    assert "Advanced: deploy policies" in html


def test_reveal_returns_the_value_and_is_recorded(app, client, db, auth):
    g = build_org()
    login_as(client, g)
    token = auth.csrf()
    resp = client.post(f"/environments/{g.environment.id}/variables/{g.variable.id}/reveal",
                       headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert resp.status_code == 200
    assert SECRET_SENTINELS["env_value"] in resp.get_data(as_text=True)
    event = db.session.execute(sa.select(AuditEvent)).scalar_one()
    assert event.action == "variable.reveal" and event.user_id == g.user.id
    assert SECRET_SENTINELS["env_value"] not in repr(event.detail)


def test_reveal_without_csrf_is_refused(app, client):
    g = build_org()
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/variables/{g.variable.id}/reveal")
    assert resp.status_code == 400
