"""Deployment history (issue 17.6): compare links and the fetched commit's details."""
from __future__ import annotations

import pytest

from app.deploys.history import compare_url, repository_web_url
from app.repositories.git import commit_info_command, parse_commit_info

A, B = "a" * 40, "b" * 40


@pytest.mark.parametrize("url, kind, expected", [
    ("git@github.com:acme/shop.git", "github", f"https://github.com/acme/shop/compare/{A}...{B}"),
    ("ssh://git@github.com/acme/shop", "github", f"https://github.com/acme/shop/compare/{A}...{B}"),
    ("ssh://git@git.example.com:2222/team/app.git", "gitea",
     f"https://git.example.com/team/app/compare/{A}...{B}"),
    ("git@git.example.com:acme/shop.git", "git", None),
])
def test_compare_links_for_github_and_gitea(url, kind, expected):
    assert compare_url(url, kind, A, B) == expected


def test_no_compare_link_without_two_different_commits():
    url = "git@github.com:acme/shop.git"
    assert compare_url(url, "github", None, B) is None
    assert compare_url(url, "github", B, B) is None
    assert compare_url(url, "github", "main", B) is None
    assert repository_web_url("not a url", "github") is None


def test_commit_details_are_read_with_a_fixed_format():
    command = commit_info_command(A)
    assert command.render().endswith(f" show -s --format=%an%n%ae%n%s --end-of-options {A}")
    assert "core.hooksPath=/dev/null" in command.render()   # the hardened git of fetches
    assert parse_commit_info("Ada Lovelace\nada@example.com\nFix the <b>thing</b>\n") == \
        {"author": "Ada Lovelace", "email": "ada@example.com", "message": "Fix the <b>thing</b>"}
    assert parse_commit_info("garbage") == {}


def test_commit_info_reads_a_real_repository(tmp_path):
    import subprocess
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.com",
           "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@example.com", "HOME": str(tmp_path),
           "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "."], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "Add orders; $(id)\n\nbody"],
                   cwd=repo, env=env, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    from app.repositories.git import commit_info
    assert commit_info(tmp_path, sha) == {"author": "Ada Lovelace", "email": "ada@example.com",
                                          "message": "Add orders; $(id)"}
    assert commit_info(tmp_path, "not-a-sha") == {}
