"""Image references, normalised the one way Docker itself reports them (pure).

Docker accepts several spellings of the same repository and reports only one
of them back. ``docker image inspect --format '{{json .RepoDigests}}'`` lists
the *familiar* name: ``postgres@sha256:...`` for ``docker.io/library/postgres``,
``acme/shop@sha256:...`` for ``docker.io/acme/shop``, and the full name for
every other registry (``ghcr.io/acme/shop``, ``git.example.com/acme/shop``,
``registry.example.com:5000/shop``). Comparing a name Keystone built with a
name Docker reported, character by character, therefore fails for Docker Hub
("digest unknown" after a successful push).

:func:`normalise_reference` is the single place that turns any spelling into
that familiar form. Every repository Keystone builds (``repository_for``) and
every comparison with what Docker reports (RepoDigests, registry credential
lookups) goes through it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Hostnames that all mean Docker Hub (what users paste, what old clients write).
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io",
                                "registry.hub.docker.com"})
LIBRARY = "library/"

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REPOSITORY_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)"
    r"(?::[0-9]{1,5})?$")


class ImageReferenceError(ValueError):
    """Not an image reference; the message quotes it."""


@dataclass(frozen=True)
class Reference:
    """A reference split into registry host, full repository path, tag and digest."""

    domain: str      # "docker.io" for Docker Hub, else host[:port] in lower case
    path: str        # the full path: "library/postgres" on Docker Hub
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The familiar repository name, as Docker reports it in RepoDigests."""
        if self.domain == DOCKER_HUB:
            return self.path[len(LIBRARY):] if self.path.startswith(LIBRARY) else self.path
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def normalise_domain(domain: str) -> str:
    """``host[:port]`` in lower case; every Docker Hub alias becomes ``docker.io``."""
    host = (domain or "").strip().lower()
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def split_reference(ref: str, *, default_tag: str | None = None) -> Reference:
    """Split ``[registry/]repo[:tag][@digest]`` the way Docker does; validate every part.

    The first path component is a registry host only when it contains ``.``
    or ``:`` or is ``localhost`` (Docker's own rule), so ``acme/shop`` is a
    Docker Hub repository and ``registry.example.com:5000/shop`` is not.
    """
    if not isinstance(ref, str) or not ref or any(c.isspace() for c in ref) or ref.startswith("-"):
        raise ImageReferenceError(f"image {ref!r}: must be a reference like postgres:18")
    rest, digest = ref.split("@", 1) if "@" in ref else (ref, None)
    if digest is not None and not DIGEST_RE.fullmatch(digest):
        raise ImageReferenceError(f"image {ref!r}: digest must be sha256:<64 hex>")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first.lower() == "localhost"):
        if not DOMAIN_RE.fullmatch(first):
            raise ImageReferenceError(f"image {ref!r}: invalid registry {first!r}")
        domain, path = normalise_domain(first), remainder
    else:
        domain, path = DOCKER_HUB, rest
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not TAG_RE.fullmatch(tag):
            raise ImageReferenceError(f"image {ref!r}: invalid tag {tag!r}")
    if domain == DOCKER_HUB and "/" not in path:
        path = LIBRARY + path
    if not REPOSITORY_RE.fullmatch(path):
        raise ImageReferenceError(f"image {ref!r}: invalid repository name {path!r}")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def normalise_reference(ref: str) -> str:
    """The one normal form of an image reference: Docker's familiar name, tag and digest kept.

    ``docker.io/library/redis:7`` -> ``redis:7``; ``index.docker.io/acme/app`` ->
    ``acme/app``; ``GHCR.io/acme/app@sha256:..`` -> ``ghcr.io/acme/app@sha256:..``;
    ``registry.example.com:5000/shop:1`` is unchanged. No tag is added.
    """
    return str(split_reference(ref))


def repository_name(ref: str) -> str:
    """The normalised repository of ``ref``, without tag or digest."""
    return split_reference(ref).name


def same_repository(a: str, b: str) -> bool:
    """Whether two references name the same repository (spelling, tag and digest ignored)."""
    try:
        return repository_name(a) == repository_name(b)
    except ImageReferenceError:
        return False
