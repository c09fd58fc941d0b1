"""Housekeeping (issue 23): what a server keeps and what it sheds, decided from facts (pure).

Every deploy leaves an image, build cache, sometimes a stopped container and a directory
behind. The ``housekeeping`` operation (:mod:`app.housekeeping.handlers`) reads the
server's facts (``docker image inspect``, ``docker container inspect``, a listing of
Keystone's directories) and this module decides, with no I/O:

* :func:`kept_artifacts` -- per environment the running artifact plus the ``keep`` newest
  other ready artifacts (the rollback targets, ``Environment.keep_artifacts``, default 5);
* :func:`plan_images` -- Keystone's images (the managed Dockerfile's
  ``dev.keystone.managed-dockerfile`` label) that no kept artifact is and no container
  uses: older artifacts of this installation and dangling (untagged, undigested) ones. An
  image without the label is never a candidate, whatever its name, and neither is a
  labelled one this installation has no artifact for;
* :func:`plan_containers` -- stopped containers with ``dev.keystone.managed=true`` whose
  replica Keystone already removed (or marked failed);
* :func:`plan_directories` -- operation directories of operations no longer active and
  replica/service directories nothing uses any more, past a grace period;
* :func:`build_cache_excess` -- the Docker build cache above its cap;
* :func:`registry_prunable` -- artifacts whose registry manifest can be deleted.

Selection is always by Keystone's labels and ids, never by name patterns, so an image or
a container someone else put on the server is never touched.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from app.drivers.base import LABEL_PREFIX

DEFAULT_KEEP = 5
MIN_KEEP = 1
MAX_KEEP = 100
IMAGE_LABEL = f"{LABEL_PREFIX}.managed-dockerfile"   # set by the managed Dockerfile's LABEL
CONTAINER_LABEL = f"{LABEL_PREFIX}.managed"           # set on every rendered compose service
REPLICA_LABEL = f"{LABEL_PREFIX}.replica"
BUILD_CACHE_CAP = 2 * 1024 ** 3                       # bytes of build cache a server keeps
DIRECTORY_GRACE = dt.timedelta(hours=1)               # never remove a directory younger
DISK_PRESSURE_PERCENT = 85.0                          # housekeeping runs at once above this
STOPPED_STATES = frozenset({"exited", "dead"})        # "created" may be a deploy mid-way
GONE_REPLICA_STATUSES = frozenset({"removed", "failed"})
OPERATIONS_ROOT = "/home/keystone/operations"
SERVICES_ROOT = "/home/keystone/services"
SLOT_NAMES = ("blue", "green")
_HASH_RE = re.compile(r"[0-9a-f]{8,64}")
_ID_RE = re.compile(r"[0-9]{1,12}")


# --------------------------------------------------------------------------- facts

@dataclass(frozen=True)
class ArtifactFact:
    id: int
    environment_id: int
    status: str                      # app.models.enums.ArtifactStatus value
    image_id: str | None = None      # the local image id (sha256:...) recorded at build
    registry_ref: str | None = None  # repo@sha256:... when pushed


@dataclass(frozen=True)
class ImageFact:
    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    size: int = 0

    @property
    def keystone(self) -> bool:
        return IMAGE_LABEL in (self.labels or {})

    @property
    def dangling(self) -> bool:
        return not self.repo_tags and not self.repo_digests

    @property
    def references(self) -> tuple[str, ...]:
        """What ``docker image rm`` takes to remove it without --force: every tag (an id
        alone fails for an image in several repositories; removing the last tag deletes
        the image with its digest references, so naming those too would fail), else its
        digest references, else its id."""
        return self.repo_tags or self.repo_digests or (self.id,)


@dataclass(frozen=True)
class ContainerFact:
    id: str
    name: str
    image_id: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def keystone(self) -> bool:
        return (self.labels or {}).get(CONTAINER_LABEL) == "true"


@dataclass(frozen=True)
class DirectoryFact:
    path: str
    mtime: dt.datetime


@dataclass(frozen=True)
class Removal:
    """One thing to remove and why (the log line says it)."""

    what: str          # "image" | "container" | "directory"
    ref: str           # image id / container id / path
    reason: str
    references: tuple[str, ...] = ()
    size: int = 0
    artifact_id: int | None = None


# --------------------------------------------------------------------------- artifacts

def clamp_keep(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return DEFAULT_KEEP
    return max(MIN_KEEP, min(MAX_KEEP, n))


def kept_artifacts(artifacts: Iterable[ArtifactFact], current: Mapping[int, int | None],
                   keep: Mapping[int, int]) -> set[int]:
    """Ids of the artifacts every environment keeps.

    Per environment: the running artifact (``current[env]``), every artifact still being
    built (pending, building: a deploy owns it), and the ``keep[env]`` newest other READY
    artifacts -- the rollback targets. Failed and pruned artifacts are never kept.
    """
    by_env: dict[int, list[ArtifactFact]] = {}
    out: set[int] = set()
    for a in artifacts:
        if a.status in ("pending", "building"):
            out.add(a.id)
        by_env.setdefault(a.environment_id, []).append(a)
    for env_id, rows in by_env.items():
        running = current.get(env_id)
        if running is not None:
            out.add(int(running))
        ready = sorted((a for a in rows if a.status == "ready" and a.id != running),
                       key=lambda a: a.id, reverse=True)
        out.update(a.id for a in ready[:clamp_keep(keep.get(env_id, DEFAULT_KEEP))])
    return out


def prunable_artifacts(artifacts: Iterable[ArtifactFact], kept: set[int]) -> list[ArtifactFact]:
    """READY artifacts no environment keeps, oldest first."""
    return sorted((a for a in artifacts if a.status == "ready" and a.id not in kept),
                  key=lambda a: a.id)


def registry_prunable(artifacts: Iterable[ArtifactFact], kept: set[int]) -> list[ArtifactFact]:
    """Of :func:`prunable_artifacts`, those with a manifest in a registry to delete."""
    return [a for a in prunable_artifacts(artifacts, kept) if a.registry_ref]


# --------------------------------------------------------------------------- images

def plan_images(images: Iterable[ImageFact], containers: Iterable[ContainerFact],
                artifacts: Iterable[ArtifactFact], kept: set[int]) -> list[Removal]:
    """Keystone images to remove: not a kept artifact's, used by no container at all.

    An image is a kept artifact's when its id is the artifact's recorded image id or one of
    its references names the artifact's digest. Images without Keystone's label are never
    candidates; neither is an image any container (Keystone's or not, running or stopped)
    was created from.
    """
    artifacts = list(artifacts)
    kept_ids = {a.image_id for a in artifacts if a.id in kept and a.image_id}
    kept_refs = {a.registry_ref for a in artifacts if a.id in kept and a.registry_ref}
    kept_digests = {r.partition("@")[2] for r in kept_refs if "@" in r}
    by_image_id = {a.image_id: a for a in artifacts if a.image_id}
    by_digest = {a.registry_ref.partition("@")[2]: a for a in artifacts
                 if a.registry_ref and "@" in a.registry_ref}
    in_use = {c.image_id for c in containers}
    out: list[Removal] = []
    for image in images:
        if not image.keystone or image.id in kept_ids or image.id in in_use:
            continue
        digests = {d.partition("@")[2] for d in image.repo_digests}
        if digests & kept_digests:
            continue
        artifact = by_image_id.get(image.id) or next(
            (by_digest[d] for d in sorted(digests) if d in by_digest), None)
        if image.dangling:
            reason = "dangling Keystone image"
        elif artifact is not None:
            reason = f"artifact #{artifact.id} is older than the artifacts kept"
        else:
            # Built by Keystone but not an artifact this installation knows (another
            # Keystone on the same server, a database restored from before it): not ours
            # to judge, so it stays.
            continue
        out.append(Removal("image", image.id, reason, image.references, image.size,
                           artifact.id if artifact is not None else None))
    return out


# --------------------------------------------------------------------------- containers

def plan_containers(containers: Iterable[ContainerFact],
                    replica_status: Mapping[int, str]) -> list[Removal]:
    """Stopped Keystone containers of replicas Keystone removed or marked failed (or whose
    row is gone). A stopped container of a replica still on record (a stopped service that
    may start again) stays, and so does every container without Keystone's label."""
    out: list[Removal] = []
    for c in containers:
        if not c.keystone or c.state not in STOPPED_STATES:
            continue
        replica = (c.labels or {}).get(REPLICA_LABEL, "")
        if not _ID_RE.fullmatch(replica or ""):
            continue
        status = replica_status.get(int(replica))
        if status is not None and status not in GONE_REPLICA_STATUSES:
            continue
        why = "its replica is gone" if status is None else f"its replica is {status}"
        out.append(Removal("container", c.id, f"stopped container {c.name}: {why}", (c.id,)))
    return out


# --------------------------------------------------------------------------- directories

def plan_directories(directories: Iterable[DirectoryFact], *, active_hashes: set[str],
                     service_ids: set[int], used_dirs: set[str], own_hash: str,
                     now: dt.datetime, grace: dt.timedelta = DIRECTORY_GRACE) -> list[Removal]:
    """Directories to remove, each older than ``grace`` (by mtime):

    * ``/home/keystone/operations/<hash>`` of an operation that is no longer active;
    * ``/home/keystone/services/<id>`` of a service that no longer exists;
    * ``/home/keystone/services/<id>/<blue|green>`` that no present replica uses.

    Anything else under those roots (a name that is not a hash or an id) is left alone.
    """
    out: list[Removal] = []
    for d in directories:
        if now - d.mtime < grace:
            continue
        path = d.path.rstrip("/")
        if path.startswith(OPERATIONS_ROOT + "/"):
            name = path[len(OPERATIONS_ROOT) + 1:]
            if "/" in name or not _HASH_RE.fullmatch(name) or name == own_hash \
                    or name in active_hashes:
                continue
            out.append(Removal("directory", path, "operation directory of a finished operation"))
        elif path.startswith(SERVICES_ROOT + "/"):
            parts = path[len(SERVICES_ROOT) + 1:].split("/")
            if not parts or not _ID_RE.fullmatch(parts[0]):
                continue
            sid = int(parts[0])
            if len(parts) == 1 and sid not in service_ids:
                out.append(Removal("directory", path, f"service {sid} no longer exists"))
            elif len(parts) == 2 and parts[1] in SLOT_NAMES and sid in service_ids \
                    and path not in used_dirs:
                out.append(Removal("directory", path, "replica directory no replica uses"))
    return out


# --------------------------------------------------------------------------- build cache

def build_cache_excess(size_bytes: int | None, cap: int = BUILD_CACHE_CAP) -> int:
    """Bytes of build cache above ``cap`` (0: nothing to prune)."""
    if not size_bytes or size_bytes <= cap:
        return 0
    return int(size_bytes - cap)


# --------------------------------------------------------------------------- parsing facts

def parse_images(text: str) -> list[ImageFact]:
    """``docker image inspect`` JSON (a list) -> facts; empty input -> []."""
    data = _json_list(text)
    out = []
    for item in data:
        cfg = item.get("Config") or {}
        out.append(ImageFact(id=str(item.get("Id") or ""),
                             repo_tags=tuple(t for t in item.get("RepoTags") or ()
                                             if t and t != "<none>:<none>"),
                             repo_digests=tuple(d for d in item.get("RepoDigests") or ()
                                                if d and not d.startswith("<none>")),
                             labels=dict(cfg.get("Labels") or {}),
                             size=int(item.get("Size") or 0)))
    seen: set[str] = set()
    return [i for i in out if i.id and not (i.id in seen or seen.add(i.id))]


def parse_containers(text: str) -> list[ContainerFact]:
    """``docker container inspect`` JSON (a list) -> facts."""
    out = []
    for item in _json_list(text):
        cfg = item.get("Config") or {}
        state = item.get("State") or {}
        out.append(ContainerFact(id=str(item.get("Id") or ""),
                                 name=str(item.get("Name") or "").lstrip("/"),
                                 image_id=str(item.get("Image") or ""),
                                 state=str(state.get("Status") or ""),
                                 labels=dict(cfg.get("Labels") or {})))
    return [c for c in out if c.id]


def parse_directories(text: str) -> list[DirectoryFact]:
    """``find ... -printf '%p\\t%T@\\n'`` lines -> facts (unreadable lines are skipped)."""
    out = []
    for line in (text or "").splitlines():
        path, _, stamp = line.rpartition("\t")
        try:
            when = dt.datetime.fromtimestamp(float(stamp), dt.timezone.utc).replace(tzinfo=None)
        except (ValueError, OverflowError, OSError):
            continue
        if path:
            out.append(DirectoryFact(path, when))
    return out


_SIZE_RE = re.compile(r"\s*([0-9.]+)\s*([kKMGT]?i?B)\s*")
_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def parse_size(text: str) -> int:
    """Bytes of a Docker CLI size (``1.2GB``, ``512kB``, ``0B``); 0 when unreadable."""
    m = _SIZE_RE.fullmatch(text or "")
    if not m:
        return 0
    return int(float(m.group(1)) * _UNITS.get(m.group(2), 1))


def parse_build_cache(text: str) -> int:
    """``docker system df --format '{{.Type}}\\t{{.Size}}'`` -> bytes of build cache."""
    for line in (text or "").splitlines():
        kind, _, size = line.partition("\t")
        if kind.strip().lower() == "build cache":
            return parse_size(size.strip())
    return 0


def parse_df_used(text: str) -> tuple[int, int]:
    """(used bytes, available bytes) from ``df -P -k`` output's first data line."""
    for line in (text or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[2].isdigit() and parts[3].isdigit():
            return int(parts[2]) * 1024, int(parts[3]) * 1024
    return 0, 0


def _json_list(text: str) -> list[dict]:
    text = (text or "").strip()
    if not text:
        return []
    start = text.find("[")
    try:
        data = json.loads(text[start:] if start >= 0 else text)
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


# --------------------------------------------------------------------------- deploy fit

def deploy_fits(free_bytes: int | None, image_bytes: int | None,
                margin: float = 1.2) -> tuple[bool, str]:
    """Whether an image of ``image_bytes`` fits in ``free_bytes`` with ``margin`` (an
    unpacked pull or a build needs about its size again in layers being written).
    Unknown numbers never refuse. Returns (fits, the sentence with the numbers)."""
    if free_bytes is None or not image_bytes:
        return True, ""
    need = int(image_bytes * margin)
    text = (f"needs about {human_bytes(need)} (image {human_bytes(image_bytes)} x {margin:g}) "
            f"and {human_bytes(free_bytes)} is free")
    return free_bytes >= need, text


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


__all__ = ["DEFAULT_KEEP", "IMAGE_LABEL", "CONTAINER_LABEL", "ArtifactFact", "ImageFact",
           "ContainerFact", "DirectoryFact", "Removal", "kept_artifacts", "prunable_artifacts",
           "registry_prunable", "plan_images", "plan_containers", "plan_directories",
           "build_cache_excess", "parse_images", "parse_containers", "parse_directories",
           "parse_build_cache", "parse_size", "parse_df_used", "deploy_fits", "clamp_keep",
           "human_bytes", "DISK_PRESSURE_PERCENT"]
