"""Docker commands of a build, as app.shell values (pure: no I/O).

Every value (tags, paths, refs, the commit) is a quoted part, and ``--``
separates options from operands, so no stored value can become an option or
shell syntax.
"""
from __future__ import annotations

from app import shell

INSPECT_ID = "{{.Id}}"
INSPECT_REPO_DIGESTS = "{{json .RepoDigests}}"


def mkdir_private(path: str) -> shell.Command:
    return shell.cmd("mkdir", "-p", "-m", "0700", shell.end_of_options(), path)


def extract_source(tarball: str, context_dir: str) -> shell.Command:
    return shell.and_then(
        shell.cmd("mkdir", "-p", "-m", "0700", shell.end_of_options(), context_dir),
        shell.cmd("tar", "-x", "--no-same-owner", "--no-same-permissions", "-f", tarball,
                  "-C", context_dir),
        shell.cmd("rm", "-f", shell.end_of_options(), tarball),
    )


BUILD_CPU_SHARES = 128
"""CPU weight of a build's containers (Docker's default, and every serving container's, is
1024): a build on a server that also serves gets about an eighth of a contended CPU, the
app, its database and the gateway the rest; an idle CPU is still the build's in full."""


def docker_build(dockerfile: str, context_dir: str, tag: str,
                 build_args: dict[str, str]) -> shell.Command:
    """The image build, at low CPU weight so it cannot starve what serves on the server.

    ``--cpu-shares`` (cgroup v2: ``cpu.weight``) applies to every ``RUN`` step's
    container with Docker's classic builder, which ``DOCKER_BUILDKIT=0`` selects
    on every Engine version (BuildKit ignores per-build resource flags).
    The commit, config hash and environment arrive as build arguments, which the managed
    Dockerfile turns into its one ``LABEL`` instruction: ``--label`` would add one more
    uncached build step per label.
    """
    parts: list[shell.Part] = ["docker", "build", "--cpu-shares", str(BUILD_CPU_SHARES),
                               "--file", dockerfile, "--tag", tag]
    for key, value in sorted(build_args.items()):
        parts += ["--build-arg", shell.concat(key, "=", value)]
    parts += [shell.end_of_options(), context_dir]
    return shell.env(shell.cmd(*parts), DOCKER_BUILDKIT="0")


def image_id(ref: str) -> shell.Command:
    return shell.cmd("docker", "image", "inspect", "--format", INSPECT_ID, shell.end_of_options(), ref)


def repo_digests(ref: str) -> shell.Command:
    return shell.cmd("docker", "image", "inspect", "--format", INSPECT_REPO_DIGESTS,
                     shell.end_of_options(), ref)


def tag(source: str, target: str) -> shell.Command:
    return shell.cmd("docker", "tag", shell.end_of_options(), source, target)


def push(ref: str, docker_config: str | None = None) -> shell.Command:
    command = shell.cmd("docker", "push", shell.end_of_options(), ref)
    return shell.env(command, DOCKER_CONFIG=docker_config) if docker_config else command


def pull(ref: str, docker_config: str | None = None) -> shell.Command:
    command = shell.cmd("docker", "pull", shell.end_of_options(), ref)
    return shell.env(command, DOCKER_CONFIG=docker_config) if docker_config else command


def remove_dir(path: str) -> shell.Command:
    return shell.cmd("rm", "-rf", shell.end_of_options(), path)
