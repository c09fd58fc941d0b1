"""Compose rendering: documents built as Python data, dumped with ``yaml.safe_dump``.

Never string-templated: a value can only ever be a YAML scalar, so a name or
an env value cannot add keys. The output is the plain Compose spec that both
docker-compose v1.29 and Compose v2 accept: ``cpus`` / ``mem_limit`` /
``memswap_limit`` (no Swarm ``deploy.resources``), no top-level ``name`` or
``version``, the project name given with ``-p``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import yaml

from app.drivers.base import (DOCKER_NETWORK, LABEL_PREFIX, RenderContext, RenderedCompose,
                              service_alias, service_dir)
from app.drivers.envfile import render_env_file, split_environment
from app.shell import Command, and_then, cmd, end_of_options

if TYPE_CHECKING:  # pragma: no cover
    from app.drivers.base import Driver
    from app.models import Service

ENV_FILE_NAME = ".env"
INTERPOLATION_ENV_NAME = "compose.env"
INTERPOLATION_ENV_TEXT = ("# Keystone: intentionally empty. Passed to Compose with --env-file so\n"
                          "# the service's .env is never used for interpolation or COMPOSE_*.\n")
LOGGING = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}


def escape_dollars(value: str) -> str:
    """Compose-file interpolation escape: ``$`` -> ``$$`` (v1 and v2 agree on this one)."""
    return value.replace("$", "$$")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits aliases and writes multi-line strings as block literals."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: D401
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str):
    style = None
    # Block literals keep newlines readable; they cannot carry trailing spaces
    # on a line or a leading space safely, so fall back to quoted form there.
    if "\n" in data and not any(line != line.rstrip(" \t") for line in data.split("\n")) \
            and not data.startswith((" ", "\t")) and "\r" not in data:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096)


def labels(service: "Service", ctx: RenderContext, role: str | None = None) -> dict[str, str]:
    out = {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.service": str(service.id),
        f"{LABEL_PREFIX}.service-type": service.type,
        f"{LABEL_PREFIX}.replica": "" if ctx.replica_id is None else str(ctx.replica_id),
        f"{LABEL_PREFIX}.operation": "" if ctx.operation_id is None else str(ctx.operation_id),
    }
    if role:
        out[f"{LABEL_PREFIX}.role"] = role
    out.update({k: escape_dollars(str(v)) for k, v in ctx.extra_labels.items()})
    return out


def network_block(aliases: list[str]) -> dict[str, Any]:
    return {DOCKER_NETWORK: {"aliases": list(dict.fromkeys(aliases))}}


def base_service(driver: "Driver", service: "Service", ctx: RenderContext, *,
                 role: str | None = None, aliases: list[str] | None = None) -> dict[str, Any]:
    """Fields every Keystone container has; drivers add command, ports, volumes, healthcheck.

    ``ctx.environment`` is split: env-file-safe values stay in ``.env``, the
    rest land here in ``environment:`` with ``$`` doubled (app.drivers.envfile).
    """
    _, env_in_compose = split_environment(ctx.environment)
    entry: dict[str, Any] = {
        "image": ctx.image,
        "container_name": ctx.container_name,
        "restart": driver.restart_policy,
        "env_file": [ENV_FILE_NAME],
    }
    if env_in_compose:
        entry["environment"] = {k: escape_dollars(v) for k, v in sorted(env_in_compose.items())}
    entry.update(ctx.resources.compose())
    if driver.stop_signal:
        entry["stop_signal"] = driver.stop_signal
    if driver.stop_grace_period:
        entry["stop_grace_period"] = driver.stop_grace_period
    entry["labels"] = labels(service, ctx, role)
    entry["logging"] = LOGGING
    entry["networks"] = network_block(aliases if aliases is not None else [service_alias(service)])
    return entry


def escape_command(entry: dict[str, Any]) -> dict[str, Any]:
    """``$`` in command/entrypoint arguments is Compose interpolation too: double it."""
    for key in ("command", "entrypoint"):
        if isinstance(entry.get(key), list):
            entry[key] = [escape_dollars(str(a)) for a in entry[key]]
    return entry


def compose_document(services: dict[str, dict[str, Any]],
                     volumes: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"services": services}
    if volumes:
        # Explicit names: without `name:` Compose would prefix the project name,
        # and a new project name (a replica) would silently get an empty volume.
        doc["volumes"] = {v: {"name": v} for v in volumes}
    doc["networks"] = {DOCKER_NETWORK: {"external": True, "name": DOCKER_NETWORK}}
    return doc


def render_service_compose(driver: "Driver", service: "Service", ctx: RenderContext,
                           directory: str | None = None) -> RenderedCompose:
    """Render a single-container service (Postgres, Valkey, Caddy) as compose.yml + .env."""
    file_env, _ = split_environment(ctx.environment)
    entry = _reorder(driver.compose_service(service, ctx))
    vols = [v.volume_name(service.id) for v in driver.volumes_for(service)]
    doc = compose_document({driver.type: entry}, vols)
    return RenderedCompose(
        project_name=ctx.project_name,
        compose=doc,
        compose_yaml=dump_yaml(doc),
        env_file=render_env_file(file_env, header=f"Keystone: environment of service {service.id}"
                                 f" ({driver.type}). Generated; edits are overwritten."),
        directory=directory or service_dir(service.id),
    )


_ORDER = ["image", "container_name", "command", "entrypoint", "restart", "env_file",
          "environment"]


def _reorder(entry: dict[str, Any]) -> dict[str, Any]:
    entry = escape_command(entry)
    out = {k: entry[k] for k in _ORDER if k in entry}
    out.update({k: v for k, v in entry.items() if k not in out})
    return out


# --------------------------------------------------------------------------- commands

def compose_cmd(directory: str, project_name: str, *args: str) -> Command:
    """``docker compose`` with every path and the project name explicit (no .env surprises)."""
    return cmd("docker", "compose", "--project-name", project_name,
               "--project-directory", directory,
               "-f", f"{directory}/compose.yml",
               "--env-file", f"{directory}/{INTERPOLATION_ENV_NAME}", *args)


NETWORK_LOCK = ".keystone-network.lock"
"""flock(1)'s lock file for creating the network, relative to the SSH user's home directory
(every Keystone command of a server runs as its one management user)."""


def ensure_network_cmd() -> Command:
    """Create the server's shared network if missing, one creator at a time.

    Docker lets two concurrent ``docker network create`` of one name both succeed: two
    networks named ``keystone``, and from then on every ``compose up`` fails with "network
    keystone is ambiguous". Two workers deploying services to one server at once did that
    (the wizard's "Attach recommended services"), so the check-then-create runs under
    ``flock`` on the server.
    """
    from app.shell import Raw, or_else, sh_c
    inspect = cmd("docker", "network", "inspect", DOCKER_NETWORK, Raw(">/dev/null"), Raw("2>&1"))
    create = cmd("docker", "network", "create", "--label", f"{LABEL_PREFIX}.managed=true",
                 DOCKER_NETWORK, Raw(">/dev/null"))
    return cmd("flock", "-w", "120", NETWORK_LOCK, sh_c(or_else(inspect, create)))


def project_files(rendered: RenderedCompose) -> list[tuple[str, bytes]]:
    """A project's files (all written 0600): compose.yml, its .env and the empty
    interpolation env, as ``[(path on the server, content)]``."""
    return [(rendered.compose_path, rendered.compose_yaml.encode()),
            (rendered.env_path, rendered.env_file.encode()),
            (rendered.interpolation_env_path, INTERPOLATION_ENV_TEXT.encode())]


def project_archive(rendered: RenderedCompose) -> bytes:
    """:func:`project_files` as an uncompressed tar (names relative to the project's
    directory, mode 0600, no owner): what a new replica's start command unpacks from its
    standard input, so its files travel with the command, never in its arguments."""
    import io
    import posixpath
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, data in project_files(rendered):
            if posixpath.dirname(path) != rendered.directory:
                raise ValueError(f"{path} is not in the project's directory")
            info = tarfile.TarInfo(posixpath.basename(path))
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack_project_cmd(directory: str) -> Command:
    """Make the project's directory and unpack :func:`project_archive` from stdin into it."""
    return and_then(cmd("mkdir", "-p", end_of_options(), directory),
                    cmd("tar", "-x", "-p", "--no-same-owner", "-f", "-", "-C", directory))


def log_project_files(step, rendered: RenderedCompose) -> None:
    """What a project's files are, on ``step``'s log: path and size, never the content."""
    for path, data in project_files(rendered):
        step.log(f"writing {path} ({len(data)} bytes, mode 0600)")


def write_project(step, rendered: RenderedCompose, timeout: float = 150) -> None:
    """The server's network (created if missing) and the project's files, in one round
    trip: the files travel on the command's stdin, never in its arguments (``step`` is an
    operation step)."""
    log_project_files(step, rendered)
    step.run(and_then(ensure_network_cmd(), unpack_project_cmd(rendered.directory)),
             stdin=project_archive(rendered), pty=False, timeout=timeout)
