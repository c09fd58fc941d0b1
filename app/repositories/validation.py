"""Repository URL and branch validation: the first line against injection.

Why so strict: a repository URL and a branch reach ``git`` on the control
plane, and peers' advisories are full of ``--upload-pack=...``, ``ext::sh -c``
and ``ssh://-oProxyCommand=...`` values that git (or ssh) read as options or
as a transport that runs a command. Every command Keystone builds also quotes
each argument (app.shell) and puts ``--`` before positional arguments, and git
runs with ``protocol.allow=never`` except ssh, so a value that slipped past
these checks would still be inert. Validation is the part the user sees: a
clear message on the form instead of a failed build later.

Accepted repository URLs (SSH only: deploy keys are SSH keys):

* scp-like ``user@host:path`` (``git@github.com:acme/shop.git``)
* ``ssh://[user@]host[:port]/path`` (``ssh://git@gitea.example.com:2222/acme/shop.git``)

Branches follow ``git check-ref-format --branch`` rules, restricted further
to a conservative character set and no leading ``-``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from app.models.enums import RepositoryType

MAX_URL_LENGTH = 300
MAX_BRANCH_LENGTH = 200


class ValidationError(ValueError):
    """A value was refused; the message is written for the person who typed it."""


# One DNS label: letters, digits, hyphens; never starts or ends with a hyphen.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IPV4_RE = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# Path segments: no leading '-' or '.', nothing a shell or ssh would interpret.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_~][A-Za-z0-9._~-]*")
_SCP_RE = re.compile(r"(?P<user>[^@:/]+)@(?P<host>[^:/]+):(?P<path>.+)")
_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)$")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
_BRANCH_CHARS_RE = re.compile(r"^[A-Za-z0-9._/+@#-]+$")


@dataclass(frozen=True)
class RepositoryURL:
    """A validated SSH repository URL, split into what ssh-keyscan and git need."""

    url: str
    user: str | None
    host: str
    port: int
    path: str

    @property
    def known_hosts_name(self) -> str:
        """How ssh names this host in known_hosts (``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def repository_type(self) -> RepositoryType:
        return guess_repository_type(self.host)


def _check_text(value: object, what: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} is required.")
    if len(value) > max_length:
        raise ValidationError(f"{what} is too long (at most {max_length} characters).")
    if not value:
        raise ValidationError(f"{what} is required.")
    if value.startswith("-"):
        raise ValidationError(f"{what} must not start with '-'.")
    if _CONTROL_RE.search(value):
        raise ValidationError(f"{what} must not contain spaces, newlines or control characters.")
    return value


def _check_host(host: str) -> str:
    if host.startswith("-"):
        raise ValidationError("The host name must not start with '-'.")
    if not (_IPV4_RE.fullmatch(host) or (_HOST_RE.fullmatch(host) and not host.replace(".", "").isdigit())):
        raise ValidationError(f"{host!r} is not a valid host name.")
    return host.lower()


def _check_path(path: str) -> str:
    segments = path.strip("/").split("/")
    if not path.strip("/"):
        raise ValidationError("The URL names no repository path.")
    for segment in segments:
        if segment in ("", ".", "..") or not _SEGMENT_RE.fullmatch(segment):
            raise ValidationError(
                "The repository path may only contain letters, digits, '.', '_', '~', '-' and '/' "
                "(no segment starting with '-' or '.').")
    return path


def parse_repository_url(value: object) -> RepositoryURL:
    """Validate an SSH repository URL; raise :class:`ValidationError` with a clear message."""
    url = _check_text(value.strip() if isinstance(value, str) else value, "The repository URL",
                      MAX_URL_LENGTH)
    lowered = url.lower()
    if "::" in url or lowered.startswith(("ext:", "fd:")):
        raise ValidationError("Transport helpers such as 'ext::' are not allowed; use an SSH URL.")
    if "%" in url or "\\" in url:
        raise ValidationError("The repository URL must not contain '%' or '\\'.")
    if re.match(r"^[a-z][a-z0-9+.-]*://", lowered) and not lowered.startswith("ssh://"):
        raise ValidationError("Only SSH repository URLs are supported "
                              "(git@host:owner/repo.git or ssh://git@host[:port]/owner/repo.git); "
                              "Keystone reads repositories with a deploy key.")
    match = _SSH_RE.fullmatch(url) if lowered.startswith("ssh://") else _SCP_RE.fullmatch(url)
    if not match:
        raise ValidationError("Use an SSH URL: git@host:owner/repo.git or "
                              "ssh://git@host[:port]/owner/repo.git.")
    user = match.group("user")
    if user is not None and not _USER_RE.fullmatch(user):
        raise ValidationError(f"{user!r} is not a valid SSH user name.")
    host = _check_host(match.group("host"))
    port = 22
    if "port" in match.groupdict() and match.group("port"):
        port = int(match.group("port"))
        if not 1 <= port <= 65535:
            raise ValidationError("The SSH port must be between 1 and 65535.")
    path = match.group("path")
    if path.startswith("-"):
        raise ValidationError("The repository path must not start with '-'.")
    _check_path(path)
    if user is None:
        raise ValidationError("Add the SSH user to the URL (usually git@...).")
    return RepositoryURL(url=url, user=user, host=host, port=port, path=path)


def validate_repository_url(value: object) -> str:
    """The URL, stripped, if it is a safe SSH repository URL."""
    return parse_repository_url(value).url


def validate_branch(value: object) -> str:
    """A branch name valid for ``git check-ref-format --branch`` and safe to pass around.

    Rules (git's, plus ours): not empty, at most 200 characters, no leading
    '-', only letters, digits and ``. _ / + @ # -``; no ``..``, no ``@{``, no
    ``//``, no leading/trailing '/', no trailing '.', no segment starting
    with '.' or ending with '.lock', and not ``@`` or ``HEAD`` alone.
    """
    name = _check_text(value.strip() if isinstance(value, str) else value, "The branch",
                       MAX_BRANCH_LENGTH)
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/"):]
    if not _BRANCH_CHARS_RE.fullmatch(name):
        raise ValidationError("A branch may only contain letters, digits and . _ / + @ # -.")
    problems = [
        (name.startswith("-"), "must not start with '-'"),
        (".." in name, "must not contain '..'"),
        ("@{" in name, "must not contain '@{'"),
        ("//" in name, "must not contain '//'"),
        (name.startswith("/") or name.endswith("/"), "must not start or end with '/'"),
        (name.endswith("."), "must not end with '.'"),
        (name in ("@", "HEAD"), f"cannot be {name!r}"),
        (any(seg.startswith(".") or seg.endswith(".lock") for seg in name.split("/")),
         "has a part starting with '.' or ending with '.lock'"),
    ]
    for failed, why in problems:
        if failed:
            raise ValidationError(f"The branch {why}.")
    return name


def guess_repository_type(host: str) -> RepositoryType:
    host = host.lower()
    if host == "github.com" or host.endswith(".github.com"):
        return RepositoryType.GITHUB
    if "gitea" in host or host.endswith("codeberg.org"):
        return RepositoryType.GITEA
    return RepositoryType.GIT


def is_commit_sha(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value) is not None
