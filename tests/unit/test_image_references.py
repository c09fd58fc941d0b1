"""One normal form for image references (issue 13, defect 5).

Docker reports the *familiar* name in RepoDigests (``redis@sha256:..`` for
docker.io/library/redis, ``acme/app@sha256:..`` for docker.io/acme/app). Every
name Keystone builds and every comparison with what Docker reports goes through
:func:`normalise_reference`, so a Docker Hub push no longer ends with
"digest unknown".
"""
import json
from types import SimpleNamespace

import pytest

from app.builds.artifacts import _repo_digest
from app.registries.images import parse_image
from app.registries import repository_for
from app.registries.references import (ImageReferenceError, normalise_reference, repository_name,
                                       same_repository)

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("ref,normal", [
    # Docker Hub, official ("library") images
    ("redis", "redis"),
    ("redis:7", "redis:7"),
    ("library/redis:7", "redis:7"),
    ("docker.io/library/redis:7", "redis:7"),
    ("index.docker.io/library/redis:7", "redis:7"),
    ("registry-1.docker.io/library/redis", "redis"),
    (f"docker.io/library/redis@{DIGEST}", f"redis@{DIGEST}"),
    # Docker Hub, namespaced
    ("docker.io/acme/shop-production", "acme/shop-production"),
    ("Docker.IO/acme/shop:1.2", "acme/shop:1.2"),
    ("acme/shop", "acme/shop"),
    (f"index.docker.io/acme/shop:1@{DIGEST}", f"acme/shop:1@{DIGEST}"),
    # GHCR
    ("ghcr.io/acme/shop-production:abc", "ghcr.io/acme/shop-production:abc"),
    ("GHCR.io/acme/shop", "ghcr.io/acme/shop"),
    # Gitea (a host with a path of owner/name, often several levels)
    ("git.example.com/acme/shop:v1", "git.example.com/acme/shop:v1"),
    ("gitea.example.org/team/sub/shop", "gitea.example.org/team/sub/shop"),
    # A generic registry with a port, and localhost
    ("registry.example.com:5000/shop:1", "registry.example.com:5000/shop:1"),
    (f"127.0.0.1:5055/shop-prod@{DIGEST}", f"127.0.0.1:5055/shop-prod@{DIGEST}"),
    ("localhost:5000/shop", "localhost:5000/shop"),
    ("localhost/shop", "localhost/shop"),
])
def test_normalise_reference(ref, normal):
    assert normalise_reference(ref) == normal
    # The normal form is a fixed point.
    assert normalise_reference(normal) == normal


@pytest.mark.parametrize("a,b", [
    ("docker.io/library/postgres", "postgres"),
    ("docker.io/acme/app", "acme/app:latest"),
    ("index.docker.io/acme/app", f"acme/app@{DIGEST}"),
    ("ghcr.io/acme/app", "GHCR.IO/acme/app:1"),
    ("git.example.com/acme/app", "git.example.com/acme/app:main"),
    ("registry.example.com:5000/app", f"registry.example.com:5000/app@{DIGEST}"),
])
def test_same_repository(a, b):
    assert same_repository(a, b)
    assert repository_name(a) == repository_name(b)


@pytest.mark.parametrize("a,b", [
    ("acme/app", "ghcr.io/acme/app"),                    # another registry
    ("registry.example.com/app", "registry.example.com:5000/app"),   # another port
    ("library/app", "acme/app"),
    ("acme/app", "not a reference"),
])
def test_different_repositories(a, b):
    assert not same_repository(a, b)


@pytest.mark.parametrize("bad", ["", "a b", "Acme/App", "x:bad tag", "x@sha256:zz", "-x",
                                 "x;id", "$(id)/x", "host_bad.com:5000x/y"])
def test_bad_references_are_refused(bad):
    with pytest.raises(ImageReferenceError):
        normalise_reference(bad)


@pytest.mark.parametrize("url,namespace,expected", [
    ("docker.io", "acme", "acme/shop-production"),
    ("docker.io", None, "shop-production"),
    ("ghcr.io", "acme", "ghcr.io/acme/shop-production"),
    ("git.example.com", "acme", "git.example.com/acme/shop-production"),
    ("registry.example.com:5000", None, "registry.example.com:5000/shop-production"),
])
def test_repository_for_builds_the_normal_form(url, namespace, expected):
    registry = SimpleNamespace(url=url, namespace=namespace)
    assert repository_for(registry, "shop", "production") == expected


def test_parse_image_uses_the_same_normal_form():
    assert parse_image("index.docker.io/library/postgres:18").registry == "docker.io"
    assert parse_image("docker.io/acme/app:1").with_digest(DIGEST) == f"acme/app@{DIGEST}"
    assert parse_image("GHCR.io/acme/app").name == "ghcr.io/acme/app"


class _Step:
    """The one call _repo_digest makes: docker image inspect prints RepoDigests."""

    def __init__(self, digests):
        self.stdout = json.dumps(digests)

    def run(self, command, **kw):
        return SimpleNamespace(stdout=self.stdout, exit_code=0)


@pytest.mark.parametrize("repository,reported", [
    # What `docker image inspect` really prints after pushing each kind of name.
    ("acme/shop-production", "acme/shop-production"),
    ("docker.io/acme/shop-production", "acme/shop-production"),
    ("docker.io/library/shop", "shop"),
    ("ghcr.io/acme/shop-production", "ghcr.io/acme/shop-production"),
    ("git.example.com/acme/shop-production", "git.example.com/acme/shop-production"),
    ("registry.example.com:5000/shop", "registry.example.com:5000/shop"),
])
def test_repo_digest_matches_what_docker_reports(repository, reported):
    other = "sha256:" + "b" * 64
    step = _Step([f"elsewhere.example.com/x@{other}", f"{reported}@{DIGEST}"])
    assert _repo_digest(step, f"{repository}:tag", repository) == DIGEST


def test_repo_digest_ignores_another_registrys_digest():
    step = _Step([f"ghcr.io/acme/shop@{DIGEST}"])
    with pytest.raises(Exception, match="digest is unknown"):
        _repo_digest(step, "acme/shop:tag", "acme/shop")
