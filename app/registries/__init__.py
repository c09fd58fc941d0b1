"""Container registries: validation, image naming, and the docker login/logout commands.

Credentials are stored encrypted (``Registry.password``). They are used only
inside an operation and only through ``docker login --password-stdin``: the
password is sent on the command's stdin, never in argv (which ``ps`` and the
stored step script would show) and never in a log line. Each operation logs in
with its own ``DOCKER_CONFIG`` directory inside the operation's working
directory on the server, so the credential is never written to the server
user's ``~/.docker/config.json``; ``docker logout`` runs in a ``finally`` and
the directory is removed with the operation directory.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from app import shell
from app.models.enums import RegistryType
from app.registries.references import normalise_reference

HOST_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)"
    r"(?::[0-9]{1,5})?$")
PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")  # used with fullmatch
USERNAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,255}")

DEFAULT_URLS = {
    RegistryType.GHCR: "ghcr.io",
    RegistryType.DOCKERHUB: "docker.io",
}


class RegistryError(ValueError):
    """An invalid registry setting; the message names the field."""


def normalise_url(value: str, registry_type: RegistryType | str = RegistryType.GENERIC) -> str:
    """``host[:port]`` of a registry (a scheme or trailing slash the user pasted is dropped)."""
    registry_type = RegistryType(registry_type)
    text = (value or "").strip()
    if not text:
        text = DEFAULT_URLS.get(registry_type, "")
    if not text:
        raise RegistryError("url: the registry's address is required (host or host:port)")
    text = re.sub(r"^https?://", "", text, flags=re.I).rstrip("/")
    if text.startswith("-") or not HOST_RE.fullmatch(text) or len(text) > 255:
        raise RegistryError(f"url: {value!r} is not a registry address (host or host:port)")
    if ":" in text and not 1 <= int(text.rsplit(":", 1)[1]) <= 65535:
        raise RegistryError("url: the port must be between 1 and 65535")
    if registry_type == RegistryType.DOCKERHUB and text in ("index.docker.io", "registry-1.docker.io"):
        text = "docker.io"
    return text.lower()


def normalise_namespace(value: str | None, registry_type: RegistryType | str,
                        username: str | None = None) -> str | None:
    registry_type = RegistryType(registry_type)
    text = (value or "").strip().strip("/").lower()
    if not text and registry_type in (RegistryType.GHCR, RegistryType.DOCKERHUB, RegistryType.GITEA):
        text = (username or "").strip().lower()
        if not text:
            raise RegistryError("namespace: the owner (user or organisation) images are pushed under "
                                "is required for this registry type")
    if not text:
        return None
    for part in text.split("/"):
        if not PATH_COMPONENT_RE.fullmatch(part):
            raise RegistryError(f"namespace: {value!r} may only contain lower-case letters, digits "
                                "and . _ - separated by /")
    return text


def validate_username(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if text.startswith("-") or not USERNAME_RE.fullmatch(text):
        raise RegistryError("username: letters, digits and . _ @ + - only")
    return text


def repository_for(registry, application_name: str, environment_name: str) -> str:
    """``host[:port]/namespace/app-env``: where an environment's images are pushed.

    Normalised (:func:`app.registries.references.normalise_reference`) to the
    name Docker reports in RepoDigests: ``acme/shop-prod`` on Docker Hub, not
    ``docker.io/acme/shop-prod``.
    """
    name = f"{application_name}-{environment_name}".lower()
    if not PATH_COMPONENT_RE.fullmatch(name):
        raise RegistryError(f"{name!r} cannot be an image name")
    parts = [registry.url]
    if registry.namespace:
        parts.append(registry.namespace)
    parts.append(name)
    return normalise_reference("/".join(parts))


def login_server(registry) -> str:
    return registry.url


@dataclass(frozen=True)
class RegistryAuth:
    """What a step needs to log in: the command, the password for stdin, and the logout."""

    login: shell.Command
    password: shell.Secret | None
    logout: shell.Command


def docker_config_env(command: shell.Command, docker_config_dir: str) -> shell.Command:
    return shell.env(command, DOCKER_CONFIG=docker_config_dir)


def auth_commands(registry, docker_config_dir: str) -> RegistryAuth | None:
    """``docker login --username U --password-stdin HOST`` (password on stdin) and its logout.

    None when the registry has no credentials (an open registry).
    """
    if not registry.username or not registry.password:
        return None
    server = login_server(registry)
    login = docker_config_env(
        shell.cmd("docker", "login", "--username", registry.username, "--password-stdin",
                  shell.end_of_options(), server), docker_config_dir)
    logout = docker_config_env(shell.cmd("docker", "logout", shell.end_of_options(), server),
                               docker_config_dir)
    return RegistryAuth(login=login, password=shell.Secret(registry.password, "registry password"),
                        logout=logout)
