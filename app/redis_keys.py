"""Every Redis key Keystone writes, under one prefix per installation.

Two Keystones sharing one Redis (a staging and a production control plane, or
the test suite's live servers) must never read each other's keys: operation ids
start at 1 in every database, so an unprefixed ``op:5:log`` of one installation
is the stream another one's browser follows. The prefix is the setting
``KEYSTONE_REDIS_PREFIX`` (``Config.REDIS_PREFIX``); RQ's own keys are kept apart
by the queue name (``KEYSTONE_QUEUE``).
"""
from __future__ import annotations

import re
from typing import Mapping

DEFAULT_PREFIX = "keystone"
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def prefix(config: Mapping | None = None) -> str:
    """The installation's prefix: from ``config``, else the current app's, else the default."""
    if config is None:
        from flask import current_app, has_app_context
        config = current_app.config if has_app_context() else {}
    return config.get("REDIS_PREFIX") or DEFAULT_PREFIX


def key(*parts: str | int, config: Mapping | None = None) -> str:
    """``PREFIX:part:part``: the one way a Redis key is named."""
    return ":".join([prefix(config), *(str(p) for p in parts)])
