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
    assert command.render().endswith(f" show -s --format=%an%x00%ae%x00%s -- {A}")
    assert "core.hooksPath=/dev/null" in command.render()   # the hardened git of fetches
    assert parse_commit_info("Ada Lovelace\x00ada@example.com\x00Fix the <b>thing</b>\n") == \
        {"author": "Ada Lovelace", "email": "ada@example.com", "message": "Fix the <b>thing</b>"}
    assert parse_commit_info("garbage") == {}
