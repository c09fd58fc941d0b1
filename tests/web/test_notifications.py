"""Notification channels on the real app: forms (each kind, bad input never 500s), secrets
encrypted at rest and masked on the page, "send test", delivery to a real SMTP server
(aiosmtpd) and a real HTTP receiver, the delivery log, and deploy events from the
operations' end listener (with the failing step, never a secret)."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app.extensions import db as _db
from app.models import NotificationChannel, NotificationDelivery, OperationStep
from app.models.enums import OperationStatus, StepStatus
from app.notifications import deliver, notify
from app.notifications.channels import create_channel
from app.operations import lifecycle
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org

SLACK_URL = "https://hooks.slack.com/services/T000/B000/VERYSECRETTOKEN"


@pytest.fixture()
def graph(app):
    return build_org()


@pytest.fixture()
def signed_in(client, graph):
    sign_in(client, graph.user)
    page = client.get("/settings/notifications/")
    assert page.status_code == 200
    return csrf_token_from(page.text)


def named(name: str) -> NotificationChannel:
    return _db.session.execute(sa.select(NotificationChannel).where(
        NotificationChannel.name == name)).scalar_one()


def post(client, token, **data):
    return client.post("/settings/notifications/", data={"csrf_token": token, **data})


def test_slack_channel_secret_is_encrypted_and_masked(client, graph, signed_in):
    resp = post(client, signed_in, name="#deploys", kind="slack", url=SLACK_URL,
                events=["deploy.failed", "rollback.failed"])
    assert resp.status_code == 201, resp.text
    page = client.get("/settings/notifications/").text
    assert "VERYSECRETTOKEN" not in page and "https://hooks.slack.com/***" in page
    raw = _db.session.execute(sa.text("SELECT secrets FROM notification_channels")).scalars()
    assert not any("VERYSECRETTOKEN" in r for r in raw)
    row = named("#deploys")
    assert row.events == ["deploy.failed", "rollback.failed"] and row.secrets["url"] == SLACK_URL


def test_webhook_channel_shows_its_signing_secret_once(client, graph, signed_in):
    resp = post(client, signed_in, name="ci", kind="webhook", url="https://ci.example.com/k")
    row = named("ci")
    assert row.secrets["signing_secret"] in resp.text
    assert row.secrets["signing_secret"] not in client.get("/settings/notifications/").text


def test_email_channel_password_never_shown(client, graph, signed_in):
    resp = post(client, signed_in, name="mail", kind="email", host="smtp.example.com",
                port="587", security="starttls", username="k", password="hunter2-smtp",
                from_address="k@example.com", to_addresses="a@example.com, b@example.com")
    assert resp.status_code == 201, resp.text
    assert "hunter2-smtp" not in client.get("/settings/notifications/").text
    row = named("mail")
    assert row.config["to_addresses"] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize("data", [
    {"name": "x", "kind": "slack", "url": "ftp://nope"},
    {"name": "x", "kind": "slack", "url": "https://a.b/$(reboot)\n"},
    {"name": "x", "kind": "email", "host": "bad host;", "from_address": "k@example.com",
     "to_addresses": "a@example.com"},
    {"name": "x", "kind": "email", "host": "smtp.example.com", "from_address": "k@example.com",
     "to_addresses": "not an address"},
    {"name": "x", "kind": "email", "host": "smtp.example.com", "port": "99999"},
    {"name": "x", "kind": "pigeon", "url": "https://a.b/"},
    {"name": "", "kind": "slack", "url": "https://a.b/"},
])
def test_bad_channel_input_is_a_form_error(client, graph, signed_in, data):
    resp = post(client, signed_in, **data)
    assert resp.status_code == 422
    assert _db.session.execute(sa.select(sa.func.count(NotificationChannel.id))).scalar() == 1


class _Receiver(BaseHTTPRequestHandler):
    got: list = []
    code = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.got.append((dict(self.headers), body))
        self.send_response(_Receiver.code)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture()
def receiver():
    _Receiver.got, _Receiver.code = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_send_test_button_logs_the_delivery(client, graph, signed_in, receiver):
    channel, secret = create_channel(graph.org.id, "ci", "webhook", [],
                                     url=f"http://127.0.0.1:{receiver.server_port}/in")
    resp = client.post(f"/settings/notifications/{channel.id}/test",
                       data={"csrf_token": signed_in})
    assert resp.status_code == 200
    row = _db.session.execute(sa.select(NotificationDelivery)).scalar_one()
    assert deliver(row.id) == "sent"
    headers, body = _Receiver.got[0]
    assert headers["X-Keystone-Event"] == "test" and headers["X-Keystone-Delivery"] == str(row.id)
    assert headers["X-Keystone-Signature"] == "sha256=" + hmac.new(
        secret.encode(), body, hashlib.sha256).hexdigest()
    page = client.get("/settings/notifications/").text
    assert "sent" in page and "200" in page


def test_a_failing_channel_is_retried_then_given_up(app, graph, receiver):
    app.config["NOTIFY_RETRY_DELAYS"] = [0, 0]
    _Receiver.code = 500
    channel, _ = create_channel(graph.org.id, "ci", "discord", ["backup.failed"],
                                url=f"http://127.0.0.1:{receiver.server_port}/in")
    [delivery_id] = notify(graph.org.id, "backup.failed", {"message": "nightly"})
    assert deliver(delivery_id) == "retrying"
    row = _db.session.get(NotificationDelivery, delivery_id)
    assert row.response_code == 500 and row.next_attempt_at is not None
    assert deliver(delivery_id) == "retrying"
    assert deliver(delivery_id) == "failed"
    assert row.attempts == 3 and "answered 500" in row.error
    assert json.loads(_Receiver.got[0][1])["content"].startswith("Backup failed")


def test_email_reaches_a_real_smtp_server(app, graph):
    class Inbox:
        messages: list = []

        async def handle_DATA(self, server, session, envelope):
            Inbox.messages.append(envelope.content.decode())
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        create_channel(graph.org.id, "mail", "email", ["server.unreachable"], host="127.0.0.1",
                       port=port, security="none", from_address="k@example.com",
                       to_addresses="ops@example.com")
        [delivery_id] = notify(graph.org.id, "server.unreachable", {"server": "web-1"})
        assert deliver(delivery_id) == "sent"
    finally:
        smtp.stop()
    assert "Subject: [Keystone] Server unreachable" in Inbox.messages[0]
    assert "server: web-1" in Inbox.messages[0]


def test_a_failed_deploy_event_names_the_step_and_hides_secrets(app, graph, receiver):
    secret_value = graph.variable.value
    channel, _ = create_channel(graph.org.id, "ci", "webhook", ["deploy.failed"],
                                url=f"http://127.0.0.1:{receiver.server_port}/in")
    op = graph.operation
    graph.variable.is_secret = True
    graph.step.status = StepStatus.SUCCEEDED
    _db.session.add(OperationStep(operation=op, name="Health check", order=2,
                                  status=StepStatus.FAILED,
                                  logs=f"starting\nusing {secret_value}\nGET /up -> 500"))
    _db.session.commit()
    # A channel that cannot even be queued never fails the end of the deploy.
    assert lifecycle.finish(op.id, OperationStatus.FAILED, "Health check failed", dispatch=False)
    row = _db.session.execute(sa.select(NotificationDelivery)).scalar_one()
    assert row.event == "deploy.failed" and row.channel_id == channel.id
    assert deliver(row.id) == "sent"
    event = json.loads(_Receiver.got[0][1])
    assert event["failing_step"] == "Health check" and event["log_tail"][-1] == "GET /up -> 500"
    assert secret_value not in _Receiver.got[0][1].decode()


def test_the_failing_step_is_the_first_to_fail_anywhere_in_the_tree(app, graph):
    import datetime as dt

    from app.models import Operation
    from app.models.enums import OperationKind
    from app.notifications import deploy_payload
    parent = graph.operation
    graph.step.status = StepStatus.SUCCEEDED
    child = Operation(organisation_id=graph.org.id, kind=OperationKind.SERVICE_DEPLOY,
                      target_type="service", target_id=graph.web.id, parent=parent)
    grandchild = Operation(organisation_id=graph.org.id, kind=OperationKind.REPLICA_DEPLOY,
                           target_type="service", target_id=graph.web.id, parent=child)
    t0 = dt.datetime(2026, 1, 1, 12)
    _db.session.add_all([
        OperationStep(operation=parent, name="Deploy web", order=5, status=StepStatus.FAILED,
                      finished_at=t0 + dt.timedelta(seconds=9), logs="child failed"),
        OperationStep(operation=grandchild, name="Health check", order=1,
                      status=StepStatus.FAILED, finished_at=t0, logs="/up answered 500"),
        OperationStep(operation=grandchild, name="Remove the new replica", order=2,
                      status=StepStatus.FAILED, finished_at=t0, is_cleanup=True, logs="x")])
    parent.status = OperationStatus.FAILED
    _db.session.commit()
    payload = deploy_payload(parent, graph.environment)
    assert payload["failing_step"] == "Health check"
    assert payload["log_tail"] == ["/up answered 500"]


def test_a_failed_backup_is_announced_as_backup_failed(app, graph, receiver):
    """Issue 17.3's "never silent", through the channels too: the operations' end listener
    turns a failed database_backup into backup.failed (the database and the reason)."""
    from app.backups.handlers import start_backup
    channel, _ = create_channel(graph.org.id, "ops", "webhook", ["backup.failed"],
                                url=f"http://127.0.0.1:{receiver.server_port}/in")
    op = start_backup(graph.slice, graph.backup_target, enqueue=False)
    _db.session.add(OperationStep(operation=op, name="pg_dump", order=1,
                                  status=StepStatus.FAILED, logs="pg_dump: error"))
    _db.session.commit()
    assert lifecycle.finish(op.id, OperationStatus.FAILED, "pg_dump exited with 1",
                            dispatch=False)
    row = _db.session.execute(sa.select(NotificationDelivery)).scalar_one()
    assert row.event == "backup.failed" and row.channel_id == channel.id
    assert deliver(row.id) == "sent"
    event = json.loads(_Receiver.got[-1][1])
    assert event["database"] == graph.slice.name and event["failing_step"] == "pg_dump"
    assert event["error"] == "pg_dump exited with 1" and event["trigger"] == "manual"
    assert graph.backup_target.credentials["secret_access_key"] not in _Receiver.got[-1][1].decode()


def test_a_full_disk_is_announced_once_per_server(app, graph):
    """disk.nearly_full from the metrics pass: once per server per DISK_ALERT_EVERY."""
    from app import metrics
    channel, _ = create_channel(graph.org.id, "ops", "slack", ["disk.nearly_full"],
                                url=SLACK_URL)
    sample = metrics.Sample(cpu_percent=5.0, mem_used_mb=100.0, mem_total_mb=1000.0,
                            disk_used_gb=37.0, disk_total_gb=40.0, load1=0.1, load5=0.1,
                            load15=0.1, containers={})
    assert metrics.alert_disk(graph.server, sample) == 1
    assert metrics.alert_disk(graph.server, sample) == 0   # not again within the window
    rows = _db.session.execute(sa.select(NotificationDelivery)).scalars().all()
    assert [r.event for r in rows] == ["disk.nearly_full"] and rows[0].channel_id == channel.id
    assert rows[0].payload["server"] == graph.server.name and rows[0].payload["disk_percent"] == 92.5
