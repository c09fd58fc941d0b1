"""The lifecycle of operations and steps, as data.

    pending -> queued -> pending          (waiting behind a lock, then dispatched)
    pending | queued -> running | cancelled | interrupted
    running -> succeeded | failed | cancelled | interrupted

Terminal states never change again. Every status write in the engine goes
through :func:`check_transition` (or a compare-and-set UPDATE that encodes the
same rule), so an operation cannot be "un-finished" by a late worker.
"""
from __future__ import annotations

from app.models.enums import OperationStatus as S
from app.models.enums import StepStatus as T

OPERATION_TRANSITIONS: dict[S, frozenset[S]] = {
    S.PENDING: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED, S.INTERRUPTED, S.FAILED}),
    S.QUEUED: frozenset({S.PENDING, S.RUNNING, S.CANCELLED, S.INTERRUPTED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.INTERRUPTED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.INTERRUPTED: frozenset(),
}

STEP_TRANSITIONS: dict[T, frozenset[T]] = {
    T.PENDING: frozenset({T.RUNNING, T.SKIPPED, T.CANCELLED, T.INTERRUPTED}),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.SKIPPED, T.CANCELLED, T.INTERRUPTED}),
    T.SUCCEEDED: frozenset(),
    T.FAILED: frozenset(),
    T.SKIPPED: frozenset(),
    T.CANCELLED: frozenset(),
    T.INTERRUPTED: frozenset(),
}

ACTIVE = frozenset({S.PENDING, S.QUEUED, S.RUNNING})
NOT_STARTED = frozenset({S.PENDING, S.QUEUED})
STEP_TERMINAL = frozenset({T.SUCCEEDED, T.FAILED, T.SKIPPED, T.CANCELLED, T.INTERRUPTED})


class InvalidTransition(ValueError):
    pass


def can_transition(current, new) -> bool:
    return S(new) in OPERATION_TRANSITIONS[S(current)]


def check_transition(current, new) -> None:
    if not can_transition(current, new):
        raise InvalidTransition(f"operation cannot go from {S(current).value} to {S(new).value}")


def check_step_transition(current, new) -> None:
    if T(new) not in STEP_TRANSITIONS[T(current)]:
        raise InvalidTransition(f"step cannot go from {T(current).value} to {T(new).value}")


def step_status_for(op_status) -> T:
    """What a still-running step becomes when its operation ends abruptly."""
    return {S.CANCELLED: T.CANCELLED, S.INTERRUPTED: T.INTERRUPTED}.get(S(op_status), T.FAILED)


def parent_outcome(own: S, children: list[S]) -> S:
    """A parent's final status given its own outcome and its children's.

    A failed (or interrupted) child fails a parent that would otherwise have
    succeeded; a cancelled parent stays cancelled.
    """
    own = S(own)
    if own is not S.SUCCEEDED:
        return own
    for child in children:
        child = S(child)
        if child in (S.FAILED, S.INTERRUPTED):
            return S.FAILED
        if child is S.CANCELLED:
            return S.FAILED
        if child in ACTIVE:
            raise InvalidTransition("a parent cannot end before its children")
    return own
