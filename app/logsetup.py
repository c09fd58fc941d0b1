"""Logging, configured once for every Keystone process (web, worker, `keystone dev`).

The level comes from ``KEYSTONE_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR, CRITICAL;
default INFO), checked at start-up like every other setting. Lines go to stderr,
where a process supervisor (systemd/journald, `keystone dev`'s terminal) picks them up.
"""
from __future__ import annotations

import logging
import os
import sys

from app.config import SettingError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
_HANDLER_NAME = "keystone"


def log_level() -> int:
    raw = os.environ.get("KEYSTONE_LOG_LEVEL", "").strip().upper() or "INFO"
    if raw not in LEVELS:
        raise SettingError(f"KEYSTONE_LOG_LEVEL must be one of {', '.join(LEVELS)}, "
                           f"not {raw!r}")
    return getattr(logging, raw)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (never a stale, closed stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging() -> None:
    """One stderr handler on the root logger and the configured level; calling it again
    only re-reads the level. Called by the web entry point (wsgi.py) and the worker."""
    level = log_level()
    root = logging.getLogger()
    root.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = _Stderr()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
