"""Handlers per operation kind, and each kind's time limit.

A handler is a function ``handler(ctx: OperationContext) -> None`` registered
with ``@operation_handler(OperationKind.X)``. Modules that define handlers are
imported by :func:`load_handlers` in the worker (and by tests), so the web
process never needs paramiko.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

from app.models.enums import OperationKind
from app.operations.errors import StepFailed

Handler = Callable[["OperationContext"], None]  # noqa: F821

_HANDLERS: dict[OperationKind, Handler] = {}

# Wall-clock limit of a whole operation per kind, in seconds. The engine cancels
# the remote command at this limit (the op ends failed, "timed out"); RQ's job
# timeout is this plus JOB_TIMEOUT_GRACE as a last resort.
TIMEOUTS: dict[OperationKind, int] = {
    OperationKind.SERVER_PROVISION: 45 * 60,
    OperationKind.SERVICE_DEPLOY: 30 * 60,
    OperationKind.REPLICA_DEPLOY: 20 * 60,
    OperationKind.SLICE_PROVISION: 10 * 60,
    OperationKind.SLICE_CONFIGURE: 10 * 60,
    OperationKind.ENVIRONMENT_DEPLOY: 60 * 60,
    OperationKind.GATEWAY_CUTOVER: 10 * 60,
    OperationKind.CONFIG_CHANGE: 15 * 60,
    OperationKind.CREDENTIAL_ROTATION: 15 * 60,
    OperationKind.REPOSITORY_VERIFY: 3 * 60,   # keyscan + ls-remote (45 s) + the sandbox key
    OperationKind.HOST_KEY_SCAN: 2 * 60,
    OperationKind.IMAGE_CHECK: 3 * 60,
    OperationKind.SANDBOX_START: 30 * 60,      # the first bring-up builds images
    OperationKind.PROVIDER_SYNC: 3 * 60,
    OperationKind.SERVER_DELETE: 5 * 60,
    OperationKind.DATABASE_BACKUP: 2 * 60 * 60,
    OperationKind.DATABASE_RESTORE: 2 * 60 * 60,
    OperationKind.COMMAND_RUN: 30 * 60,        # the form may ask for less (app.oneoff)
    OperationKind.HOUSEKEEPING: 20 * 60,
    OperationKind.SERVICE_SCALE: 30 * 60,
}
JOB_TIMEOUT_GRACE = 120

# Modules imported by the worker so their @operation_handler decorators run.
HANDLER_MODULES: list[str] = [
    "app.provisioning.handlers",
    "app.services_ops.deploy",
    "app.services_ops.slices",
    "app.deploys.handlers",
    "app.deploys.scheduler",
    "app.repositories.handlers",
    "app.providers.handlers",
    "app.registries.handlers",
    "app.sandbox.handlers",
    "app.backups.handlers",
    "app.oneoff.handlers",
    "app.housekeeping.handlers",
    "app.deploys.scale",
]

# Kinds that only ever run inline, as children of another operation, with the
# handler their parent passes to ``ctx.run_child``: they need no registered handler.
CHILD_KINDS = frozenset({OperationKind.REPLICA_DEPLOY, OperationKind.GATEWAY_CUTOVER})
# Kinds the schema allows but nothing starts yet (no handler, no caller): none today.
RESERVED_KINDS: frozenset[OperationKind] = frozenset()


def operation_handler(kind: OperationKind) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of ``kind`` (the last registration wins)."""
    kind = OperationKind(kind)

    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = fn
        return fn

    return register


# ``config_change`` operations carry ``params["change"]`` naming what they change
# (e.g. "scheduler"); each area registers its own with @config_change_handler.
_CONFIG_CHANGES: dict[str, Handler] = {}


def config_change_handler(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``config_change`` operations whose params say ``change=name``."""
    def register(fn: Handler) -> Handler:
        _CONFIG_CHANGES[name] = fn
        return fn

    return register


def _config_change(ctx) -> None:
    name = str((ctx.params or {}).get("change") or "")
    if name not in _CONFIG_CHANGES:
        load_handlers()
    fn = _CONFIG_CHANGES.get(name)
    if fn is None:
        raise StepFailed(f"Unknown configuration change {name!r}.")
    fn(ctx)


_HANDLERS[OperationKind.CONFIG_CHANGE] = _config_change


def handler_for(kind: OperationKind) -> Handler | None:
    kind = OperationKind(kind)
    if kind not in _HANDLERS:
        load_handlers()
    return _HANDLERS.get(kind)


def load_handlers() -> None:
    """Import the handler modules (plus any in KEYSTONE_HANDLER_MODULES, comma-separated)."""
    extra = [m.strip() for m in os.environ.get("KEYSTONE_HANDLER_MODULES", "").split(",") if m.strip()]
    for name in [*HANDLER_MODULES, *extra]:  # a missing or broken module is an error
        importlib.import_module(name)


def timeout_for(kind: OperationKind) -> int:
    return TIMEOUTS.get(OperationKind(kind), 30 * 60)
