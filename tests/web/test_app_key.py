"""APP_KEY (issue 13, defect 2): generated once per environment, encrypted, secret, stable
across deploys, rotated only by an explicit, typed confirmation."""
import base64
import datetime as dt

import sqlalchemy as sa

from app.app_key import APP_KEY, app_key_variable, ensure_app_key
from app.models import Application, AuditEvent, Environment, EnvironmentVariable
from app.models.enums import OperationStatus, VariableSource
from tests.conftest import csrf_token_from
from tests.factories import build_org
from tests.conftest import sign_in


def login_as(client, graph):
    sign_in(client, graph.user)


def _key_bytes(value: str) -> bytes:
    assert value.startswith("base64:")
    return base64.b64decode(value[len("base64:"):], validate=True)


def _system_keys(db, env_id):
    return db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.environment_id == env_id, EnvironmentVariable.key == APP_KEY,
        EnvironmentVariable.source == VariableSource.SYSTEM)).scalars().all()


def test_a_new_environment_gets_a_secret_encrypted_app_key(client, auth, db):
    auth.signup()
    page = client.get("/applications/new").get_data(as_text=True)
    resp = client.post("/applications/new", data={
        "csrf_token": csrf_token_from(page), "name": "shop",
        "repository_url": "git@github.com:acme/shop.git", "repository_type": "auto",
        "default_branch": "main"})
    assert resp.status_code == 302
    application = db.session.execute(sa.select(Application)).scalar_one()
    (env,) = application.environments
    (row,) = _system_keys(db, env.id)
    assert row.is_secret and row.overridable
    assert len(_key_bytes(row.value)) == 32
    # Stored encrypted: the raw column is not the key.
    raw = db.session.execute(sa.text("SELECT value FROM environment_variables WHERE id = :i"),
                             {"i": row.id}).scalar_one()
    assert row.value not in raw and row.value[len("base64:"):] not in raw
    # The page lists it masked, as a system variable, with the rotate action.
    html = client.get(f"/environments/{env.id}").get_data(as_text=True)
    assert "APP_KEY" in html and row.value not in html and "Rotate APP_KEY" in html
    assert "sessions and encrypted cookies" in html


def test_each_environment_has_its_own_key(client, auth, db):
    auth.signup()
    page = client.get("/applications/new").get_data(as_text=True)
    client.post("/applications/new", data={
        "csrf_token": csrf_token_from(page), "name": "shop",
        "repository_url": "git@github.com:acme/shop.git", "repository_type": "auto",
        "default_branch": "main"})
    application = db.session.execute(sa.select(Application)).scalar_one()
    url = f"/applications/{application.id}/environments"
    page = client.get(f"/applications/{application.id}").get_data(as_text=True)
    resp = client.post(url, data={"csrf_token": csrf_token_from(page), "name": "staging",
                                  "branch": "main"})
    assert resp.status_code in (200, 302)
    envs = db.session.execute(sa.select(Environment)).scalars().all()
    assert len(envs) == 2
    keys = {_system_keys(db, e.id)[0].value for e in envs}
    assert len(keys) == 2


def test_ensure_never_replaces_an_existing_key(app, db):
    g = build_org()
    row, created = ensure_app_key(g.environment)
    assert created
    value = row.value
    db.session.commit()
    for _ in range(3):
        again, created = ensure_app_key(g.environment)
        assert not created and again.id == row.id and again.value == value
    assert len(_system_keys(db, g.environment.id)) == 1


def test_an_older_environment_gets_its_key_when_the_next_deploy_starts(app, client, db, auth):
    g = build_org()
    g.operation.status = OperationStatus.SUCCEEDED
    g.application.repository_known_hosts = "[git.example]:22 ssh-ed25519 AAAA"
    g.application.deploy_key_installed_at = dt.datetime(2026, 1, 1)
    db.session.commit()
    assert app_key_variable(g.environment) is None       # made before keys were generated
    login_as(client, g)
    headers = {"X-CSRFToken": auth.csrf(), "HX-Request": "true"}
    assert client.post(f"/environments/{g.environment.id}/deploy", headers=headers).status_code == 200
    (row,) = _system_keys(db, g.environment.id)
    first = row.value
    assert len(_key_bytes(first)) == 32
    # A second deploy keeps it (never regenerated silently).
    client.post(f"/environments/{g.environment.id}/deploy", headers=headers)
    db.session.expire_all()
    (row,) = _system_keys(db, g.environment.id)
    assert row.value == first


def _rotate(client, env_id, confirm):
    page = client.get(f"/environments/{env_id}").get_data(as_text=True)
    return client.post(f"/environments/{env_id}/app-key/rotate",
                       data={"csrf_token": csrf_token_from(page), "confirm": confirm})


def test_rotate_needs_the_typed_environment_name_and_changes_nothing_without_it(app, client, db):
    g = build_org()
    row, _ = ensure_app_key(g.environment)
    db.session.commit()
    before = row.value
    login_as(client, g)
    for wrong in ("", "Production", "staging", "production; rm -rf /", "x" * 500):
        resp = _rotate(client, g.environment.id, wrong)
        assert resp.status_code in (400, 422), wrong
        html = resp.get_data(as_text=True)
        assert "nothing was changed" in html and before not in html
        db.session.expire_all()
        assert _system_keys(db, g.environment.id)[0].value == before
    assert db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "app_key.rotate")).first() is None


def test_rotate_replaces_the_key_warns_and_is_audited(app, client, db):
    g = build_org()
    row, _ = ensure_app_key(g.environment)
    db.session.commit()
    before = row.value
    login_as(client, g)
    resp = _rotate(client, g.environment.id, "production")
    assert resp.status_code == 302
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "APP_KEY rotated" in html and "logged out" in html
    db.session.expire_all()
    (row,) = _system_keys(db, g.environment.id)
    assert row.value != before and len(_key_bytes(row.value)) == 32
    assert row.value not in html and before not in html
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "app_key.rotate")).scalar_one()
    assert event.user_id == g.user.id and event.target_id == g.environment.id
    assert row.value not in repr(event.detail) and before not in repr(event.detail)


def test_rotate_without_csrf_is_refused(app, client, db):
    g = build_org()
    row, _ = ensure_app_key(g.environment)
    db.session.commit()
    before = row.value
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/app-key/rotate",
                       data={"confirm": "production"})
    assert resp.status_code == 400
    db.session.expire_all()
    assert _system_keys(db, g.environment.id)[0].value == before


def test_rotate_another_organisations_environment_is_404(app, client, db):
    mine = build_org()
    other = build_org(email="o@example.com", organisation="Other")
    ensure_app_key(other.environment)
    db.session.commit()
    login_as(client, mine)
    page = client.get(f"/environments/{mine.environment.id}").get_data(as_text=True)
    resp = client.post(f"/environments/{other.environment.id}/app-key/rotate",
                       data={"csrf_token": csrf_token_from(page), "confirm": "production"})
    assert resp.status_code == 404
