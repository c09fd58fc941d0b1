"""What a provisioning step sees of the server: reads, changes and file writes.

A step never calls the connection itself. It *reads* facts (``io.read``) and
*changes* state (``io.change``, ``io.write_file``); only the latter mark the
step as changed. So "the second run changed nothing" is not a claim a step
makes about itself: it is true exactly when no step issued a change.

Changes go through the operations engine's ``step.run`` (the masked command is
stored in the step's script, output streamed to the live log). Fact reads log
their command but not their output (``sshd -T`` prints a hundred lines), unless
asked to. When the login is not root (a custom server's sudo user) every
command runs through ``sudo -n sh -c '...'`` and files are staged in the
login's home and ``install``-ed with owner and mode. Every command is an
:mod:`app.shell` value.
"""
from __future__ import annotations

import posixpath
import secrets
from typing import Callable

from app.provisioning import commands as c
from app.shell import Command


class ProvisioningError(Exception):
    """A step could not reach the desired state; the message is shown to the user."""


class LocalStep:
    """The StepHandle interface over a plain connection (CLI, unit tests, benchmarks)."""

    def __init__(self, conn, log: Callable[[str], None] = print, cancel=None):
        self.conn = conn
        self._log = log
        self.cancel = cancel
        self.scripts: list[str] = []

    def connection(self):
        return self.conn

    def log(self, text: str) -> None:
        for line in str(text).splitlines() or [""]:
            self._log(line)

    def run(self, command: Command, *, timeout=None, check=True, **_):
        self.scripts.append(command.masked())
        self.log(f"$ {command.masked()}")
        return self.conn.run(command, on_line=lambda _s, line: self.log(line), timeout=timeout,
                             cancel=self.cancel)


class HostIO:
    def __init__(self, step, *, sudo: bool = False, cancel=None):
        self.step = step
        self.sudo = sudo
        self.cancel = cancel if cancel is not None else getattr(step, "cancel", None)
        self.changed = False
        self.changes: list[str] = []

    @property
    def conn(self):
        return self.step.connection()

    def log(self, line: str) -> None:
        self.step.log(line)

    def _wrap(self, command: Command) -> Command:
        return c.with_sudo(command) if self.sudo else command

    @staticmethod
    def _check(command: Command, result, check: bool):
        if check and not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ProvisioningError(
                f"`{command.masked()}` exited with {result.exit_code}"
                + (": " + " | ".join(tail) if tail else "") + ".")
        return result

    def read(self, command: Command, *, check: bool = False, timeout: float = 60,
             quiet: bool = True):
        """Run a command that changes nothing (a fact); a non-zero exit is data by default."""
        full = self._wrap(command)
        if not quiet:
            return self._check(command, self.step.run(full, timeout=timeout, check=False), check)
        self.step.log(f"$ {command.masked()}")
        result = self.conn.run(full, timeout=timeout, cancel=self.cancel)
        if check and not result.ok:
            for line in (result.stdout or result.stderr).splitlines()[-20:]:
                self.step.log(line)
        return self._check(command, result, check)

    def change(self, command: Command, *, timeout: float = 300, check: bool = True,
               why: str | None = None):
        """Run a command that changes the server; the step is then 'changed'."""
        self.changed = True
        self.changes.append(why or command.masked())
        return self._check(command, self.step.run(self._wrap(command), timeout=timeout,
                                                  check=False), check)

    def read_file(self, path: str) -> str | None:
        res = self.read(c.read_file(path))
        return res.stdout if res.ok else None

    def write_file(self, path: str, data: bytes, *, mode: str = "0644", owner: str = "root",
                   group: str | None = None, validate: Callable[[str], Command] | None = None,
                   why: str | None = None) -> None:
        """Write ``data`` to ``path``: staged (0600) in the login's home, then ``install``-ed."""
        staged = f".keystone-stage-{secrets.token_hex(4)}-{posixpath.basename(path)}"
        self.changed = True
        self.changes.append(why or f"write {path}")
        self.step.log(f"write {path} ({len(data)} bytes, mode {mode}, owner {owner})")
        self.conn.put_file(staged, data, mode=0o600)
        try:
            if validate is not None:
                self.read(validate(staged), check=True)
            self.change(c.install_file(staged, path, owner, group or owner, mode), timeout=60)
        finally:
            # The staged copy belongs to the login user: remove it without sudo.
            self.conn.run(c.remove_file(staged), timeout=30)
