"""Making notification channels from their form, and what a page may show of them."""
from __future__ import annotations

import re
import secrets as _secrets
from urllib.parse import urlsplit

from app.extensions import db
from app.models import NotificationChannel
from app.notifications import EVENTS, KINDS, notify

URL_PATTERN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]*)?")
HOST_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
SECURITY = ("starttls", "tls", "none")


class ChannelError(ValueError):
    pass


def mask_url(url: str) -> str:
    """Scheme and host only: the path of an incoming-webhook URL is its token."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    return f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/***"


def describe(channel: NotificationChannel) -> str:
    """The channel's destination, masked (never a password, token or signing secret)."""
    if channel.kind == "email":
        cfg = channel.config or {}
        return (f"{', '.join(cfg.get('to_addresses', []))} via {cfg.get('host')}:"
                f"{cfg.get('port')} ({cfg.get('security')})")
    return mask_url((channel.secrets or {}).get("url", ""))


def parse_addresses(text: str) -> list[str]:
    out = [a.strip() for a in re.split(r"[,\s]+", text or "") if a.strip()]
    bad = [a for a in out if not EMAIL_PATTERN.fullmatch(a)]
    if bad or not out:
        raise ChannelError("Enter one or more email addresses, separated by commas.")
    return out


def create_channel(org_id: int, name: str, kind: str, events: list[str], *, url: str = "",
                   host: str = "", port: int = 587, security: str = "starttls",
                   username: str = "", password: str = "", from_address: str = "",
                   to_addresses: str = "") -> tuple[NotificationChannel, str]:
    """A new channel; returns it and, for a generic webhook, its signing secret (shown once)."""
    if kind not in KINDS:
        raise ChannelError("Choose a channel type.")
    events = [e for e in events if e in EVENTS]
    config: dict = {}
    secrets: dict = {}
    shown = ""
    if kind == "email":
        if not HOST_PATTERN.fullmatch(host or ""):
            raise ChannelError("Enter the SMTP server's host name.")
        if not 1 <= int(port or 0) <= 65535:
            raise ChannelError("The SMTP port is 1 to 65535.")
        if security not in SECURITY:
            raise ChannelError("Choose STARTTLS, TLS or none.")
        if not EMAIL_PATTERN.fullmatch(from_address or ""):
            raise ChannelError("Enter the sender's email address.")
        config = {"host": host, "port": int(port), "security": security,
                  "username": username or "", "from_address": from_address,
                  "to_addresses": parse_addresses(to_addresses)}
        if password:
            secrets["password"] = password
    else:
        if not URL_PATTERN.fullmatch(url or "") or len(url) > 500:
            raise ChannelError("Enter the webhook's http(s) URL.")
        secrets["url"] = url
        if kind == "webhook":
            shown = _secrets.token_urlsafe(32)
            secrets["signing_secret"] = shown
    channel = NotificationChannel(organisation_id=org_id, name=name.strip()[:100], kind=kind,
                                  config=config, secrets=secrets, events=events, enabled=True)
    db.session.add(channel)
    db.session.commit()
    return channel, shown


def send_test(channel: NotificationChannel) -> list[int]:
    """A ``test`` delivery to this channel only (whatever events it chose)."""
    from app.models import NotificationDelivery
    from app.models.base import utcnow
    from app.notifications import enqueue
    now = utcnow()
    row = NotificationDelivery(channel_id=channel.id, event="test", status="pending",
                               payload={"event": "test", "title": "Test notification",
                                        "message": f"Keystone can reach the channel "
                                                   f"{channel.name!r}.",
                                        "organisation_id": channel.organisation_id,
                                        "at": now.isoformat() + "Z"},
                               created_at=now)
    db.session.add(row)
    db.session.commit()
    if enqueue(row.id):
        row.status = "queued"
        db.session.commit()
    return [row.id]


__all__ = ["create_channel", "send_test", "describe", "mask_url", "ChannelError", "notify"]
