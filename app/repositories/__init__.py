"""Repositories: SSH URL validation, per-application deploy keys, verify access, resolve commits.

Public API::

    parse_repository_url(url) -> RepositoryURL      # raises ValidationError
    validate_repository_url(url) -> str
    validate_branch(name) -> str                     # raises ValidationError
    assign_deploy_key(application)                   # new ed25519 key (on create / rotate)
    verify_access(application) -> VerifyResult       # keyscan on first use + git ls-remote
    resolve_commit(environment, on_line=None) -> sha # git ls-remote of the environment's branch
    forget_host_key(application)                     # explicit re-trust of the git host
    deploy_key_instructions(application) -> list     # GitHub / Gitea / generic steps

Git runs on the control plane only (see app.repositories.git for why).
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app.remote.keys import generate_ed25519
from app.repositories.git import (GitAccessError, HostKey, TemporaryWorkdir, keyscan, ls_remote,
                                  parse_known_hosts)
from app.repositories.validation import (RepositoryURL, ValidationError, guess_repository_type,
                                         is_commit_sha, parse_repository_url, validate_branch,
                                         validate_repository_url)

__all__ = [
    "RepositoryURL", "ValidationError", "GitAccessError", "HostKey", "VerifyResult",
    "parse_repository_url", "validate_repository_url", "validate_branch", "guess_repository_type",
    "assign_deploy_key", "verify_access", "resolve_commit", "forget_host_key",
    "deploy_key_instructions", "workdir_base", "is_commit_sha",
]


def workdir_base() -> str:
    """Where control-plane working directories go: ``<instance>/work`` (0700), else the temp dir."""
    try:
        from flask import current_app
        base = Path(current_app.config.get("KEYSTONE_WORK_DIR")
                    or Path(current_app.instance_path) / "work")
    except RuntimeError:  # no app context
        return tempfile.gettempdir()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return str(base)


def assign_deploy_key(application) -> None:
    """Give the application a new ed25519 deploy key (the old one stops working)."""
    comment = f"keystone-{application.name or 'app'}"
    private, public, fingerprint = generate_ed25519(comment)
    application.deploy_key_private = private
    application.deploy_key_public = public
    application.deploy_key_fingerprint = fingerprint
    application.deploy_key_installed_at = None
    application.repository_branches = []


def forget_host_key(application) -> None:
    application.repository_known_hosts = None


@dataclass
class VerifyResult:
    ok: bool
    message: str
    branches: list[str] = field(default_factory=list)
    host_keys: list[HostKey] = field(default_factory=list)
    trusted_now: bool = False        # the host key was trusted by this verification
    kind: str = "ok"


def verify_access(application, timeout: float = 45) -> VerifyResult:
    """``git ls-remote`` with the application's deploy key; updates the application (no commit).

    On first verification the git host's keys are read with ssh-keyscan and
    stored (trust on first use, shown to the user); afterwards ssh runs with
    ``StrictHostKeyChecking=yes`` against exactly those keys.
    """
    try:
        repo = parse_repository_url(application.repository_url)
    except ValidationError as exc:
        return VerifyResult(False, str(exc), kind="invalid")
    if not application.deploy_key_private:
        assign_deploy_key(application)
    trusted_now = False
    if not parse_known_hosts(application.repository_known_hosts):
        try:
            application.repository_known_hosts = keyscan(repo)
        except GitAccessError as exc:
            return VerifyResult(False, str(exc), kind=exc.kind)
        trusted_now = True
    host_keys = parse_known_hosts(application.repository_known_hosts)
    try:
        with TemporaryWorkdir(prefix="keystone-verify-", base=workdir_base()) as work:
            heads = ls_remote(work, application.deploy_key_private,
                              application.repository_known_hosts, repo.url, timeout=timeout)
    except GitAccessError as exc:
        return VerifyResult(False, str(exc), host_keys=host_keys, trusted_now=trusted_now,
                            kind=exc.kind)
    except Exception as exc:  # a timeout or a missing git binary: say so, never a 500
        return VerifyResult(False, f"Verification failed: {exc}", host_keys=host_keys,
                            trusted_now=trusted_now, kind="error")
    branches = sorted(heads)
    application.repository_branches = branches
    application.deploy_key_installed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if not branches:
        message = "Access works, but the repository has no branches yet: push one, then verify again."
    elif application.default_branch not in heads:
        message = (f"Access works. The default branch {application.default_branch!r} does not exist "
                   f"in the repository; pick one of: {', '.join(branches[:10])}.")
    else:
        message = f"Access works: {len(branches)} branch{'es' if len(branches) != 1 else ''} found."
    return VerifyResult(True, message, branches=branches, host_keys=host_keys,
                        trusted_now=trusted_now)


def resolve_commit(environment, on_line: Callable[[str], None] | None = None,
                   timeout: float = 60) -> str:
    """The sha the environment's branch points at now (``git ls-remote`` with the deploy key).

    Raises :class:`GitAccessError` (message for the user) or :class:`ValidationError`.
    """
    application = environment.application
    repo = parse_repository_url(application.repository_url)
    branch = validate_branch(environment.branch)
    if on_line:
        on_line(f"git ls-remote {repo.url} refs/heads/{branch}")
    with TemporaryWorkdir(prefix="keystone-resolve-", base=workdir_base()) as work:
        heads = ls_remote(work, application.deploy_key_private, application.repository_known_hosts,
                          repo.url, refs=(f"refs/heads/{branch}",), timeout=timeout)
    sha = heads.get(branch)
    if not sha:
        raise GitAccessError(f"Branch {branch!r} does not exist in {repo.url}.", "not_found")
    if on_line:
        on_line(f"{branch} is at {sha}")
    return sha


def deploy_key_instructions(application) -> list[dict]:
    """Short per-host steps to add the key read-only (rendered next to the public key)."""
    try:
        repo = parse_repository_url(application.repository_url)
        path = repo.path.strip("/").removesuffix(".git")
        host = repo.host
    except ValidationError:
        path, host = "owner/repo", "your git host"
    github = {"title": "GitHub", "steps": [
        f"Open https://github.com/{path}/settings/keys and choose \"Add deploy key\".",
        "Title: Keystone. Paste the public key. Leave \"Allow write access\" unticked.",
        "Save, then press \"Verify access\" here."]}
    gitea = {"title": "Gitea", "steps": [
        f"Open https://{host}/{path}/settings/keys and choose \"Add Deploy Key\".",
        "Title: Keystone. Paste the public key. Leave \"Enable Write Access\" unticked.",
        "Save, then press \"Verify access\" here."]}
    generic = {"title": "Other git server", "steps": [
        "Authorise the public key for read access (git-upload-pack) to this repository only.",
        "Then press \"Verify access\" here."]}
    order = {"github": [github, gitea, generic], "gitea": [gitea, github, generic]}
    return order.get(str(application.repository_type), [github, gitea, generic])
