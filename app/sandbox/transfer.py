"""Images into the sandbox: load local images into its servers' engines, push them to
its registry, and the sandbox's description as plain data (``keystone sandbox up``)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from . import images as img
from .docker import SandboxError, docker, docker_out, pipe
from .results import Registry, SandboxInfo, Server


def load_images(servers: Iterable[Server | str], tags: Iterable[str]) -> None:
    """Copy host images into each server's engine (`docker save | docker exec -i S docker load`).

    Skips an image a server already has with the same id, so repeated calls are cheap.
    """
    names = [s.name if isinstance(s, Server) else s for s in servers]
    tags = list(tags)

    def one(name: str) -> None:
        for tag in tags:
            want = img.image_id(tag)
            have = docker("exec", name, "docker", "image", "inspect", "--format", "{{.Id}}", tag, check=False)
            if have.returncode == 0 and have.stdout.strip() == want:
                continue
            pipe(["docker", "save", tag], ["docker", "exec", "-i", name, "docker", "load", "-q"], timeout=900)

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        for f in [pool.submit(one, n) for n in names]:
            f.result()


def push_image(registry: Registry, tag: str, repository: str | None = None, login: bool = True) -> str:
    """Tag and push a host image to the sandbox registry; return `url/repo@sha256:...`.

    `repository` ("name:tag") defaults to the image's own name, so
    keystone-sandbox/caddy:2 becomes 127.0.0.1:PORT/keystone-sandbox/caddy:2.
    """
    repo_tag = tag if repository is None else repository
    if ":" not in repo_tag.rsplit("/", 1)[-1]:
        repo_tag += ":latest"
    target = f"{registry.url}/{repo_tag}"
    if login:
        registry.login()
    docker("tag", tag, target)
    docker("push", target, timeout=900)
    digests = json.loads(docker_out("image", "inspect", "--format", "{{json .RepoDigests}}", target) or "[]")
    repo = target.rsplit(":", 1)[0]
    for d in digests:
        if d.startswith(repo + "@"):
            return d
    raise SandboxError(f"no digest recorded for {target}")


def push_stand_ins(registry: Registry, keys: Sequence[str] = img.STAND_IN_IMAGES) -> dict[str, str]:
    """Build the driver stand-in images and push them to the registry.

    Returns {key: "127.0.0.1:PORT/keystone-sandbox/NAME:TAG"}; the digest-pinned
    reference can be read with `docker inspect` or resolved through the registry.
    """
    built = img.ensure_images(tuple(keys))
    registry.login()
    # Serial on purpose: pushing is gzip-bound (~13 s for the four on 2 cores
    # either way) and parallel pushes of images sharing the base layer race.
    for tag in built.values():
        push_image(registry, tag, None, False)
    return {key: f"{registry.url}/{tag}" for key, tag in built.items()}


def info_as_dict(info: SandboxInfo) -> dict:
    """JSON-friendly form of SandboxInfo (paths as strings)."""
    def conv(o):
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    d = conv(asdict(info))
    d["registry"]["url"] = info.registry.url
    d["git"]["sample_repo_url"] = info.git.sample_repo_url
    if info.acme is not None:
        d["acme"]["directory_url"] = info.acme.directory_url
    return d
