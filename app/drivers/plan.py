"""What a driver plans, as data: steps of actions the operation handlers run (pure).

A driver never opens a connection. Its hooks (:class:`app.drivers.base.Driver`)
return a list of :class:`StepPlan`; :func:`app.services_ops.steps.run_plan`
turns each into one recorded step of the operation and runs its actions in
order on the service's server:

* :class:`Mkdir`, :class:`PutFile`: files (written atomically, with a mode);
* :class:`Run`: a shell command value (``app.shell``), with what its output
  must say (``expect``), when the rest of the step is an explicit no-op
  (``unchanged_if``), and what undoes a failure (``on_failure``);
* :class:`Log`, :class:`Unchanged`: lines of the step's log.

The checks are pure functions of a command's standard output, so a plan stays
testable without a server (tests/unit/test_driver_plugin.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Union

if TYPE_CHECKING:  # pragma: no cover
    from app.shell import Command


@dataclass(frozen=True)
class Mkdir:
    path: str


@dataclass(frozen=True)
class PutFile:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Log:
    text: str


@dataclass(frozen=True)
class Unchanged:
    """The step ends as an explicit no-op (skipped) with this message; later actions still run."""

    message: str


@dataclass(frozen=True)
class Run:
    """Run ``command`` on the step's server.

    * ``expect(stdout)`` returns an error message when the output is wrong (the step fails);
    * ``unchanged_if(stdout)`` true: the step ends here as an explicit no-op with
      ``unchanged_message``, and the remaining actions of the step are not run;
    * ``on_failure``: actions run when the command exits non-zero (``failure_log`` first),
      then the step fails with ``failure_message``.
    """

    command: "Command"
    timeout: float | None = None
    check: bool = True
    pty: bool = True
    expect: Callable[[str], str | None] | None = None
    unchanged_if: Callable[[str], bool] | None = None
    unchanged_message: str | None = None
    on_failure: tuple["Action", ...] = ()
    failure_log: str | None = None
    failure_message: str | None = None


Action = Union[Mkdir, PutFile, Log, Unchanged, Run]


@dataclass(frozen=True)
class StepPlan:
    """One recorded step: a title and its actions, on the service's server unless ``local``."""

    title: str
    actions: tuple[Action, ...] = field(default_factory=tuple)
    local: bool = False

    def commands(self) -> list["Command"]:
        """Every command the step may run, in order (failure paths included), for tests."""
        out: list = []
        for action in self.actions:
            if isinstance(action, Run):
                out.append(action.command)
                out += [a.command for a in action.on_failure if isinstance(a, Run)]
        return out

    def files(self) -> dict[str, str]:
        return {a.path: a.content for a in self.actions if isinstance(a, PutFile)}


__all__ = ["Action", "Log", "Mkdir", "PutFile", "Run", "StepPlan", "Unchanged"]
