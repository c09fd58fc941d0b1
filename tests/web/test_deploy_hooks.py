"""The deploy webhook route (POST /hooks/deploy/<token>) and its panel, on the real app:
signatures, replay, wrong branch, garbage, and coalescing pushes during a deploy into ONE
follow-up deploy of the newest commit (started by the end of the running deploy)."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from app.extensions import db as _db
from app.hooks import service as hooks
from app.hooks.signatures import sign
from app.models import DeployHookDelivery, Operation
from app.models.base import utcnow
from app.models.enums import OperationKind, OperationStatus
from app.operations import lifecycle
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org


@pytest.fixture()
def graph(app):
    g = build_org()
    g.application.repository_known_hosts = "git.example.com ssh-ed25519 AAAA"
    g.application.deploy_key_installed_at = utcnow()
    g.web.server = g.server
    g.operation.status = OperationStatus.SUCCEEDED  # the factory's deploy is over
    _db.session.commit()
    return g


@pytest.fixture()
def hook(graph):
    row, secret = hooks.enable(graph.environment)
    return row, secret


def push(client, hook_row, secret, *, ref="refs/heads/main", sha="1" * 40, delivery="d-1",
         sender="github", body=None, signature=None):
    body = body if body is not None else json.dumps({"ref": ref, "after": sha}).encode()
    sig = signature if signature is not None else sign(secret, body)
    headers = {
        "github": {"X-Hub-Signature-256": f"sha256={sig}", "X-GitHub-Event": "push",
                   "X-GitHub-Delivery": delivery},
        "gitea": {"X-Gitea-Signature": sig, "X-Gitea-Event": "push",
                  "X-Gitea-Delivery": delivery},
        "generic": {"X-Keystone-Signature": f"sha256={sig}", "X-Keystone-Delivery": delivery},
    }[sender]
    return client.post(f"/hooks/deploy/{hook_row.token}", data=body, headers={
        "Content-Type": "application/json", **headers})


def deploys(env_id):
    return _db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY.value,
        Operation.target_id == env_id).order_by(Operation.id)).scalars().all()


@pytest.mark.parametrize("sender", ["github", "gitea", "generic"])
def test_a_signed_push_to_the_branch_deploys_that_commit(client, graph, hook, sender):
    row, secret = hook
    before = len(deploys(graph.environment.id))
    resp = push(client, row, secret, sender=sender)
    assert resp.status_code == 202, resp.get_json()
    data = resp.get_json()
    assert data["outcome"] == "deployed"
    op = _db.session.get(Operation, data["operation_id"])
    assert op.params["commit_sha"] == "1" * 40 and len(deploys(graph.environment.id)) == before + 1


def test_forged_and_missing_signatures_are_401_and_start_nothing(client, graph, hook):
    row, secret = hook
    before = len(deploys(graph.environment.id))
    assert push(client, row, "not-the-secret").status_code == 401
    body = json.dumps({"ref": "refs/heads/main", "after": "1" * 40}).encode()
    resp = client.post(f"/hooks/deploy/{row.token}", data=body)
    assert resp.status_code == 401 and "not signed" in resp.get_json()["reason"]
    assert len(deploys(graph.environment.id)) == before
    assert client.post("/hooks/deploy/nope", data=body).status_code == 404


def test_replayed_delivery_is_ignored(client, graph, hook):
    row, secret = hook
    assert push(client, row, secret, delivery="same").get_json()["outcome"] == "deployed"
    again = push(client, row, secret, delivery="same", sha="2" * 40)
    assert again.status_code == 202 and again.get_json()["outcome"] == "replay"
    assert _db.session.get(type(row), row.id).pending_commit_sha is None


def test_other_branches_events_and_deletions_answer_202_with_the_reason(client, graph, hook):
    row, secret = hook
    resp = push(client, row, secret, ref="refs/heads/feature", delivery="a")
    assert resp.status_code == 202 and "does not deploy" in resp.get_json()["reason"]
    resp = push(client, row, secret, sha="0" * 40, delivery="b")
    assert resp.status_code == 202 and "deleted" in resp.get_json()["reason"]
    body = b'{"zen": "hi"}'
    ping = client.post(f"/hooks/deploy/{row.token}", data=body, headers={
        "X-Hub-Signature-256": "sha256=" + sign(secret, body), "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "c"})
    assert ping.status_code == 200
    issue = client.post(f"/hooks/deploy/{row.token}", data=body, headers={
        "X-Hub-Signature-256": "sha256=" + sign(secret, body), "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "e"})
    assert issue.status_code == 202
    assert deploys(graph.environment.id)[-1].id == graph.operation.id


@pytest.mark.parametrize("body", [b"", b"\x00\xff", b"[]", b"{\"ref\": 1}", b"x" * 1000])
def test_garbage_never_500s(client, graph, hook, body):
    row, secret = hook
    resp = push(client, row, secret, body=body, delivery=f"g{len(body)}{body[:1].hex()}")
    assert resp.status_code == 400


def test_pushes_during_a_deploy_coalesce_into_one_follow_up(client, graph, hook):
    row, secret = hook
    env_id = graph.environment.id
    first = push(client, row, secret, sha="1" * 40, delivery="p1").get_json()
    assert first["outcome"] == "deployed"
    for n, sha in enumerate(("2" * 40, "3" * 40, "4" * 40)):
        resp = push(client, row, secret, sha=sha, delivery=f"p{n + 2}")
        assert resp.get_json()["outcome"] == "coalesced", resp.get_json()
    count = len(deploys(env_id))
    assert _db.session.get(type(row), row.id).pending_commit_sha == "4" * 40
    # The running deploy ends: ONE follow-up deploy of the newest commit starts.
    lifecycle.finish(first["operation_id"], OperationStatus.FAILED, "boom", dispatch=False)
    ops = deploys(env_id)
    assert len(ops) == count + 1
    assert ops[-1].params["commit_sha"] == "4" * 40
    assert _db.session.get(type(row), row.id).pending_commit_sha is None
    # Its end starts nothing more.
    lifecycle.finish(ops[-1].id, OperationStatus.SUCCEEDED, dispatch=False)
    assert len(deploys(env_id)) == count + 1
    log = _db.session.execute(sa.select(DeployHookDelivery.outcome).where(
        DeployHookDelivery.hook_id == row.id).order_by(DeployHookDelivery.id)).scalars().all()
    assert log == ["deployed", "coalesced", "coalesced", "coalesced"]


def test_panel_turns_on_shows_the_secret_once_and_rotates(client, graph):
    sign_in(client, graph.user)
    env_id = graph.environment.id
    page = client.get(f"/environments/{env_id}/deploy-hook")
    assert page.status_code == 200 and "Turn on push to deploy" in page.text
    token = csrf_token_from(page.text)
    on = client.post(f"/environments/{env_id}/deploy-hook", data={"csrf_token": token,
                                                                   "action": "enable"})
    row = hooks.hook_of(graph.environment)
    assert on.status_code == 200 and row.secret in on.text and row.token in on.text
    again = client.get(f"/environments/{env_id}/deploy-hook")
    assert row.secret not in again.text and row.token in again.text
    old = row.secret
    rotated = client.post(f"/environments/{env_id}/deploy-hook",
                          data={"csrf_token": token, "action": "rotate"})
    _db.session.refresh(row)
    assert row.secret != old and row.secret in rotated.text and old not in rotated.text
    # Stored encrypted, not in clear.
    raw = _db.session.execute(sa.text("SELECT secret FROM deploy_hooks")).scalar_one()
    assert row.secret not in raw
