"""Notification payload rendering, signing and the retry schedule (app.notifications)."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

from app.notifications import next_attempt
from app.notifications.channels import mask_url
from app.notifications.senders import (chat_body, email_message, render_text, signature,
                                       webhook_body)

FAILED = {"event": "deploy.failed", "title": "Deploy failed", "application": "shop",
          "environment": "production", "commit": "c" * 40, "operation_id": 7,
          "error": "Step 'Health check' failed", "failing_step": "Health check",
          "log_tail": ["GET /up -> 500", "giving up"]}


def test_render_names_the_failing_step_and_last_lines():
    text = render_text(FAILED)
    assert text.startswith("Deploy failed: shop/production")
    assert "failing step: Health check" in text and "  giving up" in text
    assert "commit cccccccccccc" in text


def test_chat_variants():
    assert set(chat_body("slack", FAILED)) == {"text"}
    assert chat_body("mattermost", FAILED)["username"] == "Keystone"
    discord = chat_body("discord", {**FAILED, "log_tail": ["x" * 300] * 20})
    assert set(discord) == {"content", "username"} and len(discord["content"]) <= 2000


def test_webhook_body_is_signed_hmac_sha256():
    body = webhook_body(FAILED)
    assert json.loads(body) == FAILED
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature("k", body) == f"sha256={expected}"


def test_email_message():
    msg = email_message({"from_address": "k@example.com", "to_addresses": ["a@x.io", "b@x.io"]},
                        FAILED)
    assert msg["Subject"] == "[Keystone] Deploy failed: shop/production"
    assert msg["To"] == "a@x.io, b@x.io" and "Health check" in msg.get_content()


def test_retry_schedule_backs_off_then_gives_up():
    now = dt.datetime(2026, 1, 1)
    delays = (30, 120, 600)
    assert next_attempt(1, now, delays) == now + dt.timedelta(seconds=30)
    assert next_attempt(2, now, delays) == now + dt.timedelta(seconds=120)
    assert next_attempt(3, now, delays) == now + dt.timedelta(seconds=600)
    assert next_attempt(4, now, delays) is None


def test_urls_are_masked_to_their_host():
    assert mask_url("https://hooks.slack.com/services/T0/B0/XYZSECRET") == \
        "https://hooks.slack.com/***"
