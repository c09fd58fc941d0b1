"""Git over SSH with a per-application deploy key, on the control plane.

Design decision: where does the clone happen?
---------------------------------------------
On the Keystone host (the control plane), inside the operation's own
temporary working directory, never on a server. Keystone fetches the one
resolved commit with the deploy key, ``git archive``-s it into a tarball and
uploads that tarball over SFTP to ``/home/keystone/operations/<hash>/`` on the
build server, where ``docker build`` runs. So:

* the private deploy key never leaves the control plane: no builder or target
  server ever holds it, not even for a second, and a compromised server cannot
  read any repository it was not sent;
* servers need no git, no route to the git host and no known_hosts;
* the build context is exactly the commit (``git archive`` output, no ``.git``
  directory, no submodules), so the same commit always gives the same context.

The cost is one transfer of the source tarball per build, small next to the
image layers a build writes anyway.

How the key is handled
----------------------
:class:`GitSSH` writes the key to ``<workdir>/deploy_key`` with
``os.open(O_CREAT | O_EXCL | O_WRONLY, 0o600)`` (refusing a pre-existing file
or symlink), writes the pinned ``known_hosts`` next to it, and builds
``GIT_SSH_COMMAND`` with app.shell::

    ssh -F /dev/null -i KEY -o IdentitiesOnly=yes -o UserKnownHostsFile=FILE
        -o StrictHostKeyChecking=yes -o BatchMode=yes ...

It is a context manager: the key file is removed in ``__exit__`` (a
``finally``), whether git succeeded, failed or raised. Every git command runs
with ``-c protocol.allow=never -c protocol.ssh.allow=always`` (no ``ext::``,
``file://`` or other transport, even from a submodule or a redirect), with
``--`` before positional arguments, and submodules are never initialised.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app import shell
from app.remote.keys import fingerprint_of_public_key, InvalidKey
from app.repositories.local import LocalCommandError, LocalResult, run_local
from app.repositories.validation import (RepositoryURL, ValidationError, is_commit_sha,
                                         parse_repository_url, validate_branch)

KEY_FILE_NAME = "deploy_key"
KNOWN_HOSTS_FILE_NAME = "known_hosts"
SSH_CONNECT_TIMEOUT = 15

# Options every git invocation gets, before the subcommand.
GIT_SAFE_CONFIG = (
    "-c", "protocol.allow=never",
    "-c", "protocol.ssh.allow=always",
    "-c", "submodule.recurse=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "credential.helper=",
    "-c", "advice.detachedHead=false",
)


class GitAccessError(RuntimeError):
    """Git could not read the repository; the message says why, for the user."""

    def __init__(self, message: str, kind: str = "error", output: str = ""):
        super().__init__(message)
        self.kind = kind          # not_authorised | host_key | unreachable | not_found | error
        self.output = output


def git_command(*args: shell.Part) -> shell.Command:
    """``git -c protocol.allow=never -c protocol.ssh.allow=always ... ARGS``."""
    return shell.cmd("git", *GIT_SAFE_CONFIG, *args)


def git_ssh_command(key_path: str | os.PathLike, known_hosts_path: str | os.PathLike,
                    connect_timeout: int = SSH_CONNECT_TIMEOUT) -> str:
    """The ``GIT_SSH_COMMAND`` value (git runs it through ``sh``, so it is a quoted line)."""
    return shell.cmd(
        "ssh", "-F", "/dev/null",
        "-i", os.fspath(key_path),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", shell.concat("UserKnownHostsFile=", os.fspath(known_hosts_path)),
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "PermitLocalCommand=no",
        "-o", shell.concat("ConnectTimeout=", connect_timeout),
    ).render()


def write_secret_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Create ``path`` with mode 0600, refusing one that exists (O_EXCL, no symlink follow)."""
    payload = data.encode() if isinstance(data, str) else data
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)
    return Path(path)


def classify_git_error(output: str, repo: RepositoryURL | None = None) -> GitAccessError:
    """Turn git/ssh stderr into a message a person can act on."""
    text = output or ""
    low = text.lower()
    where = "the git host"
    if repo is not None:
        where = repo.host if repo.port == 22 else f"{repo.host}:{repo.port}"
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return GitAccessError(
            f"The host key of {where} does not match the one Keystone trusted at first "
            "verification, so Keystone refused to connect. If the git host was reinstalled or "
            "moved, forget the stored host key on the application page and verify again.",
            "host_key", text)
    if any(s in low for s in ("permission denied", "access denied", "not authorised",
                              "not authorized", "unauthorized", "read-only key")):
        return GitAccessError(
            f"{where} refused Keystone's deploy key: the key is not authorised for this "
            "repository. Add the public key shown above to the repository as a read-only deploy "
            "key (GitHub: Settings > Deploy keys; Gitea: Settings > Deploy Keys), then verify "
            "again.", "not_authorised", text)
    if any(s in low for s in ("repository not found", "no such repository",
                              "does not appear to be a git repository", "does not exist")):
        return GitAccessError(
            f"{where} answered that the repository does not exist, or that the deploy key may "
            "not see it: check the URL and that the public key was added to this repository as "
            "a deploy key.", "not_found", text)
    if any(s in low for s in ("could not resolve hostname", "connection refused",
                              "connection timed out", "no route to host",
                              "network is unreachable", "operation timed out")):
        return GitAccessError(f"Could not reach {where} over SSH: {_last_line(text)}",
                              "unreachable", text)
    return GitAccessError(f"git could not read the repository: {_last_line(text) or 'no output'}",
                          "error", text)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


@dataclass
class HostKey:
    line: str           # known_hosts line: "<name> <type> <base64>"
    key_type: str
    fingerprint: str


def parse_known_hosts(text: str | None) -> list[HostKey]:
    keys = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 3:
            continue
        try:
            fp = fingerprint_of_public_key(f"{fields[1]} {fields[2]}")
        except InvalidKey:
            continue
        keys.append(HostKey(line=" ".join(fields[:3]), key_type=fields[1], fingerprint=fp))
    return keys


def keyscan_command(repo: RepositoryURL, timeout: int = 10) -> shell.Command:
    return shell.cmd("ssh-keyscan", "-T", timeout, "-p", repo.port, "-t", "ed25519,ecdsa,rsa",
                     shell.end_of_options(), repo.host)


def keyscan(repo: RepositoryURL, timeout: int = 10) -> str:
    """The host's keys as known_hosts lines (trust on first use: the caller stores them)."""
    try:
        result = run_local(keyscan_command(repo, timeout), timeout=timeout + 10)
    except LocalCommandError as exc:
        raise GitAccessError(f"Could not read the host key of {repo.host}: {exc}", "unreachable")
    keys = parse_known_hosts(result.stdout)
    if not keys:
        raise GitAccessError(
            f"Could not read the SSH host key of {repo.host} port {repo.port}: "
            f"{_last_line(result.stderr) or 'no answer'}. Check the URL and that the host is "
            "reachable from Keystone.", "unreachable", result.output)
    name = repo.known_hosts_name
    # Keep only lines for exactly this host name, rewritten in canonical form.
    return "".join(f"{name} {k.key_type} {k.line.split()[2]}\n" for k in keys)


def ls_remote_command(url: str, *refs: str) -> shell.Command:
    return git_command("ls-remote", "--heads", shell.end_of_options(), url, *refs)


def parse_ls_remote(output: str) -> dict[str, str]:
    """``{branch: sha}`` from ``git ls-remote --heads`` output."""
    branches: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 2:
            continue
        sha, ref = parts
        if is_commit_sha(sha) and ref.startswith("refs/heads/"):
            branches[ref[len("refs/heads/"):]] = sha
    return branches


class GitSSH:
    """A deploy key and pinned known_hosts in a working directory, for one git session.

    ``with GitSSH(workdir, private_key, known_hosts) as git: git.run(...)``.
    The key file exists only inside the ``with`` block.
    """

    def __init__(self, workdir: str | os.PathLike, private_key: str, known_hosts: str,
                 on_line: Callable[[str], None] | None = None):
        if not private_key:
            raise GitAccessError("This application has no deploy key.", "error")
        if not known_hosts or not parse_known_hosts(known_hosts):
            raise GitAccessError("The git host's key is not trusted yet: verify repository "
                                 "access first.", "host_key")
        self.workdir = Path(workdir)
        self._private_key = private_key if private_key.endswith("\n") else private_key + "\n"
        self._known_hosts = known_hosts
        self.on_line = on_line
        self.key_path = self.workdir / KEY_FILE_NAME
        self.known_hosts_path = self.workdir / KNOWN_HOSTS_FILE_NAME
        self.home = self.workdir / "git-home"

    def __enter__(self) -> "GitSSH":
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home.mkdir(mode=0o700, exist_ok=True)
        try:
            write_secret_file(self.key_path, self._private_key)
            if self.known_hosts_path.exists():
                self.known_hosts_path.unlink()
            write_secret_file(self.known_hosts_path, self._known_hosts)
        except BaseException:
            self.remove_key()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove_key()

    def remove_key(self) -> None:
        try:
            os.unlink(self.key_path)
        except FileNotFoundError:
            pass

    @property
    def env(self) -> dict[str, str]:
        return {
            "GIT_SSH_COMMAND": git_ssh_command(self.key_path, self.known_hosts_path),
            "GIT_SSH_VARIANT": "ssh",
            "HOME": str(self.home),
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ALLOW_PROTOCOL": "ssh",
        }

    def run(self, command: shell.Command, *, cwd: str | os.PathLike | None = None,
            timeout: float = 120, stdout_path=None) -> LocalResult:
        return run_local(command, cwd=cwd or self.workdir, env=self.env, timeout=timeout,
                         on_line=self.on_line, secrets=[self._private_key],
                         stdout_path=stdout_path)


def ls_remote(workdir, private_key: str, known_hosts: str, url: str,
              refs: tuple[str, ...] = (), timeout: float = 60) -> dict[str, str]:
    """Branches (``{name: sha}``) of ``url``, read with the deploy key."""
    repo = parse_repository_url(url)
    with GitSSH(workdir, private_key, known_hosts) as git:
        result = git.run(ls_remote_command(repo.url, *refs), timeout=timeout)
    if not result.ok:
        raise classify_git_error(result.output, repo)
    return parse_ls_remote(result.stdout)


def fetch_commands(url: str, sha: str, branch: str) -> list[shell.Command]:
    """Commands that put ``sha`` into a fresh bare repository in the cwd."""
    return [
        git_command("init", "--quiet", "--bare", "."),
        git_command("fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--depth=1",
                    shell.end_of_options(), url, sha),
    ]


def fetch_branch_command(url: str, branch: str) -> shell.Command:
    return git_command("fetch", "--quiet", "--no-tags", "--no-recurse-submodules",
                       shell.end_of_options(), url,
                       f"+refs/heads/{branch}:refs/remotes/origin/{branch}")


def archive_command(sha: str) -> shell.Command:
    return git_command("archive", "--format=tar", shell.end_of_options(), sha)


def fetch_and_archive(workdir: str | os.PathLike, private_key: str, known_hosts: str, url: str,
                      sha: str, branch: str, tar_path: str | os.PathLike,
                      on_line: Callable[[str], None] | None = None,
                      timeout: float = 600) -> Path:
    """Fetch ``sha`` with the deploy key and write ``git archive`` of it to ``tar_path``.

    The key exists only while fetching; it is removed (``finally``) before
    this returns or raises. The repository itself lives in ``workdir/repo``
    and is removed with the operation's working directory.
    """
    repo = parse_repository_url(url)
    branch = validate_branch(branch)
    if not is_commit_sha(sha):
        raise ValidationError(f"{sha!r} is not a commit sha")
    repo_dir = Path(workdir) / "repo"
    repo_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with GitSSH(workdir, private_key, known_hosts, on_line=on_line) as git:
        init, fetch = fetch_commands(repo.url, sha, branch)
        git.run(init, cwd=repo_dir, timeout=30)
        result = git.run(fetch, cwd=repo_dir, timeout=timeout)
        if not result.ok:
            # A server that refuses to serve an unadvertised sha: fetch the branch instead.
            result = git.run(fetch_branch_command(repo.url, branch), cwd=repo_dir, timeout=timeout)
            if not result.ok:
                raise classify_git_error(result.output, repo)
    check = run_local(git_command("cat-file", "-e", shell.end_of_options(), f"{sha}^{{commit}}"),
                      cwd=repo_dir, env={"HOME": str(Path(workdir) / "git-home"),
                                         "GIT_CONFIG_GLOBAL": "/dev/null"})
    if not check.ok:
        raise GitAccessError(f"Commit {sha[:12]} is not on branch {branch}.", "not_found")
    result = run_local(archive_command(sha), cwd=repo_dir, stdout_path=tar_path,
                       env={"HOME": str(Path(workdir) / "git-home"),
                            "GIT_CONFIG_GLOBAL": "/dev/null"}, timeout=timeout)
    if not result.ok:
        raise GitAccessError(f"git archive failed: {_last_line(result.stderr)}")
    return Path(tar_path)


COMMIT_INFO_FORMAT = "%an%n%ae%n%s"   # one line each: a subject has no line break


def commit_info_command(sha: str) -> shell.Command:
    # --end-of-options, not "--": after "--" git show reads the sha as a path.
    return git_command("show", "-s", f"--format={COMMIT_INFO_FORMAT}", "--end-of-options", sha)


def parse_commit_info(output: str) -> dict[str, str]:
    """``{"author", "email", "message"}`` (the subject line) from :func:`commit_info_command`."""
    parts = (output or "").strip("\n").split("\n")
    if len(parts) != 3:
        return {}
    author, email, subject = (p.strip() for p in parts)
    return {"author": author[:200], "email": email[:200], "message": subject[:500]}


def commit_info(workdir: str | os.PathLike, sha: str) -> dict[str, str]:
    """Author and subject of ``sha`` in the repository :func:`fetch_and_archive` fetched
    into ``workdir/repo`` (empty when git cannot say: history then shows only the sha)."""
    if not is_commit_sha(sha):
        return {}
    result = run_local(commit_info_command(sha), cwd=Path(workdir) / "repo",
                       env={"HOME": str(Path(workdir) / "git-home"),
                            "GIT_CONFIG_GLOBAL": "/dev/null"}, timeout=30)
    return parse_commit_info(result.stdout) if result.ok else {}


class TemporaryWorkdir:
    """A 0700 directory under the system temp dir, removed on exit (success or failure)."""

    def __init__(self, prefix: str = "keystone-git-", base: str | None = None):
        self.prefix = prefix
        self.base = base
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.base))
        return self.path

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
