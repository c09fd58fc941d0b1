"""A recording stand-in for :class:`app.remote.Connection` (no paramiko, no network).

For unit tests of planners and steps: it records every command (real and
masked form) and upload, and answers from a script of canned results, so a
test can assert the exact commands a planner emits (Kamal's command tests)
and feed it the facts it reads from the server.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Pattern, Union

from app import shell
from .files import make_mkdir_p
from .errors import CommandCancelled, HostKeyMismatch, TransferFailed
from .result import Result


Matcher = Union[str, Pattern[str], Callable[[str], bool]]


@dataclass
class Call:
    """One recorded :meth:`RecordingConnection.run` call."""

    command: str  # the real rendered command (may contain secrets)
    masked: str  # what would be stored and shown
    secrets: list[str] = field(default_factory=list)
    pty: bool = True
    stdin: bytes | None = None
    timeout: float | None = None


@dataclass
class _Rule:
    matcher: Matcher
    result: Result | None
    lines: list[tuple[str, str]]
    raises: BaseException | None
    times: int | None


class RecordingConnection:
    """Same interface as :class:`Connection`; records instead of connecting.

    ``script(match, exit_code=0, output="")`` registers an answer for
    commands whose masked text contains ``match`` (a str), matches it (a
    regex) or satisfies it (a callable); the first matching rule wins,
    ``times`` limits how often. Unmatched commands succeed with no output.
    """

    def __init__(
        self,
        host: str = "fake.example",
        port: int = 22,
        username: str = "keystone",
        private_key_pem: str = "",
        expected_fingerprint: str | None = None,
        *,
        fingerprint: str = "SHA256:fakefakefakefakefakefakefakefakefakefakefak",
        **_ignored,
    ):
        self.host = host
        self.port = port
        self.username = username
        self.expected_fingerprint = expected_fingerprint
        self.fingerprint: str | None = None
        self._presented = fingerprint
        self.calls: list[Call] = []
        self.files: dict[str, tuple[bytes, int]] = {}
        self.handshakes = 0
        self.closed = False
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()

    # -- scripting ------------------------------------------------------

    def script(
        self,
        match: Matcher,
        *,
        exit_code: int = 0,
        output: str = "",
        stderr: str = "",
        raises: BaseException | None = None,
        times: int | None = None,
    ) -> "RecordingConnection":
        lines = [("stdout", line) for line in output.splitlines()] + [("stderr", line) for line in stderr.splitlines()]
        result = Result(exit_code=exit_code, stdout=output, stderr=stderr)
        self._rules.append(_Rule(match, result, lines, raises, times))
        return self

    def _match(self, masked: str) -> _Rule | None:
        for rule in self._rules:
            if rule.times is not None and rule.times <= 0:
                continue
            m = rule.matcher
            hit = (
                (isinstance(m, str) and m in masked)
                or (isinstance(m, re.Pattern) and m.search(masked) is not None)
                or (callable(m) and not isinstance(m, (str, re.Pattern)) and m(masked))
            )
            if hit:
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    # -- inspection -----------------------------------------------------

    @property
    def commands(self) -> list[str]:
        """Masked commands, in order (what the step scripts would store)."""
        return [c.masked for c in self.calls]

    @property
    def rendered(self) -> list[str]:
        """Real commands, in order."""
        return [c.command for c in self.calls]

    # -- Connection interface ------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def first_contact(self) -> bool:
        return self.expected_fingerprint is None

    @property
    def is_connected(self) -> bool:
        return self.fingerprint is not None and not self.closed

    def connect(self) -> str:
        if not self.is_connected:

            if self.expected_fingerprint is not None and self.expected_fingerprint != self._presented:
                raise HostKeyMismatch(self.host, self.port, self.expected_fingerprint, self._presented)
            self.handshakes += 1
            self.closed = False
            self.fingerprint = self._presented
        return self.fingerprint

    def run(self, command, *, on_line=None, timeout=None, cancel=None, pty=True, stdin=None) -> Result:
        if isinstance(command, shell.Command):
            call = Call(command.render(), command.masked(), command.secrets())
        else:
            call = Call(command, command)
        call.pty, call.stdin, call.timeout = (pty and stdin is None), stdin, timeout
        with self._lock:
            self.calls.append(call)
        if cancel is not None and cancel.is_set():
            raise CommandCancelled(f"The command on {self.address} was cancelled and terminated.")
        rule = self._match(call.masked)
        if rule is None:
            return Result(exit_code=0)
        if rule.raises is not None:
            raise rule.raises
        if on_line is not None:
            for stream, line in rule.lines:
                on_line(stream, line)  # a pty keeps stderr apart too (tagged lines)
        return Result(rule.result.exit_code, rule.result.stdout, rule.result.stderr)

    def put_file(self, remote_path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[remote_path] = (bytes(data), mode)

    def get_file(self, remote_path: str) -> bytes:
        try:
            return self.files[remote_path][0]
        except KeyError:
            raise TransferFailed(f"Failed downloading {remote_path} on {self.address}: No such file.") from None

    def mkdir_p(self, path: str, timeout: float = 30) -> None:
        self.run(make_mkdir_p(path), pty=False, timeout=timeout).check(f"mkdir -p {path}")

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "RecordingConnection":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
