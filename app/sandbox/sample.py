"""The sample Laravel-shaped application and the commits tests deploy.

Why: deploy tests need a repository with a known history on a git host that
behaves like GitHub/Gitea. The files live in ``app/sandbox/sample_app/``; the
functions here push them to the sandbox git host over real SSH (with the
sandbox's admin key) as an initial commit, a new commit with visibly different
content, or a broken commit whose ``/up`` answers 500.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from .docker import SandboxError, run
from .results import GitHost

SAMPLE_APP_DIR = Path(__file__).parent / "sample_app"
# The real Laravel 8 application (Debian's framework, baked into the PHP base image).
LARAVEL_APP_DIR = Path(__file__).parent / "laravel_app"
LARAVEL_REPO = "laravel.git"
KINDS = ("initial", "update", "broken")
LARAVEL_KINDS = ("initial", "update")
# A migration each "update" commit of the Laravel sample adds: it writes one row, so a
# migration run twice (two servers racing) would show as two rows of the same mark.
_DEPLOY_MARK_MIGRATION = """<?php

use Illuminate\\Database\\Migrations\\Migration;
use Illuminate\\Support\\Facades\\DB;

return new class extends Migration
{
    public function up()
    {
        DB::table('deploy_marks')->insert(['mark' => '%(mark)s']);
    }

    public function down()
    {
        DB::table('deploy_marks')->where('mark', '%(mark)s')->delete();
    }
};
"""


def _git(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    return run(["git", *args], cwd=str(cwd), env=env, timeout=120).stdout.strip()


def remote_head(git: "GitHost", repo: str = "sample.git", branch: str = "main") -> str | None:
    """The sha `branch` points to on the git host, or None for an empty repository."""
    out = run(["git", "ls-remote", git.repo_url(repo), f"refs/heads/{branch}"],
              env=git.git_env(), timeout=60).stdout.split()
    return out[0] if out else None


def push_sample_commit(git: "GitHost", kind: str = "update", repo: str = "sample.git",
                       branch: str = "main", message: str | None = None,
                       laravel: bool = False, with_up: bool = True) -> str:
    """Commit the sample app to `repo` on the git host and push it; return the new sha.

    kind:
      - "initial": the app as it is in sample_app/ (a no-op returning the current
        head when the branch already has commits);
      - "update": a new commit whose VERSION (shown by GET /) differs;
      - "broken": a new commit with a BROKEN marker, so GET /up answers 500.
    Every "update" and "broken" commit removes the marker of an earlier broken one.

    ``laravel=True`` pushes the real Laravel sample (``laravel_app/``) instead: "initial"
    or "update"; every "update" also adds a migration writing one ``deploy_marks`` row
    (the ones of earlier updates are kept), and ``with_up=False`` leaves out
    ``routes/health.php``, so the app has no ``/up`` route (Laravel 8 has none).
    """
    if kind not in (LARAVEL_KINDS if laravel else KINDS):
        raise SandboxError(f"kind must be one of {LARAVEL_KINDS if laravel else KINDS}")
    source = LARAVEL_APP_DIR if laravel else SAMPLE_APP_DIR
    git.create_repo(repo)
    if kind == "initial":
        head = remote_head(git, repo, branch)
        if head:
            return head
    env = {
        **git.git_env(),
        "GIT_AUTHOR_NAME": "Keystone Sandbox", "GIT_AUTHOR_EMAIL": "sandbox@keystone.invalid",
        "GIT_COMMITTER_NAME": "Keystone Sandbox", "GIT_COMMITTER_EMAIL": "sandbox@keystone.invalid",
    }
    work = Path(tempfile.mkdtemp(prefix="keystone-sample-"))
    try:
        head = remote_head(git, repo, branch)
        if head:
            _git(["clone", "-q", "--branch", branch, git.repo_url(repo), str(work)], work.parent, env)
        else:
            _git(["init", "-q", "-b", branch, str(work)], work.parent, env)
            _git(["remote", "add", "origin", git.repo_url(repo)], work, env)
        migrations = work / "database" / "migrations"
        kept = {p.name: p.read_text() for p in migrations.glob("*_deploy_mark_*.php")} \
            if laravel and migrations.is_dir() else {}
        # Start from the pristine sample app every time.
        for child in work.iterdir():
            if child.name == ".git":
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        shutil.copytree(source, work, dirs_exist_ok=True)
        (work / "artisan").chmod(0o755)
        stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(3).hex()}"
        if laravel:
            for name, text in kept.items():
                (migrations / name).write_text(text)
            if kind == "update":
                mark = stamp.replace("-", "_").lower()
                name = f"{time.strftime('%Y_%m_%d_%H%M%S', time.gmtime())}_deploy_mark_{mark}.php"
                (migrations / name).write_text(_DEPLOY_MARK_MIGRATION % {"mark": mark})
            if not with_up:
                (work / "routes" / "health.php").unlink()
        if kind == "update":
            (work / "VERSION").write_text(f"v2 {stamp}\n")
        elif kind == "broken":
            (work / "VERSION").write_text(f"broken {stamp}\n")
            (work / "BROKEN").write_text("This commit is broken on purpose: /up answers 500.\n")
        _git(["add", "-A"], work, env)
        _git(["commit", "-q", "-m", message or f"sample app: {kind} {stamp}"], work, env)
        _git(["push", "-q", "origin", f"HEAD:refs/heads/{branch}"], work, env)
        return _git(["rev-parse", "HEAD"], work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def push_initial_commit(git: "GitHost", repo: str = "sample.git", branch: str = "main") -> str:
    return push_sample_commit(git, "initial", repo, branch)


def push_new_commit(git: "GitHost", repo: str = "sample.git", branch: str = "main") -> str:
    return push_sample_commit(git, "update", repo, branch)


def push_broken_commit(git: "GitHost", repo: str = "sample.git", branch: str = "main") -> str:
    return push_sample_commit(git, "broken", repo, branch)


def push_laravel_commit(git: "GitHost", kind: str = "update", repo: str = LARAVEL_REPO,
                        branch: str = "main", with_up: bool = True) -> str:
    """Push the real Laravel sample (see :func:`push_sample_commit`); return the new sha."""
    return push_sample_commit(git, kind, repo, branch, laravel=True, with_up=with_up)
