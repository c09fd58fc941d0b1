"""The outcome of one remote command (shared by the real and the fake connection)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CommandFailed

NO_EXIT_STATUS = -1
"""exit_code when the server sent no exit status (the process died of a signal)."""


@dataclass
class Result:
    """Exit code and captured output of a finished command.

    With a pty (the default) ``stdout`` holds both streams merged in order, as the
    terminal showed them, and ``stderr`` holds the stderr lines alone (tagged by the
    wrapper, app.shell.report_pgid_then). Captured text is capped (``truncated`` says so);
    the full output went to ``on_line`` as it was printed.
    """

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, what: str = "command") -> "Result":
        """Return self if the command succeeded, else raise :class:`CommandFailed`."""
        if self.exit_code != 0:
            status = "was killed by a signal" if self.exit_code == NO_EXIT_STATUS else f"exited with {self.exit_code}"
            tail = (self.stderr or self.stdout).strip().splitlines()[-5:]
            detail = (": " + " | ".join(tail)) if tail else ""
            raise CommandFailed(f"{what} {status}{detail}", self)
        return self
