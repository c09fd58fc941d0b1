"""Issue 18 sections 1 and 4 on the real sandbox: push to deploy and notifications.

One module-scoped bed (one sandbox server, the sample app in its own repository on the
sandbox git host, Postgres, Valkey and the gateway). Keystone's web app is served on the
sandbox network's gateway address, and the git host's real ``post-receive`` hook
(app/sandbox/images/githost/keystone-post-receive) POSTs a Gitea-signed push event to it on
every ``git push``. Operations run inline (the testbed's pattern); notification deliveries
run through their RQ job's function, against a real SMTP server (aiosmtpd) and a real HTTP
receiver on 127.0.0.1, plus a dead channel (a closed port).
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from werkzeug.serving import make_server

from app.extensions import db
from app.hooks import service as hooks
from app.models import NotificationDelivery, Operation
from app.models.enums import OperationKind
from app.sandbox.sample import push_sample_commit
from app.sandbox.testbed import wait_until
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration

REPO = "pushdeploy.git"


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    push_sample_commit(sandbox.git, "initial", repo=REPO)
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "pushdeploy", server_count=1, repo=REPO) as tb:
        from flask import current_app
        app = current_app._get_current_object()
        app.config["NOTIFY_RETRY_DELAYS"] = [0, 0]  # two quick retries: the schedule is unit-tested
        # Keystone on the sandbox network's gateway (the host): the git container reaches it.
        gateway = str(ipaddress.ip_network(sandbox.subnet)[1])
        server = make_server(gateway, 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        hook, secret = hooks.enable(tb.env)
        tb.hook_secret = secret
        with app.test_request_context(base_url=f"http://{gateway}:{server.server_port}"):
            tb.hook_url = hooks.webhook_url(hook)
        sandbox.git.install_webhook(REPO, tb.hook_url, secret)
        try:
            yield tb
        finally:
            sandbox.git.install_webhook(REPO, "", "")
            server.shutdown()
            thread.join(timeout=30)


def deploys(bed) -> list[Operation]:
    db.session.expire_all()
    return db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY.value,
        Operation.target_id == bed.env_id, Operation.parent_id.is_(None))
        .order_by(Operation.id)).scalars().all()


def push(sandbox, kind="update") -> str:
    return push_sample_commit(sandbox.git, kind, repo=REPO)


def test_a_push_fires_the_hook_and_deploys_the_new_commit(bed, sandbox):
    before = len(deploys(bed))
    sha = push(sandbox)  # the post-receive hook has POSTed by the time the push returns
    ops = deploys(bed)
    assert len(ops) == before + 1
    assert ops[-1].params["commit_sha"] == sha
    op = bed.run(ops[-1].id)
    assert op.result["commit"] == sha and bed.commit_served() == sha
    delivery = hooks.hook_of(bed.env).deliveries[0]
    assert (delivery.source, delivery.outcome, delivery.commit_sha) == ("gitea", "deployed", sha)


def test_two_quick_pushes_during_a_deploy_give_one_follow_up(bed, sandbox):
    first = push(sandbox)
    running = deploys(bed)[-1]
    assert running.params["commit_sha"] == first and not running.is_terminal
    count = len(deploys(bed))
    second, third = push(sandbox), push(sandbox)
    assert len(deploys(bed)) == count  # nothing started or queued by them
    outcomes = [d.outcome for d in hooks.hook_of(bed.env).deliveries[:2]]
    assert outcomes == ["coalesced", "coalesced"]
    bed.run(running.id)  # its end starts the follow-up
    ops = deploys(bed)
    assert len(ops) == count + 1, [(o.id, o.params) for o in ops]
    follow = ops[-1]
    assert follow.params["commit_sha"] == third
    bed.run(follow.id)
    assert bed.commit_served() == third and second != third
    assert len(deploys(bed)) == count + 1


def test_a_forged_signature_is_refused_401_and_starts_nothing(bed, sandbox):
    count = len(deploys(bed))
    sandbox.git.install_webhook(REPO, bed.hook_url, "not-the-secret")
    try:
        push(sandbox)
    finally:
        sandbox.git.install_webhook(REPO, bed.hook_url, bed.hook_secret)
    assert len(deploys(bed)) == count
    import requests
    body = json.dumps({"ref": "refs/heads/main", "after": "f" * 40})
    resp = requests.post(bed.hook_url, data=body, timeout=10, headers={
        "X-Gitea-Signature": "0" * 64, "X-Gitea-Event": "push", "X-Gitea-Delivery": "forged"})
    assert resp.status_code == 401
    assert len(deploys(bed)) == count


def test_a_failed_deploy_notifies_smtp_and_a_signed_webhook_and_retries_a_dead_one(bed, sandbox):
    from app.jobs import deliver_notification
    from app.notifications import dispatch_due
    from app.notifications.channels import create_channel
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        org = bed.org_id
        mailbox, _ = create_channel(org, "ops mail", "email", ["deploy.failed"],
                                  host="127.0.0.1", port=smtp.port, security="none",
                                  from_address="keystone@example.com",
                                  to_addresses="ops@example.com")
        hook_ch, signing = create_channel(org, "receiver", "webhook", ["deploy.failed"],
                                          url=f"http://127.0.0.1:{receiver.server_port}/in")
        dead, _ = create_channel(org, "dead", "slack", ["deploy.failed"],
                                 url=f"http://127.0.0.1:{free_port()}/dead")
        good = bed.commit_served()
        broken = push(sandbox, "broken")
        op = bed.run(deploys(bed)[-1].id, expect="failed")
        assert op.params["commit_sha"] == broken
        # The deploy is unaffected: it failed on the broken commit itself, the old commit
        # still serves, and nothing in it mentions the channels.
        assert bed.commit_served() == good
        assert "notif" not in (op.error or "").lower()
        rows = db.session.execute(sa.select(NotificationDelivery).order_by(
            NotificationDelivery.id)).scalars().all()
        assert {r.channel_id for r in rows} == {mailbox.id, hook_ch.id, dead.id}
        for r in rows:
            deliver_notification(r.id)
        db.session.expire_all()
        by_channel = {r.channel_id: r for r in rows}
        assert by_channel[mailbox.id].status == "sent" and by_channel[mailbox.id].response_code == 250
        assert by_channel[hook_ch.id].status == "sent" and by_channel[hook_ch.id].response_code == 204
        # The email names the failing step and carries the last log lines, no secret.
        assert len(inbox.messages) == 1
        mail = email.message_from_string(inbox.messages[0], policy=email.policy.default)
        assert mail["Subject"].startswith("[Keystone] Deploy failed")
        mail = mail.get_content()
        assert "Deploy failed" in mail and "failing step:" in mail and broken[:12] in mail
        # The webhook body is signed with the channel's secret.
        headers, body = Receiver.received[-1]
        expected = "sha256=" + hmac.new(signing.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Keystone-Signature"], expected)
        event = json.loads(body)
        assert event["event"] == "deploy.failed" and event["failing_step"] and event["log_tail"]
        from app.notifications import _looks_secret
        secrets = [v.value for v in bed.env.variables
                   if (v.is_secret or _looks_secret(v.key)) and len(v.value) >= 6]
        assert secrets, "the bed has secret variables (database password)"
        for value in secrets:
            assert value not in mail and value not in body.decode()
        # The dead channel: retried with back-off, every attempt logged, then given up.
        row = db.session.get(NotificationDelivery, by_channel[dead.id].id)
        assert row.status == "retrying" and row.attempts == 1 and row.next_attempt_at
        assert "could not reach" in row.error
        while row.status == "retrying":
            assert dispatch_due() == [row.id]
            deliver_notification(row.id)
            db.session.expire_all()
            row = db.session.get(NotificationDelivery, row.id)
        assert row.status == "failed" and row.attempts == 3
    finally:
        smtp.stop()
        receiver.shutdown()
