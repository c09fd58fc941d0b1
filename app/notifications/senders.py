"""Sending one delivery to one channel: SMTP, Slack/Mattermost/Discord, signed webhook.

Payload rendering is PURE (:func:`render_text`, :func:`chat_body`, :func:`webhook_body`,
:func:`email_message`); :func:`send` does the network call with a short timeout and
returns the response code, or raises :class:`SendError` (with the code if there was one).

The generic webhook's body is the JSON event; headers ``X-Keystone-Event``,
``X-Keystone-Delivery`` (the delivery id; a retry sends the same one) and
``X-Keystone-Signature: sha256=<hex HMAC-SHA256 of the body with the channel's secret>``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage

import requests

TIMEOUT = 10


class SendError(Exception):
    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def render_text(payload: dict) -> str:
    """The human sentence(s) of an event (chat message, email body)."""
    title = payload.get("title") or payload.get("event", "event")
    where = "/".join(x for x in (payload.get("application"), payload.get("environment")) if x)
    head = f"{title}" + (f": {where}" if where else "")
    lines = [head]
    if payload.get("commit"):
        lines.append(f"commit {str(payload['commit'])[:12]}")
    if payload.get("operation_id"):
        lines.append(f"operation #{payload['operation_id']}")
    for key in ("server", "service", "message"):
        if payload.get(key):
            lines.append(f"{key}: {payload[key]}")
    if payload.get("error"):
        lines.append(f"error: {payload['error']}")
    if payload.get("failing_step"):
        lines.append(f"failing step: {payload['failing_step']}")
    if payload.get("log_tail"):
        lines.append("last log lines:")
        lines.extend(f"  {ln}" for ln in payload["log_tail"])
    return "\n".join(lines)


def chat_body(kind: str, payload: dict) -> dict:
    text = render_text(payload)
    if kind == "discord":
        return {"content": text[:1990], "username": "Keystone"}
    if kind == "mattermost":
        return {"text": text, "username": "Keystone"}
    return {"text": text}  # Slack


def webhook_body(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def email_message(config: dict, payload: dict) -> EmailMessage:
    msg = EmailMessage()
    where = "/".join(x for x in (payload.get("application"), payload.get("environment")) if x)
    msg["Subject"] = f"[Keystone] {payload.get('title', payload.get('event'))}" + \
        (f": {where}" if where else "")
    msg["From"] = config["from_address"]
    msg["To"] = ", ".join(config["to_addresses"])
    msg.set_content(render_text(payload) + "\n")
    return msg


def _post(url: str, body: bytes, headers: dict) -> int:
    try:
        resp = requests.post(url, data=body, headers={"Content-Type": "application/json",
                                                      "User-Agent": "Keystone", **headers},
                             timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        raise SendError(f"could not reach the endpoint ({type(exc).__name__})") from None
    if not 200 <= resp.status_code < 300:
        raise SendError(f"the endpoint answered {resp.status_code}", resp.status_code)
    return resp.status_code


def send(channel, delivery) -> int:
    secrets = channel.secrets or {}
    config = channel.config or {}
    payload = dict(delivery.payload or {})
    if channel.kind in ("slack", "mattermost", "discord"):
        body = json.dumps(chat_body(channel.kind, payload)).encode("utf-8")
        return _post(secrets["url"], body, {})
    if channel.kind == "webhook":
        body = webhook_body(payload)
        return _post(secrets["url"], body, {
            "X-Keystone-Event": delivery.event,
            "X-Keystone-Delivery": str(delivery.id),
            "X-Keystone-Signature": signature(secrets["signing_secret"], body)})
    if channel.kind == "email":
        return _send_email(config, secrets, payload)
    raise SendError(f"unknown channel kind {channel.kind!r}")


def _send_email(config: dict, secrets: dict, payload: dict) -> int:
    return send_mail(config, secrets, email_message(config, payload))


def send_mail(config: dict, secrets: dict, msg: EmailMessage) -> int:
    """Send ``msg`` through an email channel's SMTP settings (also invitations, app.members)."""
    host, port = config["host"], int(config["port"])
    security = config.get("security", "starttls")
    try:
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=TIMEOUT,
                                    context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=TIMEOUT)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if config.get("username"):
                smtp.login(config["username"], secrets.get("password", ""))
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        raise SendError(f"the SMTP server answered {exc.smtp_code}", exc.smtp_code) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendError(f"could not send the email ({type(exc).__name__})") from None
    return 250
