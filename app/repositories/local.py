"""Run a command on the control plane: argv from an app.shell Command, no shell.

Why: every git command Keystone runs (here or on a server) is built with
app.shell so that it is quoted and masked by construction. On a server the
rendered line goes to sshd's shell; here there is no reason to start a shell
at all, so the rendered line is split back into argv with ``shlex.split``
(exact, because every part was ``shlex.quote``-d) and handed to
``subprocess`` with ``shell=False``. Only simple commands are accepted: an
``&&`` or ``|`` would need a shell.

Output is passed line by line to ``on_line`` after :func:`app.shell.redact`,
and environment variables (``GIT_SSH_COMMAND``) are passed through ``env``,
not as a shell prefix.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from app import shell

# A git or ssh run on the control plane never needs a terminal or an agent:
# no prompt may hang an operation, no agent key may be offered instead of ours.
_SAFE_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "USER")


@dataclass
class LocalResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


class LocalCommandError(RuntimeError):
    def __init__(self, message: str, result: LocalResult | None = None):
        super().__init__(message)
        self.result = result


def argv_of(command: shell.Command) -> list[str]:
    """The argument vector of a simple command (exactly its quoted parts)."""
    if not command.is_simple:
        raise ValueError("only simple commands run locally (no &&, |, ;)")
    return shlex.split(command.render())


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _SAFE_ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "GIT_TERMINAL_PROMPT": "0",       # never prompt for credentials
        "GIT_CONFIG_NOSYSTEM": "1",       # no system-wide url.insteadOf / hooks surprises
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "LC_ALL": "C",                   # stable messages to recognise
    })
    env.pop("SSH_AUTH_SOCK", None)
    if extra:
        env.update(extra)
    return env


def run_local(command: shell.Command, *, cwd: str | os.PathLike | None = None,
              env: Mapping[str, str] | None = None, timeout: float = 120,
              on_line: Callable[[str], None] | None = None,
              secrets: Iterable[str | shell.Secret] = (), check: bool = False,
              stdout_path: str | os.PathLike | None = None) -> LocalResult:
    """Run ``command`` without a shell; return its redacted output.

    ``stdout_path``: write stdout (binary, e.g. ``git archive``) to that file
    instead of capturing it (created O_EXCL, mode 0600).
    """
    argv = argv_of(command)
    hidden = list(command.secrets()) + [s.value if isinstance(s, shell.Secret) else s for s in secrets]
    out_lines: list[str] = []
    err_lines: list[str] = []

    def pump(stream, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = shell.redact(raw.decode("utf-8", "replace").rstrip("\r\n"), hidden)
            sink.append(line)
            if on_line is not None:
                on_line(line)
        stream.close()

    out_fd = None
    if stdout_path is not None:
        out_fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=clean_env(env), stdin=subprocess.DEVNULL,
                                stdout=out_fd if out_fd is not None else subprocess.PIPE,
                                stderr=subprocess.PIPE, shell=False, start_new_session=True)
    except FileNotFoundError as exc:
        if out_fd is not None:
            os.close(out_fd)
        raise LocalCommandError(f"{argv[0]} is not installed on the Keystone host") from exc
    if out_fd is not None:
        os.close(out_fd)
    threads = [threading.Thread(target=pump, args=(proc.stderr, err_lines), daemon=True)]
    if proc.stdout is not None:
        threads.append(threading.Thread(target=pump, args=(proc.stdout, out_lines), daemon=True))
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()
        for t in threads:
            t.join(timeout=5)
        raise LocalCommandError(f"{command.masked()} did not finish within {timeout:g}s and was stopped")
    for t in threads:
        t.join(timeout=5)
    result = LocalResult(proc.returncode, "\n".join(out_lines), "\n".join(err_lines))
    if check and not result.ok:
        tail = " | ".join(result.output.splitlines()[-5:])
        raise LocalCommandError(f"{command.masked()} exited with {result.exit_code}: {tail}", result)
    return result
