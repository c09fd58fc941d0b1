"""Providers create servers: Hetzner Cloud first (``hetzner``), custom servers (``custom``).

``base`` is the contract, ``keys`` the organisation's management keypair,
``hetzner_fake`` a local stand-in for the Hetzner Cloud API (tests, demos).
"""
from __future__ import annotations

import os

from app.providers.base import Choice, CloudProvider, CreatedServer, ProviderError

__all__ = ["Choice", "CloudProvider", "CreatedServer", "ProviderError", "hetzner_endpoint",
           "cloud_provider"]


def hetzner_endpoint(app=None) -> str | None:
    """The Hetzner Cloud API endpoint: app config, then KEYSTONE_HETZNER_ENDPOINT, else the real one."""
    if app is None:
        from flask import current_app
        app = current_app
    return app.config.get("HETZNER_API_ENDPOINT") or os.environ.get("KEYSTONE_HETZNER_ENDPOINT")


def cloud_provider(provider, app=None) -> CloudProvider:
    """The API client for a Provider row (only Hetzner has one)."""
    from app.models.enums import ProviderType

    if provider.type == ProviderType.HETZNER:
        from app.providers.hetzner import HetznerProvider
        poll = 1.0
        if app is None:
            from flask import current_app
            app = current_app
        poll = float(app.config.get("HETZNER_POLL_INTERVAL", poll))
        return HetznerProvider(provider.api_token or "", endpoint=hetzner_endpoint(app),
                               poll_interval=poll)
    raise ProviderError(f"Provider {provider.name!r} ({provider.type}) has no API.", "invalid_input")
