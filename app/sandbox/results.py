"""What a sandbox is made of, as Keystone and the tests see it: its servers, registry
and git host (results of ``keystone sandbox up``). Plain data plus the few ``docker
exec`` actions each offers; :mod:`.sandbox` creates them, :mod:`.sample` pushes the
sample application to the git host.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .docker import SandboxError, docker, docker_out

SAMPLE_REPO = "sample.git"


@dataclass
class Server:
    """A sandbox server as Keystone sees a real one: an SSH endpoint and a root key."""

    name: str
    host: str
    ssh_port: int
    http_port: int
    https_port: int
    private_ip: str
    root_key_path: Path
    host_key: str  # "ssh-ed25519 AAAA..." (the server's public host key)
    host_key_fingerprint: str  # "SHA256:..." as `ssh-keygen -lf` prints it
    user: str = "root"
    has_docker: bool = True
    root_password: str | None = None  # only the bare server has one

    @property
    def container(self) -> str:
        return self.name

    def exec(self, *args: str, input: bytes | str | None = None, check: bool = True,
             timeout: float | None = 300) -> subprocess.CompletedProcess:
        """Run a command in the server out of band (`docker exec`), e.g. to inspect it in a test."""
        flags = ["-i"] if input is not None else []
        return docker("exec", *flags, self.name, *args, input=input, check=check, timeout=timeout)


@dataclass
class Registry:
    """The sandbox registry; `url` works from the host and from inside every server."""

    host: str
    port: int
    username: str
    password: str
    private_ip: str
    container: str

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def private_url(self) -> str:
        return f"{self.private_ip}:5000"

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.url}/{repository}:{tag}"

    def login(self) -> None:
        """`docker login` on the host (credentials go to ~/.docker/config.json)."""
        docker("login", "--username", self.username, "--password-stdin", self.url, input=self.password)


@dataclass
class GitHost:
    """A git host over SSH where deploy keys are authorised read-only per repository."""

    host: str
    port: int
    private_ip: str
    container: str
    admin_key_path: Path
    known_hosts_path: Path
    host_key: str
    host_key_fingerprint: str
    sample_repo: str = SAMPLE_REPO

    def repo_url(self, repo: str = SAMPLE_REPO) -> str:
        return f"ssh://git@{self.host}:{self.port}/{_repo_name(repo)}"

    @property
    def sample_repo_url(self) -> str:
        return self.repo_url(self.sample_repo)

    def authorize_key(self, public_key: str, repo: str = SAMPLE_REPO, read_only: bool = True) -> None:
        """Allow `public_key` to fetch (only) `repo`: a forced-command authorized_keys entry."""
        docker("exec", "-i", self.container, "/usr/local/sbin/keystone-authorize", _repo_name(repo),
               "ro" if read_only else "rw", input=public_key.strip() + "\n")

    def revoke_key(self, public_key: str) -> None:
        """Remove every entry for `public_key` (matched on its base64 blob)."""
        parts = public_key.split()
        if len(parts) < 2:
            raise SandboxError("not an OpenSSH public key")
        blob = parts[1]
        current = docker_out("exec", self.container, "cat", "/srv/git/.ssh/authorized_keys")
        kept = [line for line in current.splitlines() if blob not in line.split()]
        docker("exec", "-i", self.container, "sh", "-c",
               'cat > /srv/git/.ssh/authorized_keys.new && mv /srv/git/.ssh/authorized_keys.new '
               '/srv/git/.ssh/authorized_keys && chown git:git /srv/git/.ssh/authorized_keys && '
               'chmod 600 /srv/git/.ssh/authorized_keys',
               input="\n".join(kept) + ("\n" if kept else ""))

    def create_repo(self, repo: str) -> str:
        """Create an empty bare repository (no-op when it exists); return its URL."""
        name = _repo_name(repo)
        docker("exec", "-u", "git", self.container, "sh", "-c",
               'test -d "/srv/git/$1" || git init -q --bare -b main "/srv/git/$1"', "sh", name)
        return self.repo_url(name)

    def install_webhook(self, repo: str, url: str, secret: str) -> None:
        """Make pushes to ``repo`` POST a Gitea-signed push event to ``url`` (a real
        ``post-receive`` hook in the git container, like a forge's webhook); an empty
        ``url`` removes it. The secret goes in on stdin, never on a command line."""
        name = _repo_name(repo)
        self.create_repo(name)
        hook = (Path(__file__).parent / "images" / "githost" / "keystone-post-receive").read_text()
        docker("exec", "-i", "-u", "git", self.container, "sh", "-c",
               'cat > "/srv/git/$1/hooks/post-receive" && chmod 0755 "/srv/git/$1/hooks/post-receive"',
               "sh", name, input=hook)
        docker("exec", "-i", "-u", "git", self.container, "sh", "-c",
               'IFS= read -r url; IFS= read -r secret; cd "/srv/git/$1" && '
               'git config keystone.webhook-url "$url" && git config keystone.webhook-secret "$secret"',
               "sh", name, input=f"{url}\n{secret}\n")

    def git_env(self, key_path: Path | None = None) -> dict[str, str]:
        """Environment for `git` on the host authenticating with `key_path` (default: the admin key)."""
        return {**os.environ, "GIT_SSH_COMMAND": ssh_command(key_path or self.admin_key_path, self.known_hosts_path)}


@dataclass
class AcmeCA:
    """The sandbox's ACME CA: Pebble (Let's Encrypt's test CA) and pebble-challtestsrv's DNS.

    Gateways reach ``directory_url`` on the private network and trust Pebble's HTTPS
    through ``server_root_pem`` (Caddy's ``acme_ca_root``); Pebble validates HTTP-01 on
    port 80 of whatever address :meth:`set_a` gave the name. A client that should
    trust the issued certificates trusts :meth:`issuing_root` and nothing else.
    """

    private_ip: str
    container: str
    directory_port: int  # Pebble's ACME directory, published on 127.0.0.1
    management_port: int  # Pebble's management API (roots, intermediates)
    dns_port: int  # pebble-challtestsrv's management API (A records)
    server_root_pem: str  # the CA of Pebble's own HTTPS certificate

    @property
    def directory_url(self) -> str:
        """The ACME directory as a gateway on a sandbox server reaches it."""
        return f"https://{self.private_ip}:14000/dir"

    def _ssl_context(self):
        import ssl
        ctx = ssl.create_default_context(cadata=self.server_root_pem)
        ctx.check_hostname = False  # Pebble's certificate names its private address
        return ctx

    def _request(self, port: int, path: str, body: dict | None = None, https: bool = True) -> str:
        import json as _json
        import urllib.request
        scheme = "https" if https else "http"
        data = _json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=10,
                                    context=self._ssl_context() if https else None) as resp:
            return resp.read().decode()

    def set_a(self, host: str, addresses: list[str]) -> None:
        """Make ``host`` resolve to ``addresses`` for Pebble's validation (DNS A records)."""
        self._request(self.dns_port, "/add-a", {"host": host.rstrip(".") + ".",
                                                "addresses": list(addresses)}, https=False)

    def clear_a(self, host: str) -> None:
        self._request(self.dns_port, "/clear-a", {"host": host.rstrip(".") + "."}, https=False)

    def issuing_root(self) -> str:
        """PEM of the root that signs every certificate Pebble issues (new per Pebble start)."""
        return self._request(self.management_port, "/roots/0")


@dataclass
class SandboxInfo:
    """Everything `keystone sandbox up` reports: what onboarding asks for."""

    name: str
    state_dir: Path
    network: str
    subnet: str
    servers: list[Server]
    bare: Server | None
    registry: Registry
    git: GitHost
    known_hosts_path: Path
    sample_commit: str | None = None
    running: bool = True
    images: dict[str, str] = field(default_factory=dict)  # stand-in key -> registry ref
    acme: AcmeCA | None = None


def _repo_name(repo: str) -> str:
    name = repo.strip("/")
    if not name.endswith(".git"):
        name += ".git"
    if not name or any(not (c.isalnum() or c in "._-") for c in name) or name.startswith("."):
        raise SandboxError(f"invalid repository name: {repo!r}")
    return name


def ssh_command(key_path: Path, known_hosts: Path) -> str:
    """A GIT_SSH_COMMAND pinned to one key and one known_hosts file (git runs it via sh)."""
    return " ".join([
        "ssh", "-i", shlex.quote(str(key_path)), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={shlex.quote(str(known_hosts))}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
    ])
