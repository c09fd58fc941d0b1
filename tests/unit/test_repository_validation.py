"""Repository URL and branch validation: the injection corpus is refused with a clear message."""
import pytest

from app.models.enums import RepositoryType
from app.repositories.validation import (ValidationError, parse_repository_url, validate_branch,
                                         validate_repository_url)

GOOD_URLS = {
    "git@github.com:acme/shop.git": ("git", "github.com", 22, "acme/shop.git"),
    "git@github.com:acme/shop": ("git", "github.com", 22, "acme/shop"),
    "git@gitea.example.com:team/app.git": ("git", "gitea.example.com", 22, "team/app.git"),
    "ssh://git@127.0.0.1:2222/sample.git": ("git", "127.0.0.1", 2222, "/sample.git"),
    "ssh://git@git.example.org/group/sub/repo.git": ("git", "git.example.org", 22, "/group/sub/repo.git"),
    "ssh://gitea@10.0.0.5:22/o/r.git": ("gitea", "10.0.0.5", 22, "/o/r.git"),
    "  git@github.com:acme/shop.git  ": ("git", "github.com", 22, "acme/shop.git"),
}

BAD_URLS = [
    "--upload-pack=touch /tmp/x",
    "--upload-pack=touch",
    "-oProxyCommand=touch",
    "ext::sh -c touch% /tmp/x",
    "ext::sh",
    "fd::17",
    "file:///etc/passwd",
    "file://localhost/srv/repo.git",
    "/srv/git/repo.git",
    "../repo.git",
    "https://github.com/acme/shop.git",
    "http://example.com/x.git",
    "git://example.com/x.git",
    "ssh://-oProxyCommand=touch%20/tmp/x/x.git",
    "ssh://-oProxyCommand=touch/x.git",
    "ssh://git@-oProxyCommand=x/x.git",
    "git@-oProxyCommand=x:acme/shop.git",
    "git@host:-x/shop.git",
    "git@host:acme/-shop.git",
    "git@host:acme/../shop.git",
    "git@host:acme/shop.git;id",
    "git@host:acme/$(id).git",
    "git@host:acme/`id`.git",
    "git@host:acme/shop.git\nid",
    "git@host:acme/shop.git\rid",
    "git@host:acme/sh op.git",
    "git@host:acme/shop.git\x00",
    "git@host:acme/shop.git\tx",
    "ssh://git@host:0/x.git",
    "ssh://git@host:99999/x.git",
    "ssh://git@host:22x/x.git",
    "ssh://git@ho_st/x.git",
    "ssh://git@host/",
    "git@host:",
    "host:acme/shop.git",
    "ssh://host/acme/shop.git",
    "git@host:acme/shop%0a.git",
    "git@host:acme\\shop.git",
    "g;t@host:acme/shop.git",
    "",
    "   ",
    "x" * 10_000,
    "git@github.com:" + "a/" * 5000 + "r.git",
]

GOOD_BRANCHES = ["main", "master", "feature/login", "release/2024.10", "v1.2.3", "fix-#12",
                 "user@team", "a+b", "refs/heads/main"]
BAD_BRANCHES = [
    "--upload-pack=touch /tmp/x", "-x", "main;id", "$(id)", "`id`", "main\nid", "main id",
    "a..b", "a//b", "/main", "main/", "main.", "x.lock", "a/.hidden", ".hidden", "@", "HEAD",
    "a@{1}", "a~1", "a^", "a:b", "a?b", "a*b", "a[b", "a\\b", "", "x" * 10_000, "main\x00",
    "main\x7f", "'main'", '"main"', "main|id", "main&id", "main>x",
]


@pytest.mark.parametrize("url", list(GOOD_URLS))
def test_ssh_urls_are_accepted_and_split(url):
    parsed = parse_repository_url(url)
    assert (parsed.user, parsed.host, parsed.port, parsed.path) == GOOD_URLS[url]
    assert validate_repository_url(url) == url.strip()


@pytest.mark.parametrize("url", BAD_URLS, ids=lambda u: repr(u[:40]))
def test_dangerous_or_malformed_urls_are_rejected_with_a_message(url):
    with pytest.raises(ValidationError) as info:
        parse_repository_url(url)
    message = str(info.value)
    assert message and len(message) < 300
    assert "\n" not in message


def test_url_messages_say_what_to_do():
    with pytest.raises(ValidationError, match="SSH"):
        parse_repository_url("https://github.com/acme/shop.git")
    with pytest.raises(ValidationError, match="must not start with '-'"):
        parse_repository_url("--upload-pack=touch /tmp/x")
    with pytest.raises(ValidationError, match="host name must not start with '-'"):
        parse_repository_url("ssh://-oProxyCommand=touch/x.git")
    with pytest.raises(ValidationError, match="too long"):
        parse_repository_url("x" * 10_000)
    with pytest.raises(ValidationError, match="ext::"):
        parse_repository_url("ext::sh")


def test_known_hosts_name_and_type():
    assert parse_repository_url("ssh://git@127.0.0.1:2222/s.git").known_hosts_name == "[127.0.0.1]:2222"
    assert parse_repository_url("git@github.com:a/b.git").known_hosts_name == "github.com"
    assert parse_repository_url("git@github.com:a/b.git").repository_type == RepositoryType.GITHUB
    assert parse_repository_url("git@gitea.example.com:a/b.git").repository_type == RepositoryType.GITEA
    assert parse_repository_url("git@example.com:a/b.git").repository_type == RepositoryType.GIT


@pytest.mark.parametrize("branch", GOOD_BRANCHES)
def test_branches_following_check_ref_format_are_accepted(branch):
    assert validate_branch(branch) == branch.removeprefix("refs/heads/")


@pytest.mark.parametrize("branch", BAD_BRANCHES, ids=lambda b: repr(b[:30]))
def test_dangerous_or_invalid_branches_are_rejected(branch):
    with pytest.raises(ValidationError):
        validate_branch(branch)


def test_accepted_branches_are_valid_for_git_itself():
    import subprocess
    for branch in GOOD_BRANCHES:
        name = validate_branch(branch)
        proc = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True)
        assert proc.returncode == 0, name
