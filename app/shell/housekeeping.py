"""Docker and file commands of the housekeeping operation (app.housekeeping), as values.

Pure, like the rest of app.shell: every id, reference and path is a quoted part after
``--``; selection is by Keystone's labels (``--filter label=...``), never by name.
"""
from __future__ import annotations

from typing import Sequence

from app.shell import Command, Raw, cmd, end_of_options, pipe

INSPECT_SIZES = "{{.Type}}\t{{.Size}}"


def keystone_images(label: str) -> Command:
    """``docker image inspect`` of every image carrying ``label`` (JSON list; empty when none)."""
    return pipe(cmd("docker", "image", "ls", "--quiet", "--no-trunc", "--filter",
                    f"label={label}"),
                cmd("xargs", "-r", "docker", "image", "inspect"))


def all_containers() -> Command:
    """``docker container inspect`` of every container, running or not, Keystone's or not
    (an image any container uses is never removed)."""
    return pipe(cmd("docker", "container", "ls", "--all", "--quiet", "--no-trunc"),
                cmd("xargs", "-r", "docker", "container", "inspect"))


def directories(*roots: str) -> Command:
    """``<path>\\t<mtime>`` of the directories one and two levels under ``roots``."""
    return cmd("find", *roots, "-mindepth", "1", "-maxdepth", "2", "-type", "d",
               "-printf", "%p\\t%T@\\n", Raw("2>/dev/null"))


def docker_root() -> Command:
    return cmd("docker", "info", "--format", "{{.DockerRootDir}}")


def disk_usage(path: str) -> Command:
    return cmd("df", "-P", "-k", end_of_options(), path)


def build_cache_size() -> Command:
    return cmd("docker", "system", "df", "--format", INSPECT_SIZES)


def prune_build_cache(keep_bytes: int) -> Command:
    """Build cache down to ``keep_bytes`` (least recently used first)."""
    return cmd("docker", "builder", "prune", "--force", "--keep-storage", str(int(keep_bytes)))


def remove_image(references: Sequence[str]) -> Command:
    """``docker image rm`` of every reference of one image, never ``--force``: an image a
    container uses stays."""
    return cmd("docker", "image", "rm", end_of_options(), *references)


def image_exists(image_id: str) -> Command:
    """Exit 0 while the image is still there (after ``docker image rm``: did it go?)."""
    return cmd("docker", "image", "inspect", "--format", "{{.Id}}", end_of_options(), image_id)


def remove_container(container_id: str) -> Command:
    return cmd("docker", "container", "rm", "--volumes", end_of_options(), container_id)


def remove_directory(path: str) -> Command:
    return cmd("rm", "-rf", end_of_options(), path)
