"""What one step of an operation runs with: :class:`StepHandle`.

A handler gets a StepHandle from ``ctx.step(...)``; it runs ``app.shell`` commands on the
step's server through the runtime's pooled connection, uploads files, and records what
it ran (masked) and what it said (redacted) on the step's row.
"""
from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from app import shell
from app.extensions import db
from app.models import OperationStep, Server
from app.models.base import utcnow
from app.models.enums import StepStatus
from app.operations import terminal
from app.operations.errors import StepFailed
from app.remote import NO_EXIT_STATUS

if TYPE_CHECKING:
    from app.operations.context import OperationContext

log = logging.getLogger(__name__)

STDERR_KEEP_LINES = 200       # a step keeps the last lines its commands wrote to stderr...
STDERR_KEEP_CHARS = 16000     # ...at most this much of them (error_logs)


# --------------------------------------------------------------------------- step

class StepHandle:
    """Runs commands and uploads for one step on its server."""

    def __init__(self, ctx: OperationContext, row: OperationStep, server: Server | None,
                 login: str | None):
        self.ctx = ctx
        self.id = row.id
        self.name = row.name
        self.row = row
        self.server = server
        self.login = login
        self.skipped = False
        self.exit_code: int | None = None
        self._scripts: list[str] = []
        self._secrets: dict[str, str] = dict(row.secrets or {})
        # What the step's commands wrote to stderr (redacted), kept apart from the merged log:
        # error_logs holds it, and a failed step shows it first (SPEC 3).
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_KEEP_LINES)

    def connection(self):
        if self.server is None:
            raise StepFailed(f"Step '{self.name}' has no server to run on.")
        return self.ctx.runtime.connection(self.server, self.login)

    def log(self, text: str) -> None:
        """Record a line of our own (redacted like any output)."""
        for line in str(text).splitlines() or [""]:
            self.ctx.runtime.recorder.line(self.ctx, self.id, line)

    def unchanged(self, message: str | None = None) -> None:
        """Declare an explicit no-op: nothing needed changing (the step ends skipped)."""
        self.skipped = True
        if message:
            self.log(f"unchanged: {message}")

    def secret(self, value: str, name: str | None = None) -> shell.Secret:
        return self.ctx.secret(value, name)

    def _remember(self, command: shell.Command) -> str:
        masked = command.masked()
        for i, value in enumerate(command.secrets()):
            self.ctx.runtime.add_secret(value)
            if value not in self._secrets.values():
                self._secrets[f"s{len(self._secrets) + 1}"] = value
        self._scripts.append(masked)
        db.session.execute(sa.update(OperationStep).where(OperationStep.id == self.id)
                           .values(script="\n".join(self._scripts),
                                   secrets=self._secrets or None)
                           .execution_options(synchronize_session=False))
        db.session.commit()  # also ends any write transaction before network I/O
        return masked

    def run(self, command: shell.Command, *, timeout: float | None = None, check: bool = True,
            pty: bool = True, stdin: bytes | None = None, quiet: bool = False):
        """Run ``command`` on the step's server, streaming its lines; return its Result.

        ``quiet=True`` is for polls repeated many times a second (reading a
        gateway's log until it confirms something): neither the command nor
        its output goes to the step log; the caller logs what it concluded.

        Raises :class:`StepFailed` on a non-zero exit (unless ``check=False``),
        a timeout or a lost connection; :class:`OperationCancelled` on cancel.
        """
        if not isinstance(command, shell.Command):
            raise TypeError("step.run takes an app.shell.Command (build it with app.shell.cmd)")
        self.ctx.check_cancelled()
        masked = self._remember(command)
        conn = self.connection()
        if not quiet:
            self.log(f"$ {masked}")
        remaining = self.ctx.remaining_seconds()
        if timeout is None:
            timeout = remaining
        elif remaining is not None:
            timeout = min(timeout, remaining)
        recorder, ctx, step_id = self.ctx.runtime.recorder, self.ctx, self.id
        stderr_lines = self._stderr

        def on_line(stream: str, line: str) -> None:
            if not check:
                # a probe: "No such container" is one of its expected answers
                expected = terminal.mark_expected(terminal.strip_ansi(line))
                if expected is not None:
                    recorder.line(ctx, step_id, expected)
                    return
            text = recorder.line(ctx, step_id, line, stderr=(stream == "stderr"))
            if stream == "stderr" and text:
                stderr_lines.append(text)

        result = conn.run(command, on_line=None if quiet else on_line, timeout=timeout,
                          cancel=self.ctx.active_cancel_event, pty=pty, stdin=stdin)
        self.exit_code = result.exit_code
        if check and result.exit_code != 0:
            how = ("was killed by a signal" if result.exit_code == NO_EXIT_STATUS
                   else f"exited with {result.exit_code}")
            # What it said last is the reason a reader needs ("No space left on device").
            text = result.stderr if (result.stderr or "").strip() else (result.stdout or "")
            said = [terminal.strip_ansi(ln).strip() for ln in text.splitlines()]
            said = [ln for ln in said if ln][-2:]
            detail = (": " + " | ".join(said))[:400] if said else ""
            raise StepFailed(self.ctx.redact(f"`{masked}` {how}{detail}"), result.exit_code)
        return result

    def put_file(self, remote_path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Upload ``data`` over SFTP and rename it into place atomically."""
        self.ctx.check_cancelled()
        if isinstance(data, str):
            data = data.encode()
        db.session.commit()
        from app.remote import TransferFailed
        try:
            self.connection().put_file(remote_path, data, mode=mode)
        except TransferFailed as exc:
            # SFTP reports a full disk as a bare "Failure": say what the disk says.
            raise StepFailed(self.ctx.redact(f"{exc}{self._space_hint(remote_path, len(data))}")) \
                from None
        self.log(f"uploaded {remote_path} ({len(data)} bytes, mode {mode:04o})")

    def _space_hint(self, remote_path: str, size: int) -> str:
        import posixpath
        directory = posixpath.dirname(remote_path) or "."
        try:
            res = self.connection().run(shell.cmd("df", "-Pk", "--", directory), timeout=30,
                                        pty=False)
            free_kb = int(res.stdout.strip().splitlines()[-1].split()[3])
        except Exception:  # noqa: BLE001 - only a hint; the upload's own error stands
            return ""
        if free_kb * 1024 < size + 64 * 1024:
            return (f" No space left on the server: {free_kb} KB free on the filesystem of "
                    f"{directory} for {size} bytes.")
        return ""

    def mkdir(self, path: str) -> None:
        self.connection().mkdir_p(path)

    def _finish(self, status: StepStatus, message: str | None) -> None:
        if message:
            self.log(f"!! {message}")
        try:
            self.ctx.runtime.recorder.flush()
        except Exception:
            log.warning("could not flush step %s", self.id, exc_info=True)
        values = {"status": StepStatus(status).value, "finished_at": utcnow(),
                  "exit_code": self.exit_code, "updated_at": utcnow()}
        if status is StepStatus.SKIPPED:
            values["changed"] = False
        elif status is StepStatus.SUCCEEDED:
            values["changed"] = True
        stderr = "\n".join(self._stderr)[-STDERR_KEEP_CHARS:]
        if stderr or message:  # stderr first, the reason it failed last
            values["error_logs"] = "\n".join(x for x in (stderr, message) if x)
        if not db.session.is_active:
            db.session.rollback()
        db.session.execute(sa.update(OperationStep).where(OperationStep.id == self.id)
                           .values(**values).execution_options(synchronize_session=False))
        db.session.commit()
        self.ctx._publish_step(self.id, status)
