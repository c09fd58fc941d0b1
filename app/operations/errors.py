"""Errors of the operations engine. Every message is shown to users as is, so it
is written for them and never carries a secret (callers pass redacted text)."""
from __future__ import annotations


class OperationError(Exception):
    """Base class of the engine's errors."""


class OperationLocked(OperationError):
    """A lock the operation needs is held by another operation.

    ``holder_id`` names the operation holding it, ``key`` the lock key.
    Raised by ``start_operation(..., on_conflict="refuse")``.
    """

    def __init__(self, message: str, key: str | None = None, holder_id: int | None = None):
        super().__init__(message)
        self.key = key
        self.holder_id = holder_id


class StepFailed(OperationError):
    """A step failed: a command exited non-zero, timed out, or the connection dropped.

    ``exit_code`` is set when the command ran to its end.
    """

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


class OperationCancelled(OperationError):
    """The operation was cancelled (by a user) while it ran."""


class OperationTimedOut(OperationError):
    """The operation ran past its kind's time limit."""


class ChildFailed(OperationError):
    """A child operation did not succeed; the parent fails with it."""

    def __init__(self, message: str, child_id: int, status: str):
        super().__init__(message)
        self.child_id = child_id
        self.status = status
