"""Verifying deploy-webhook requests (PURE: bytes and headers in, a verdict out).

Three senders are understood, told apart by their signature header:

* Gitea / Forgejo: ``X-Gitea-Signature: <hex>``, ``X-Gitea-Event``, ``X-Gitea-Delivery``
  (checked first: Gitea also sends GitHub-style headers);
* GitHub: ``X-Hub-Signature-256: sha256=<hex>``, ``X-GitHub-Event``, ``X-GitHub-Delivery``;
* generic (scripts, CI, other forges): ``X-Keystone-Signature: sha256=<hex>``,
  ``X-Keystone-Event`` (default ``push``) and ``X-Keystone-Delivery`` (required, unique).

Every signature is HMAC-SHA256 of the raw request body with the hook's secret, compared
with :func:`hmac.compare_digest`. The body of every sender is a push event with at least
``ref`` (``refs/heads/<branch>``) and ``after`` (the new commit).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
SHA_PATTERN = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
DELIVERY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,100}")
ZERO_SHA = re.compile(r"0+")

# (source, signature header, prefix, event header, delivery header)
SENDERS = (
    ("gitea", "X-Gitea-Signature", "", "X-Gitea-Event", "X-Gitea-Delivery"),
    ("github", "X-Hub-Signature-256", "sha256=", "X-GitHub-Event", "X-GitHub-Delivery"),
    ("generic", "X-Keystone-Signature", "sha256=", "X-Keystone-Event", "X-Keystone-Delivery"),
)


class Refused(Exception):
    """The request is not from the hook's owner (HTTP 401) or not readable (HTTP 400)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    source: str
    event: str
    delivery_id: str


@dataclass(frozen=True)
class Push:
    ref: str
    after: str

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` under ``secret`` (what senders put in the header)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(headers, body: bytes, secret: str) -> Delivery:
    """The verified delivery, or :class:`Refused` (401 without a valid signature)."""
    for source, sig_header, prefix, event_header, delivery_header in SENDERS:
        given = headers.get(sig_header)
        if given is None:
            continue
        given = given.strip()
        if prefix:
            if not given.startswith(prefix):
                raise Refused(401, f"{sig_header} must be {prefix}<hex HMAC-SHA256 of the body>.")
            given = given[len(prefix):]
        if not _HEX64.fullmatch(given):
            raise Refused(401, f"{sig_header} is not a hex HMAC-SHA256.")
        if not hmac.compare_digest(given.lower(), sign(secret, body)):
            raise Refused(401, "The signature does not match: check the webhook's secret.")
        delivery = (headers.get(delivery_header) or "").strip()
        if not DELIVERY_PATTERN.fullmatch(delivery):
            raise Refused(400, f"{delivery_header} is missing or malformed.")
        event = (headers.get(event_header) or ("push" if source == "generic" else "")).strip()
        return Delivery(source=source, event=event[:40] or "?", delivery_id=delivery)
    raise Refused(401, "The request is not signed (X-Hub-Signature-256, X-Gitea-Signature or "
                       "X-Keystone-Signature).")


def parse_push(body: bytes) -> Push:
    """``ref`` and ``after`` of a push event body, or :class:`Refused` (400)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "The body is not JSON.") from None
    if not isinstance(data, dict):
        raise Refused(400, "The body is not a JSON object.")
    ref, after = data.get("ref"), data.get("after")
    if not isinstance(ref, str) or not ref or len(ref) > 255:
        raise Refused(400, "The push event has no ref.")
    if not isinstance(after, str) or not (SHA_PATTERN.fullmatch(after.lower())
                                          or ZERO_SHA.fullmatch(after)):
        raise Refused(400, "The push event has no commit (after).")
    return Push(ref=ref, after=after.lower())
