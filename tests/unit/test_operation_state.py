"""The lifecycle as data: which transitions exist, and how a parent ends."""
import pytest

from app.models.enums import OperationStatus as S
from app.models.enums import StepStatus as T
from app.operations.state import (InvalidTransition, can_transition, check_step_transition,
                                  check_transition, parent_outcome, step_status_for)


@pytest.mark.parametrize("a,b", [
    (S.PENDING, S.RUNNING), (S.PENDING, S.QUEUED), (S.QUEUED, S.PENDING), (S.QUEUED, S.RUNNING),
    (S.PENDING, S.CANCELLED), (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED), (S.RUNNING, S.INTERRUPTED)])
def test_allowed(a, b):
    assert can_transition(a, b)
    check_transition(a, b)


@pytest.mark.parametrize("terminal", [S.SUCCEEDED, S.FAILED, S.CANCELLED, S.INTERRUPTED])
def test_terminal_states_never_change(terminal):
    for target in S:
        assert not can_transition(terminal, target)
    with pytest.raises(InvalidTransition):
        check_transition(terminal, S.RUNNING)


def test_running_cannot_go_back():
    assert not can_transition(S.RUNNING, S.PENDING)
    assert not can_transition(S.RUNNING, S.QUEUED)
    assert not can_transition(S.PENDING, S.SUCCEEDED)


def test_step_transitions():
    check_step_transition(T.RUNNING, T.SKIPPED)
    with pytest.raises(InvalidTransition):
        check_step_transition(T.SUCCEEDED, T.FAILED)
    assert step_status_for(S.CANCELLED) is T.CANCELLED
    assert step_status_for(S.INTERRUPTED) is T.INTERRUPTED
    assert step_status_for(S.FAILED) is T.FAILED


def test_parent_outcome():
    assert parent_outcome(S.SUCCEEDED, [S.SUCCEEDED, S.SUCCEEDED]) is S.SUCCEEDED
    assert parent_outcome(S.SUCCEEDED, [S.SUCCEEDED, S.FAILED]) is S.FAILED
    assert parent_outcome(S.SUCCEEDED, [S.INTERRUPTED]) is S.FAILED
    assert parent_outcome(S.CANCELLED, [S.FAILED]) is S.CANCELLED
    with pytest.raises(InvalidTransition):
        parent_outcome(S.SUCCEEDED, [S.RUNNING])
