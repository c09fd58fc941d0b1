"""Deploy-webhook signatures (app.hooks.signatures): valid, forged, missing, garbage."""
from __future__ import annotations

import json

import pytest

from app.hooks.signatures import Refused, parse_push, sign, verify

SECRET = "s3cret-of-the-hook"
BODY = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()


def github(body=BODY, secret=SECRET, delivery="d-1", event="push"):
    return {"X-Hub-Signature-256": "sha256=" + sign(secret, body), "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery}


def gitea(body=BODY, secret=SECRET, delivery="g-1"):
    # Gitea also sends GitHub's headers; its own signature is the one checked.
    return {"X-Gitea-Signature": sign(secret, body), "X-Gitea-Event": "push",
            "X-Gitea-Delivery": delivery, "X-GitHub-Event": "push",
            "X-Hub-Signature-256": "sha256=" + "0" * 64}


def test_github_gitea_and_generic_signatures_verify():
    assert verify(github(), BODY, SECRET).source == "github"
    d = verify(gitea(), BODY, SECRET)
    assert (d.source, d.event, d.delivery_id) == ("gitea", "push", "g-1")
    generic = {"X-Keystone-Signature": "sha256=" + sign(SECRET, BODY),
               "X-Keystone-Delivery": "ci-42"}
    assert verify(generic, BODY, SECRET).event == "push"


@pytest.mark.parametrize("headers", [
    github(secret="wrong"),                       # forged: another secret
    github(body=BODY + b" "),                     # the body was changed
    {"X-Hub-Signature-256": "sha1=abc", "X-GitHub-Delivery": "x"},
    {"X-Hub-Signature-256": "sha256=zz", "X-GitHub-Delivery": "x"},
    {"X-Gitea-Signature": "", "X-Gitea-Delivery": "x"},
    {},                                           # missing
])
def test_forged_or_missing_signature_is_401(headers):
    with pytest.raises(Refused) as exc:
        verify(headers, BODY, SECRET)
    assert exc.value.status == 401


def test_a_signed_request_without_a_delivery_id_is_400():
    headers = github()
    del headers["X-GitHub-Delivery"]
    with pytest.raises(Refused) as exc:
        verify(headers, BODY, SECRET)
    assert exc.value.status == 400


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"[1,2]", b"{}", b'{"ref": "refs/heads/x"}',
                                  b'{"ref": "refs/heads/x", "after": "not-a-sha"}',
                                  b'{"ref": 3, "after": "' + b"a" * 40 + b'"}'])
def test_garbage_bodies_are_400(body):
    with pytest.raises(Refused) as exc:
        parse_push(body)
    assert exc.value.status == 400


def test_push_branch():
    push = parse_push(BODY)
    assert push.branch == "main" and push.after == "a" * 40
    assert parse_push(b'{"ref": "refs/tags/v1", "after": "' + b"b" * 40 + b'"}').branch is None
