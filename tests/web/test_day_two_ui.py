"""The environment page's day-two components (issue 17, sections 2, 5 and 6): commands,
.env in bulk and the deployment history; every bad input is a message, never a 500."""
from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from app.models import AuditEvent, EnvironmentVariable, Operation
from app.models.enums import (ArtifactStatus, OperationKind, OperationStatus, RepositoryType,
                              VariableSource)
from tests.conftest import sign_in
from tests.factories import SECRET_SENTINELS, build_org


def htmx(auth):
    return {"X-CSRFToken": auth.csrf(), "HX-Request": "true"}


def deployed(db):
    g = build_org()
    g.operation.status = OperationStatus.SUCCEEDED
    g.artifact.status = ArtifactStatus.READY
    g.artifact.image_digest = "sha256:" + "c" * 64
    g.environment.current_artifact_id = g.artifact.id
    db.session.commit()
    return g


def commands(db, env_id):
    return db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.COMMAND_RUN, Operation.target_id == env_id)
        .order_by(Operation.id)).scalars().all()


# --------------------------------------------------------------------------- commands

def test_page_offers_one_click_commands_and_a_typed_one(app, client, db):
    g = deployed(db)
    sign_in(client, g.user)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert 'id="commands"' in html
    for name in ("migrate --force", "migrate:status", "optimize:clear", "queue:restart",
                 "storage:link"):
        assert name in html
    assert "Run migrations" in html and 'name="cmd-command"' in html


def test_typed_command_starts_one_operation_with_argv_and_goes_to_its_log(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    resp = client.post(f"/environments/{g.environment.id}/commands", headers=htmx(auth),
                       data={"cmd-command": "php artisan tinker --execute='echo 1; $(id)'",
                             "cmd-timeout_minutes": "2"})
    assert resp.status_code == 204
    (op,) = commands(db, g.environment.id)
    assert resp.headers["HX-Redirect"] == f"/operations/{op.id}"
    assert op.params == {"argv": ["php", "artisan", "tinker", "--execute=echo 1; $(id)"],
                         "artifact_id": g.artifact.id}
    assert op.timeout_seconds == 120 and op.lock_keys == []
    assert op.created_by_id == g.user.id


def test_migrate_preset_holds_the_environment_lock(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    client.post(f"/environments/{g.environment.id}/commands", headers=htmx(auth),
                data={"cmd-preset": "migrate"})
    (op,) = commands(db, g.environment.id)
    assert op.params["argv"] == ["php", "artisan", "migrate", "--force"]
    assert op.lock_keys == [f"environment:{g.environment.id}"]


def test_bad_commands_are_refused_in_the_component(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    url = f"/environments/{g.environment.id}/commands"
    for data, says in (({"cmd-command": "php 'open"}, "cannot be split"),
                       ({"cmd-command": ""}, "Type a command"),
                       ({"cmd-command": "; id"}, "not a program name"),
                       ({"cmd-preset": "rm-rf"}, "Unknown one-click command"),
                       ({"cmd-command": "php -v", "cmd-timeout_minutes": "999"}, "Time limit")):
        resp = client.post(url, headers=htmx(auth), data=data)
        assert resp.status_code == 200, data
        assert says in resp.get_data(as_text=True), data
    resp = client.post(url, data={"cmd-command": "php 'open", "cmd-csrf_token": auth.csrf()})
    assert resp.status_code == 422 and "cannot be split" in resp.get_data(as_text=True)
    assert commands(db, g.environment.id) == []


def test_nothing_deployed_means_no_command(app, client, db, auth):
    g = build_org()
    sign_in(client, g.user)
    resp = client.post(f"/environments/{g.environment.id}/commands", headers=htmx(auth),
                       data={"cmd-preset": "migrate-status"})
    assert "deploy first" in resp.get_data(as_text=True)


def test_manual_mode_warns_about_pending_migrations_of_the_deployed_build(app, client, db):
    g = deployed(db)
    g.web.config = {**(g.web.config or {}), "migration_mode": "manual"}
    db.session.commit()
    sign_in(client, g.user)
    url = f"/environments/{g.environment.id}"
    assert "Not yet checked for this build" in client.get(url).get_data(as_text=True)
    check = Operation(organisation_id=g.org.id, kind=OperationKind.COMMAND_RUN,
                      target_type="environment", target_id=g.environment.id,
                      status=OperationStatus.SUCCEEDED,
                      params={"argv": ["php", "artisan", "migrate:status"],
                              "artifact_id": g.artifact.id},
                      result={"exit_code": 0, "pending_migrations": ["2026_01_01_add_orders"]})
    db.session.add(check)
    db.session.commit()
    html = client.get(url).get_data(as_text=True)
    assert "1 migration(s) of the deployed code have not run" in html
    assert "2026_01_01_add_orders" in html and 'value="configured-migrate"' in html
    db.session.add(Operation(organisation_id=g.org.id, kind=OperationKind.COMMAND_RUN,
                             target_type="environment", target_id=g.environment.id,
                             status=OperationStatus.SUCCEEDED,
                             params={"argv": ["php", "artisan", "migrate", "--force"],
                                     "artifact_id": g.artifact.id}, result={"exit_code": 0}))
    db.session.commit()
    assert "have not run" not in client.get(url).get_data(as_text=True)


# --------------------------------------------------------------------------- .env

PASTE = 'APP_NAME="My Shop"\nexport STRIPE_SECRET=sk_live_SENTINEL\nAPP_KEY=base64:new\n'


def test_preview_shows_a_masked_diff_and_never_echoes_the_text(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    resp = client.post(f"/environments/{g.environment.id}/dotenv/preview", headers=htmx(auth),
                       data={"dotenv-text": PASTE})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "APP_NAME" in html and "My Shop" in html and "added" in html
    assert "sk_live_SENTINEL" not in html and SECRET_SENTINELS["env_value"] not in html
    assert "changed" in html                 # APP_KEY: a secret, shown masked
    assert db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.key == "APP_NAME")).scalar_one_or_none() is None


def test_save_applies_the_previewed_paste_and_is_recorded(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    url = f"/environments/{g.environment.id}/dotenv"
    html = client.post(url + "/preview", headers=htmx(auth),
                       data={"dotenv-text": PASTE}).get_data(as_text=True)
    fp = re.search(r'name="dotenv-fingerprint" value="([0-9a-f]+)"', html).group(1)
    changed = client.post(url, headers=htmx(auth),
                          data={"dotenv-text": PASTE + "X=1\n", "dotenv-fingerprint": fp})
    assert "changed since the preview" in changed.get_data(as_text=True)
    resp = client.post(url, headers=htmx(auth), data={"dotenv-text": PASTE,
                                                      "dotenv-fingerprint": fp})
    assert "2 added, 1 changed, 0 removed" in resp.get_data(as_text=True)
    rows = {v.key: v for v in db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.environment_id == g.environment.id,
        EnvironmentVariable.source == VariableSource.USER)).scalars()}
    assert rows["APP_NAME"].value == "My Shop" and not rows["APP_NAME"].is_secret
    assert rows["STRIPE_SECRET"].value == "sk_live_SENTINEL" and rows["STRIPE_SECRET"].is_secret
    assert rows["APP_KEY"].value == "base64:new" and rows["APP_KEY"].is_secret
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "variables.bulk_import")).scalar_one()
    assert "sk_live_SENTINEL" not in repr(event.detail) and event.user_id == g.user.id


def test_invalid_lines_block_the_save(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    html = client.post(f"/environments/{g.environment.id}/dotenv/preview", headers=htmx(auth),
                       data={"dotenv-text": "OK=1\n9BAD=x\n"}).get_data(as_text=True)
    assert "line 2" in html and "Save these changes" not in html


def test_export_masks_secrets_and_the_revealed_export_is_recorded(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    url = f"/environments/{g.environment.id}/dotenv/export"
    masked = client.get(url)
    assert masked.status_code == 200 and "attachment" in masked.headers["Content-Disposition"]
    assert "APP_KEY=***" in masked.get_data(as_text=True)
    assert SECRET_SENTINELS["env_value"] not in masked.get_data(as_text=True)
    assert client.post(url).status_code == 400                        # no CSRF token
    reveals = sa.select(AuditEvent).where(AuditEvent.action == "variables.export_reveal")
    assert db.session.execute(reveals).scalars().all() == []
    shown = client.post(url, data={"csrf_token": auth.csrf()})
    assert SECRET_SENTINELS["env_value"] in shown.get_data(as_text=True)
    event = db.session.execute(reveals).scalar_one()
    assert event.action == "variables.export_reveal" and event.user_id == g.user.id
    assert "APP_KEY" in event.detail["keys"]
    assert SECRET_SENTINELS["env_value"] not in repr(event.detail)


# --------------------------------------------------------------------------- history

def test_history_shows_commit_author_starter_duration_result_and_compare(app, client, db):
    g = deployed(db)
    g.application.repository_type = RepositoryType.GITHUB
    start = dt.datetime(2026, 12, 1, 10, 0, 0)
    old = g.operation
    old.started_at, old.finished_at = start, start + dt.timedelta(seconds=40)
    old.result = {"commit": "a" * 40, "artifact_id": g.artifact.id}
    from app.models import BuildArtifact
    newer = BuildArtifact(environment=g.environment, commit_sha="b" * 40, image_tag="shop:bbbb",
                          status=ArtifactStatus.READY, image_digest="sha256:" + "d" * 64,
                          meta={"commit": {"author": "Ada <b>L</b>", "email": "a@x",
                                           "message": "Add orders"}})
    db.session.add(newer)
    db.session.flush()
    op = Operation(organisation_id=g.org.id, kind=OperationKind.ENVIRONMENT_DEPLOY,
                   target_type="environment", target_id=g.environment.id,
                   status=OperationStatus.FAILED, created_by_id=g.user.id,
                   started_at=start + dt.timedelta(hours=1),
                   finished_at=start + dt.timedelta(hours=1, seconds=95),
                   result={"commit": "b" * 40, "artifact_id": newer.id,
                           "commit_message": "Add orders", "commit_author": "Ada <b>L</b>"})
    db.session.add(op)
    db.session.commit()
    sign_in(client, g.user)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    section = html[html.index('id="history"'):]
    assert "Add orders" in section and "Ada &lt;b&gt;L&lt;/b&gt;" in section
    assert f"https://github.com/acme/shop/compare/{'a' * 40}...{'b' * 40}" in section
    assert (g.user.name or g.user.email) in section
    assert "1m 35s" in section or "95" in section
    assert "failed" in section and "running now" in section
    assert f"/environments/{g.environment.id}/rollback/{newer.id}" in section   # Redeploy this


def test_dotenv_works_without_htmx(app, client, db, auth):
    g = deployed(db)
    sign_in(client, g.user)
    url = f"/environments/{g.environment.id}/dotenv"
    token = auth.csrf()
    html = client.post(url + "/preview", data={"dotenv-text": "NEW_ONE=1\n",
                                               "dotenv-csrf_token": token}).get_data(as_text=True)
    assert 'id="history"' in html and "NEW_ONE" in html          # the whole page
    fp = re.search(r'name="dotenv-fingerprint" value="([0-9a-f]+)"', html).group(1)
    resp = client.post(url, data={"dotenv-text": "NEW_ONE=1\n", "dotenv-fingerprint": fp,
                                  "dotenv-csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#variables")


def test_a_command_operation_page_shows_its_exit_code(app, client, db):
    from app.models import OperationStep
    from app.models.enums import StepStatus
    g = deployed(db)
    op = Operation(organisation_id=g.org.id, kind=OperationKind.COMMAND_RUN,
                   target_type="environment", target_id=g.environment.id,
                   status=OperationStatus.FAILED, summary="Run php artisan nope",
                   error="`docker compose ... php artisan nope` exited with 1",
                   params={"argv": ["php", "artisan", "nope"], "artifact_id": g.artifact.id},
                   result={"exit_code": 1})
    db.session.add(op)
    db.session.flush()
    db.session.add(OperationStep(operation_id=op.id, name="Run php artisan nope", order=1,
                                 status=StepStatus.FAILED, exit_code=1, logs="ERROR not defined",
                                 error_logs=""))
    db.session.commit()
    sign_in(client, g.user)
    resp = client.get(f"/operations/{op.id}")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "command run" in html and "exited with 1" in html and "<td>1</td>" in html
