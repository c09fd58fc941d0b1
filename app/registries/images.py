"""Image references and digest resolution through the registry HTTP API v2 (SPEC 9).

Deploys and updates run ``name@sha256:...``, never a moving tag, so a
rollback or a second server gets exactly the same bytes. The resolution is
a ``HEAD /v2/<repo>/manifests/<tag>`` with the manifest-list/index media
types in ``Accept`` (so a multi-arch tag yields its index digest, the one
``docker pull`` records), answering ``401`` challenges with a bearer token
(Docker Hub, GHCR) or basic auth (distribution with htpasswd).

Registry-level only: which tag a service runs, and recording a newer digest
for it, are :mod:`app.services_ops.updates`'s.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Callable

import requests

from app.registries.references import (DIGEST_RE, ImageReferenceError, Reference,
                                       normalise_domain, split_reference)

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
DOCKER_HUB_API = "registry-1.docker.io"


class ImageError(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way the registry API needs it."""

    registry: str  # host[:port]; "docker.io" for Docker Hub
    repository: str  # e.g. "library/postgres"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The reference without tag or digest, normalised as Docker reports it in RepoDigests."""
        return Reference(domain=self.registry, path=self.repository).name

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


CredentialLookup = Callable[[str], "Credentials | None"]


def parse_image(ref: str) -> ImageRef:
    """Split ``[registry/]repo[:tag][@digest]`` the way Docker does; validate every part.

    The split and the registry host's normal form (``index.docker.io`` ->
    ``docker.io``) are :func:`app.registries.references.split_reference`'s.
    """
    try:
        parsed = split_reference(ref, default_tag="latest")
    except ImageReferenceError as exc:
        raise ImageError(str(exc)) from None
    return ImageRef(registry=parsed.domain, repository=parsed.path, tag=parsed.tag,
                    digest=parsed.digest)


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def registry_base_url(registry: str) -> str:
    """HTTPS, except loopback registries (Docker's own default for insecure registries)."""
    if registry == "docker.io":
        return f"https://{DOCKER_HUB_API}"
    scheme = "http" if _is_loopback(registry) else "https"
    return f"{scheme}://{registry}"


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def resolve_digest(ref: "str | ImageRef", credentials: CredentialLookup | None = None, *,
                   session: requests.Session | None = None, timeout: float = 15) -> str:
    """Return the ``sha256:...`` digest the registry serves for ``ref``'s tag."""
    image = parse_image(ref) if isinstance(ref, str) else ref
    if image.digest:
        return image.digest
    http = session or requests.Session()
    creds = credentials(image.registry) if credentials else None
    url = f"{registry_base_url(image.registry)}/v2/{image.repository}/manifests/{image.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        resp = http.head(url, headers=headers, timeout=timeout)
        if resp.status_code == 401:
            auth = _authorise(http, resp.headers.get("WWW-Authenticate", ""), image, creds, timeout)
            headers.update(auth)
            resp = http.head(url, headers=headers, timeout=timeout)
        if resp.status_code == 200 and DIGEST_RE.fullmatch(resp.headers.get("Docker-Content-Digest", "")):
            return resp.headers["Docker-Content-Digest"]
        if resp.status_code in (200, 405):  # no digest header, or HEAD refused: hash the body
            body = http.get(url, headers=headers, timeout=timeout)
            if body.status_code == 200:
                return body.headers.get("Docker-Content-Digest") or \
                    "sha256:" + hashlib.sha256(body.content).hexdigest()
            resp = body
    except requests.RequestException as exc:
        raise ImageError(f"image {image}: registry {image.registry} unreachable: "
                         f"{type(exc).__name__}") from None
    if resp.status_code == 404:
        raise ImageError(f"image {image}: tag not found in {image.registry}")
    if resp.status_code in (401, 403):
        raise ImageError(f"image {image}: {image.registry} refused the credentials "
                         f"({resp.status_code}); check the registry's username and password")
    raise ImageError(f"image {image}: registry answered HTTP {resp.status_code}")


def _authorise(http: requests.Session, challenge: str, image: ImageRef,
               creds: Credentials | None, timeout: float, action: str = "pull") -> dict[str, str]:
    scheme, params = _parse_challenge(challenge)
    if scheme == "basic":
        if not creds:
            raise ImageError(f"image {image}: {image.registry} needs credentials; add it under "
                             "Registries")
        import base64
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if scheme == "bearer" and params.get("realm"):
        query = {"service": params.get("service", ""),
                 "scope": params.get("scope") or f"repository:{image.repository}:{action}"}
        auth = (creds.username, creds.password) if creds else None
        resp = http.get(params["realm"], params=query, auth=auth, timeout=timeout)
        if resp.status_code != 200:
            raise ImageError(f"image {image}: token service refused ({resp.status_code})")
        data = resp.json()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise ImageError(f"image {image}: token service returned no token")
        return {"Authorization": f"Bearer {token}"}
    raise ImageError(f"image {image}: unsupported registry auth challenge {scheme!r}")


def delete_manifest(ref: "str | ImageRef", credentials: CredentialLookup | None = None, *,
                    session: requests.Session | None = None, timeout: float = 15) -> str:
    """``DELETE /v2/<repo>/manifests/<digest>`` (housekeeping's registry retention).

    Returns "deleted" (202), "gone" (404: already deleted) or "unsupported" (405: the
    registry does not allow deletion, e.g. distribution without ``storage.delete``);
    raises :class:`ImageError` otherwise. Only ever by digest, never by tag.
    """
    image = parse_image(ref) if isinstance(ref, str) else ref
    if not image.digest:
        raise ImageError(f"image {image}: a manifest is deleted by digest only")
    http = session or requests.Session()
    creds = credentials(image.registry) if credentials else None
    url = f"{registry_base_url(image.registry)}/v2/{image.repository}/manifests/{image.digest}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        resp = http.delete(url, headers=headers, timeout=timeout)
        if resp.status_code == 401:
            headers.update(_authorise(http, resp.headers.get("WWW-Authenticate", ""), image,
                                      creds, timeout, action="delete"))
            resp = http.delete(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise ImageError(f"image {image}: registry {image.registry} unreachable: "
                         f"{type(exc).__name__}") from None
    if resp.status_code in (200, 202):
        return "deleted"
    if resp.status_code == 404:
        return "gone"
    if resp.status_code == 405:
        return "unsupported"
    raise ImageError(f"image {image}: deleting the manifest: registry answered HTTP "
                     f"{resp.status_code}")


# --------------------------------------------------------------------------- org lookups

def org_registry(organisation_id: int, host: str):
    """The organisation's Registry row for an image's registry host (with a username), or None.

    Hosts are compared in their normal form (``index.docker.io`` is ``docker.io``).
    """
    from app.extensions import db
    from app.models import Registry

    wanted = normalise_domain(host)
    rows = db.session.execute(db.select(Registry).where(
        Registry.organisation_id == organisation_id).order_by(Registry.id)).scalars().all()
    for row in rows:
        url = re.sub(r"^[a-z]+://", "", row.url or "", flags=re.I).rstrip("/").split("/")[0]
        if normalise_domain(url) == wanted and row.username:
            return row
    return None


def org_credentials(organisation_id: int) -> CredentialLookup:
    """Look up a Registry row of the organisation whose host matches the image's registry."""

    def lookup(host: str) -> Credentials | None:
        row = org_registry(organisation_id, host)
        return Credentials(row.username, row.password or "") if row is not None else None

    return lookup
