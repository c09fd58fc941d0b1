"""Thin, shell-free wrappers over the `docker` CLI and other host tools.

Why the CLI and not a Docker SDK: the sandbox has to work on a fresh Debian 12
machine where the only Docker bits are Debian's `docker.io` package and the
CLI already on the machine; the CLI is the one interface guaranteed to be
there, and argument lists passed to subprocess cannot be injected into.
Nothing here ever uses ``shell=True``.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Sequence


class SandboxError(RuntimeError):
    """A sandbox step failed; the message carries the command and its stderr."""


def run(
    args: Sequence[str],
    *,
    input: bytes | str | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    env: dict | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    """Run one command given as an argument list; raise SandboxError on failure.

    Output is captured as text so that errors can quote the tool's own message.
    """
    args = [str(a) for a in args]
    if isinstance(input, str):
        input = input.encode()
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise SandboxError(
            f"{args[0]} is not installed; run scripts/ensure-docker.sh as root "
            "(it installs docker.io docker-compose debootstrap docker-registry "
            "apache2-utils openssh-client busybox-static git socat)"
        ) from exc
    out = proc.stdout.decode(errors="replace") if proc.stdout is not None else ""
    err = proc.stderr.decode(errors="replace") if proc.stderr is not None else ""
    proc.stdout, proc.stderr = out, err
    if check and proc.returncode != 0:
        raise SandboxError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n{err.strip() or out.strip()}"
        )
    return proc


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `docker ARGS...`."""
    return run(["docker", *args], **kwargs)


def docker_out(*args: str, **kwargs) -> str:
    """Run `docker ARGS...` and return stripped stdout."""
    return docker(*args, **kwargs).stdout.strip()


def docker_available() -> bool:
    """True when a Docker daemon answers `docker info`."""
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30).returncode == 0


def pipe(producer: Sequence[str], consumer: Sequence[str], timeout: float | None = None) -> None:
    """Run `producer | consumer` without a shell (e.g. docker save | docker exec -i ... docker load)."""
    p1 = subprocess.Popen([str(a) for a in producer], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p2 = subprocess.run(
            [str(a) for a in consumer], stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout,
        )
    finally:
        if p1.stdout:
            p1.stdout.close()
    p1_err = p1.stderr.read().decode(errors="replace") if p1.stderr else ""
    p1.wait()
    if p1.returncode != 0 or p2.returncode != 0:
        raise SandboxError(
            f"pipe failed: {' '.join(map(str, producer))} ({p1.returncode}) | "
            f"{' '.join(map(str, consumer))} ({p2.returncode})\n{p1_err}{p2.stderr.decode(errors='replace')}"
        )
