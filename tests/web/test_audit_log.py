"""The audit log: what is recorded (with the client's address), the page's filters and
pages, the CSV export, and a query count that does not grow with the rows (issue 19)."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from app import audit
from app.models import AuditEvent, Operation, User
from app.models.enums import OperationKind
from app.operations import start_operation
from tests.conftest import csrf_token_from, make_app, sign_in
from tests.factories import SECRET_SENTINELS, build_org

PASSWORD = "correct horse battery"


def _events(db, action=None):
    stmt = sa.select(AuditEvent).order_by(AuditEvent.id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    return db.session.execute(stmt).scalars().all()


def test_sign_ins_and_failed_sign_ins_are_recorded(app, client, auth, db):
    auth.signup()
    auth.logout()
    assert auth.login(password="wrong password!").status_code == 422
    assert auth.login(email="nobody@example.com", password="wrong password!").status_code == 422
    assert auth.login().status_code == 302
    user = db.session.execute(sa.select(User)).scalar_one()
    failed, = _events(db, "auth.sign_in_failed")     # the unknown email is not recorded
    assert (failed.user_id, failed.target_type, failed.target_id) == (user.id, "user", user.id)
    assert failed.detail == {"email": "owner@example.com", "reason": "password"}
    assert failed.ip == "127.0.0.1" and "wrong password" not in repr(failed.detail)
    signed, = _events(db, "auth.sign_in")
    assert signed.user_id == user.id and signed.detail == {"method": "password"}


def test_the_address_honours_trusted_proxies(tmp_path, migrated_db_template, redis_url):
    app = make_app(tmp_path, migrated_db_template, redis_url, TRUSTED_PROXIES=1)
    from app.extensions import db
    with app.app_context():
        client = app.test_client()
        page = client.get("/signup").get_data(as_text=True)
        client.post("/signup", data={"csrf_token": csrf_token_from(page), "organisation": "A",
                                     "name": "", "email": "a@example.com", "password": PASSWORD,
                                     "confirm": PASSWORD})
        client.post("/logout", data={"csrf_token": csrf_token_from(
            client.get("/").get_data(as_text=True))})
        page = client.get("/login").get_data(as_text=True)
        client.post("/login", data={"csrf_token": csrf_token_from(page),
                                    "email": "a@example.com", "password": PASSWORD},
                    headers={"X-Forwarded-For": "198.51.100.7"},
                    environ_base={"REMOTE_ADDR": "10.0.0.1"})
        event = db.session.execute(sa.select(AuditEvent).where(
            AuditEvent.action == "auth.sign_in")).scalar_one()
        assert event.ip == "198.51.100.7"
        db.session.remove()
        db.engine.dispose()


def test_without_trusted_proxies_the_forwarded_header_is_ignored(app, client, auth, db):
    auth.signup()
    auth.logout()
    page = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"csrf_token": csrf_token_from(page),
                                "email": "owner@example.com", "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.7"})
    assert _events(db, "auth.sign_in")[0].ip == "127.0.0.1"


def test_operations_are_recorded_once_where_they_start(app, db):
    g = build_org()
    db.session.commit()
    deploy = start_operation(OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                             target_id=g.environment.id, organisation_id=g.org.id, user=g.user,
                             params={"force": False}, summary="Deploy shop/production",
                             enqueue=False)
    rollback = start_operation(OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                               target_id=g.environment.id, organisation_id=g.org.id,
                               user=g.user, params={"artifact_id": 7, "rollback": True},
                               summary="Roll back", enqueue=False)
    command = start_operation(OperationKind.COMMAND_RUN, target_type="environment",
                              target_id=g.environment.id, organisation_id=g.org.id,
                              user=g.user, params={}, summary="php artisan migrate",
                              enqueue=False)
    scheduled = start_operation(OperationKind.DATABASE_BACKUP, target_type="service_slice",
                                target_id=g.slice.id, organisation_id=g.org.id, enqueue=False)
    check = start_operation(OperationKind.HOST_KEY_SCAN, target_type="server",
                            target_id=g.server.id, organisation_id=g.org.id, user=g.user,
                            enqueue=False)
    child = Operation(organisation_id=g.org.id, kind=OperationKind.REPLICA_DEPLOY,
                      target_type="service", target_id=g.web.id, parent_id=deploy.id)
    db.session.add(child)
    db.session.commit()
    assert audit.record_operation(child) is None
    rows = {e.detail["operation_id"]: e for e in _events(db) if "operation_id" in e.detail}
    assert set(rows) == {deploy.id, rollback.id, command.id, scheduled.id}   # not the check
    assert rows[deploy.id].action == "deploy" and rows[deploy.id].user_id == g.user.id
    assert rows[rollback.id].action == "rollback" and rows[rollback.id].detail["artifact_id"] == 7
    assert rows[command.id].action == "command_run"
    assert rows[command.id].target_type == "environment"
    assert rows[scheduled.id].action == "backup.run" and rows[scheduled.id].user_id is None
    assert rows[scheduled.id].detail["by"] == "keystone"
    assert check.id not in rows


def test_secret_values_are_refused_in_detail(app, db):
    g = build_org()
    db.session.commit()
    with pytest.raises(ValueError):
        audit.record("variable.reveal", g.variable, {"value": "x"},
                     organisation_id=g.org.id)


def test_token_create_and_revoke_are_recorded(app, client, db):
    g = build_org()
    db.session.commit()
    sign_in(client, g.user)
    before = len(_events(db, "api_token.create"))       # build_org made one too
    page = client.get("/settings/tokens/").get_data(as_text=True)
    made = client.post("/settings/tokens/", data={"csrf_token": csrf_token_from(page),
                                                  "name": "laptop", "scope_read": "y",
                                                  "expires": "30"})
    assert made.status_code == 201
    *_, created = _events(db, "api_token.create")
    assert len(_events(db, "api_token.create")) == before + 1 and created.user_id == g.user.id
    assert created.detail["name"] == "laptop" and created.detail["scopes"] == ["read"]
    token_text = made.get_data(as_text=True)
    assert created.detail["prefix"] in token_text
    client.post(f"/settings/tokens/{created.target_id}/revoke",
                data={"csrf_token": csrf_token_from(page)})
    revoked, = _events(db, "api_token.revoke")
    assert revoked.target_id == created.target_id and revoked.user_id == g.user.id


def test_server_create_and_delete_are_recorded(app, client, db):
    g = build_org()
    db.session.commit()
    sign_in(client, g.user)
    page = client.get("/").get_data(as_text=True)
    from app.models import Server
    spare = Server(organisation_id=g.org.id, name="spare", public_ip="203.0.113.20")
    db.session.add(spare)
    db.session.commit()
    client.post(f"/servers/{spare.id}/delete", data={"csrf_token": csrf_token_from(page)})
    deleted, = _events(db, "server.delete")
    assert deleted.target_id == spare.id and deleted.detail == {"name": "spare"}


def _audit_rows(db, org_id, user_id, n, start=None):
    start = start or dt.datetime(2026, 11, 1, 12, 0)
    db.session.add_all([AuditEvent(organisation_id=org_id, user_id=user_id,
                                   action="deploy" if i % 2 else "variable.reveal",
                                   target_type="environment", target_id=1,
                                   detail={"n": i}, ip="192.0.2.1",
                                   created_at=start + dt.timedelta(hours=i))
                        for i in range(n)])
    db.session.commit()


def test_the_page_filters_and_pages(app, client, db):
    g = build_org()
    other = build_org(email="c@example.com", organisation="Org C")
    db.session.commit()
    _audit_rows(db, g.org.id, g.user.id, 120)
    _audit_rows(db, other.org.id, other.user.id, 5)      # another organisation's: never shown
    sign_in(client, g.user)
    first = client.get("/audit/").get_data(as_text=True)
    assert "121 events" in first    # and build_org's token creation and first.count('<tr id="audit-') == 50
    assert "Older" in first and "c@example.com" not in first
    last = client.get("/audit/?page=3").get_data(as_text=True)
    assert last.count('<tr id="audit-') == 21 and "Older" not in last
    deploys = client.get("/audit/?action=deploy").get_data(as_text=True)
    assert "60 events" in deploys and "variable.reveal</code>" not in deploys
    day = client.get("/audit/?since=2026-11-02&until=2026-11-02").get_data(as_text=True)
    assert "24 events" in day
    nobody = client.get(f"/audit/?user={other.user.id}").get_data(as_text=True)
    assert "No event matches" in nobody
    assert client.get("/audit/?since=not-a-date").status_code == 200


def test_csv_export_uses_the_same_filters(app, client, db):
    g = build_org()
    db.session.commit()
    _audit_rows(db, g.org.id, g.user.id, 30)
    audit.record("auth.sign_in_failed", g.user, {"email": "=cmd|' /C calc'!A0"},
                 target_type="user", organisation_id=g.org.id, user=g.user)
    db.session.commit()
    sign_in(client, g.user)
    resp = client.get("/audit/export.csv?action=deploy&since=2026-11-01&until=2026-11-01")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert rows[0] == ["time_utc", "action", "user_email", "user_id", "target_type",
                       "target_id", "ip", "detail"]
    body = rows[1:]
    assert len(body) == 6 and {r[1] for r in body} == {"deploy"}      # hours 13, 15, ..., 23
    assert body[0][2] == "b@example.com" and body[0][6] == "192.0.2.1"
    every = list(csv.reader(io.StringIO(client.get("/audit/export.csv").get_data(as_text=True))))
    assert len(every) == 33                   # header, 30, the token build_org made, 1
    formula = next(r for r in every if r[1] == "auth.sign_in_failed")
    assert formula[7].startswith("{")         # JSON detail: not a formula
    for row in every:
        assert not any(cell[:1] in "=+@" for cell in row if cell)
    assert SECRET_SENTINELS["env_value"] not in resp.get_data(as_text=True)


def _count_queries(db, fn):
    n = [0]

    def before(*_a, **_k):
        n[0] += 1
    sa_event.listen(db.engine, "before_cursor_execute", before)
    try:
        fn()
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", before)
    return n[0]


def test_the_page_and_export_query_count_does_not_grow_with_rows(app, client, db):
    g = build_org()
    db.session.commit()
    sign_in(client, g.user)
    _audit_rows(db, g.org.id, g.user.id, 3)
    client.get("/audit/")  # warm up (the session's user, the template cache)
    small = _count_queries(db, lambda: client.get("/audit/"))
    small_csv = _count_queries(db, lambda: client.get("/audit/export.csv").get_data())
    _audit_rows(db, g.org.id, g.user.id, 45, start=dt.datetime(2026, 10, 1))
    client.get("/audit/")  # the commit expired the session's objects: load them again
    large = _count_queries(db, lambda: client.get("/audit/"))
    large_csv = _count_queries(db, lambda: client.get("/audit/export.csv").get_data())
    assert small == large
    assert small_csv == large_csv
