"""The sandbox: real servers, a registry and a git host in local containers.

Why: every Keystone feature acts on servers over SSH, so its tests, demos and
local development need real ones without a cloud account. A sandbox "server"
is a container running sshd and its own Docker Engine (Kamal's integration
suite does the same); the registry is Debian's docker-registry with htpasswd
auth; the git host is sshd + git-shell with per-key forced commands, standing
in for GitHub/Gitea deploy keys.

Everything the sandbox creates carries the label ``keystone.sandbox=<name>``
so that ``down`` removes exactly what ``up`` made, and a different name (the
tests use ``keystone-test``) never touches a developer's sandbox. Ports, keys
and passwords are kept in a JSON state file under the state directory so that
``up`` is idempotent and addresses stay stable between runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from . import images as img
from .docker import SandboxError, docker, docker_available, docker_out, run
from .results import AcmeCA, GitHost, Registry, SandboxInfo, Server
from .host import (HOST, _fingerprint, _free_port, _host_nameservers, _keygen,
                   _wait_http, _wait_ssh_banner, host_capabilities, inner_storage_driver)
from .sample import push_sample_commit
from .transfer import push_stand_ins

DEFAULT_NAME = "keystone-sandbox"
LABEL = "keystone.sandbox"
ROLE_LABEL = "keystone.sandbox.role"
CONFIG_LABEL = "keystone.sandbox.config"

# The inner engines must not use the outer engine's subnets, or attaching a
# server to the private network fails ("conflicts with existing route").
INNER_BIP = "10.210.0.1/24"
INNER_POOL = "10.211.0.0/16"


# --------------------------------------------------------------------------- sandbox

def default_state_root() -> Path:
    """$KEYSTONE_SANDBOX_DIR, else <Flask instance path>/sandbox inside an app context, else ./instance/sandbox.

    Why: the CLI, the onboarding job (RQ worker) and a developer's shell must
    all find the same keys and ports, whatever their working directory.
    """
    if os.environ.get("KEYSTONE_SANDBOX_DIR"):
        return Path(os.environ["KEYSTONE_SANDBOX_DIR"])
    try:
        from flask import current_app

        return Path(current_app.instance_path) / "sandbox"
    except (ImportError, RuntimeError):
        return Path("instance") / "sandbox"


class Sandbox:
    """Bring up, inspect and remove one named sandbox.

    >>> sb = Sandbox()                      # "keystone-sandbox", state in instance/sandbox/keystone-sandbox/
    >>> info = sb.up(servers=2)             # idempotent
    >>> info.servers[0].ssh_port, info.registry.url, info.git.sample_repo_url
    >>> sb.down()
    """

    def __init__(self, name: str = DEFAULT_NAME, state_dir: Path | str | None = None):
        if not name or any(not (c.isalnum() or c in "-_") for c in name):
            raise SandboxError(f"invalid sandbox name: {name!r}")
        self.name = name
        self._lock_fd: int | None = None
        self._lock_depth = 0
        if state_dir is None:
            state_dir = default_state_root() / name
        self.state_dir = Path(state_dir).resolve()

    # ---- names
    @property
    def network(self) -> str:
        return f"{self.name}-net"

    def server_name(self, index: int) -> str:
        return f"{self.name}-server-{index}"

    @property
    def bare_name(self) -> str:
        return f"{self.name}-bare"

    @property
    def registry_name(self) -> str:
        return f"{self.name}-registry"

    @property
    def git_name(self) -> str:
        return f"{self.name}-git"

    @property
    def acme_name(self) -> str:
        return f"{self.name}-acme"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def root_key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def admin_key_path(self) -> Path:
        return self.state_dir / "git_admin_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    # ---- locking
    @contextlib.contextmanager
    def lock(self):
        """Exclusive, re-entrant lock on this sandbox's state dir (flock).

        Why: two test sessions (or a developer and a test run) in the same tree
        must not race `docker run` on the same names, nor `down` under each other.
        """
        if self._lock_depth == 0:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield self
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

    # ---- state
    def _load_state(self) -> dict:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return {}

    def _save_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def _labels(self, role: str, config: str | None = None) -> list[str]:
        args = ["--label", f"{LABEL}={self.name}", "--label", f"{ROLE_LABEL}={role}"]
        if config:
            args += ["--label", f"{CONFIG_LABEL}={config}"]
        return args

    def _pick_subnet(self) -> str:
        """A /24 for the private network that overlaps no existing Docker network."""
        used = self._used_subnets()
        used += [ipaddress.ip_network(INNER_BIP, strict=False), ipaddress.ip_network(INNER_POOL)]
        start = int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 200
        for i in range(256):
            cand = ipaddress.ip_network(f"10.{100 + (start + i) % 100}.{(start * 7 + i) % 256}.0/24")
            if not any(cand.overlaps(u) for u in used if u.version == 4):
                return str(cand)
        raise SandboxError("no free /24 for the sandbox network")

    def _ensure_state(self, servers: int) -> dict:
        """Allocate (once) subnet, ports, passwords and keys; keep them across runs."""
        state = self._load_state()
        state.setdefault("name", self.name)
        default = self.name == DEFAULT_NAME
        taken: set[int] = set()
        for key in ("registry", "git", "bare", "acme"):
            for k, v in state.get(key, {}).items():
                if k.endswith("port"):
                    taken.add(v)
        for s in state.get("servers", {}).values():
            taken.update(v for k, v in s.items() if k.endswith("port"))

        def port(preferred: int) -> int:
            p = _free_port(taken, preferred if default else None)
            taken.add(p)
            return p

        if "registry" not in state:
            state["registry"] = {
                "port": port(5055),
                "username": "keystone",
                "password": secrets.token_urlsafe(18),
            }
        state.setdefault("git", {"port": port(2222)})
        state.setdefault("acme", {"directory_port": port(14000), "management_port": port(15000),
                                  "dns_port": port(8055)})
        state.setdefault("bare", {"ssh_port": port(2200), "http_port": port(8080),
                                  "https_port": port(8440),
                                  "root_password": secrets.token_urlsafe(12)})
        srv = state.setdefault("servers", {})
        for i in range(1, servers + 1):
            if str(i) not in srv:
                srv[str(i)] = {"ssh_port": port(2200 + i), "http_port": port(8080 + i),
                               "https_port": port(8440 + i)}
        if "subnet" not in state:
            state["subnet"] = self._pick_subnet()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        _keygen(self.root_key_path, f"keystone-sandbox-root@{self.name}")
        _keygen(self.admin_key_path, f"keystone-sandbox-git-admin@{self.name}")
        self._save_state(state)
        return state

    def _ip(self, state: dict, host: int) -> str:
        net = ipaddress.ip_network(state["subnet"])
        return str(net.network_address + host)

    # ---- containers
    def _container_config(self, name: str) -> tuple[str | None, bool]:
        proc = docker("inspect", "--format", "{{json .Config.Labels}} {{.State.Running}}", name, check=False)
        if proc.returncode != 0:
            return None, False
        labels_json, running = proc.stdout.strip().rsplit(" ", 1)
        labels = json.loads(labels_json or "null") or {}
        return labels.get(CONFIG_LABEL), running == "true"

    def _run_container(self, name: str, role: str, image: str, args: list[str],
                       cmd: Sequence[str] = ()) -> bool:
        """Create `name` unless an identical one (same image id and args) is running.

        Returns True when a container was (re)created.
        """
        image_id = img.image_id(image)
        config = hashlib.sha256(json.dumps([image_id, args, list(cmd)]).encode()).hexdigest()[:16]
        current, running = self._container_config(name)
        if current == config and running:
            return False
        if current is not None:
            docker("rm", "-f", name)
        docker("run", "-d", "--name", name, "--hostname", name, *self._labels(role, config), *args, image, *cmd)
        return True

    def _ensure_volume(self, name: str, role: str) -> str:
        if docker("volume", "inspect", name, check=False).returncode != 0:
            docker("volume", "create", *self._labels(role), name)
        return name

    def _used_subnets(self) -> list:
        used = []
        for net_id in docker_out("network", "ls", "-q").split():
            cfg = docker_out("network", "inspect", "--format", "{{json .IPAM.Config}}", net_id)
            for c in json.loads(cfg or "null") or []:
                if c.get("Subnet"):
                    try:
                        used.append(ipaddress.ip_network(c["Subnet"], strict=False))
                    except ValueError:
                        pass
        return used

    def _ensure_network(self, state: dict) -> None:
        """Create the private network; re-pick the subnet if another network took it since."""
        proc = docker("network", "inspect", "--format", "{{json .IPAM.Config}}", self.network, check=False)
        if proc.returncode == 0:
            cfg = json.loads(proc.stdout.strip() or "null") or []
            if any(c.get("Subnet") == state["subnet"] for c in cfg):
                return
            raise SandboxError(f"network {self.network} exists with another subnet; run `down` first")
        mine = ipaddress.ip_network(state["subnet"])
        if any(mine.overlaps(u) for u in self._used_subnets() if u.version == 4):
            state["subnet"] = self._pick_subnet()
            self._save_state(state)
        docker("network", "create", "--driver", "bridge", "--subnet", state["subnet"], *self._labels("network"),
               self.network)

    def _server_args(self, state: dict, ports: dict, ip: str, volume: str, env: dict[str, str]) -> list[str]:
        args = [
            "--restart", "unless-stopped", "--init",
            "--network", self.network, "--ip", ip,
            "-p", f"{HOST}:{ports['ssh_port']}:22",
            "-p", f"{HOST}:{ports['http_port']}:80",
            "-p", f"{HOST}:{ports['https_port']}:443",
            "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            "--cgroupns", "host",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v", f"{volume}:/var/lib/docker",
        ]
        for cap in host_capabilities():
            args += ["--cap-add", cap]
        if Path("/dev/fuse").exists():
            args += ["--device", "/dev/fuse"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        return args

    def _daemon_json(self, state: dict, storage_driver: str) -> str:
        cfg: dict = {
            "bip": INNER_BIP,
            "default-address-pools": [{"base": INNER_POOL, "size": 24}],
            "storage-driver": storage_driver,
            # By name or private address the registry is plain HTTP; 127.0.0.1:PORT needs no entry.
            "insecure-registries": [f"{self._ip(state, 2)}:5000", f"{self.registry_name}:5000", "registry:5000"],
        }
        dns = _host_nameservers()
        if dns:
            cfg["dns"] = dns
        return json.dumps(cfg, sort_keys=True)

    # ---- public API
    def up(self, servers: int = 2, bare: bool = True, stand_ins: bool = False,
           timeout: float = 180) -> SandboxInfo:
        """Create (or repair) the sandbox; idempotent. Returns what `status` returns.

        A running container whose image and settings are unchanged is kept (so a
        second `up` takes about a second); anything else is (re)created.
        `stand_ins=True` also builds the Caddy/Postgres/Valkey/PHP stand-in
        images and pushes them to the sandbox registry.
        """
        with self.lock():
            return self._up(servers, bare, stand_ins, timeout)

    def reset_server(self, name: str, timeout: float = 180) -> SandboxInfo:
        """Replace one server (or the bare server) with a pristine one: new container,
        new host key, empty inner engine. For provisioning tests that need a fresh host."""
        with self.lock():
            state = self._load_state()
            docker("rm", "-f", "-v", name, check=False)
            docker("volume", "rm", "-f", f"{name}-docker", check=False)
            return self._up(int(state.get("server_count", 2)), bool(state.get("bare_enabled", True)),
                            False, timeout)

    def _up(self, servers: int, bare: bool, stand_ins: bool, timeout: float) -> SandboxInfo:
        if servers < 1 or servers > 50:
            raise SandboxError("servers must be between 1 and 50")
        if not docker_available():
            raise SandboxError(
                "Docker is not running or not installed: run scripts/ensure-docker.sh as root (it installs "
                "docker.io docker-compose debootstrap docker-registry apache2-utils openssh-client "
                "busybox-static git socat and starts dockerd)")
        built = img.ensure_images(img.INFRA_IMAGES)
        state = self._ensure_state(servers)
        state["server_count"] = servers
        state["bare_enabled"] = bare
        self._save_state(state)
        self._ensure_network(state)

        reg, git = state["registry"], state["git"]
        reg_ip, git_ip = self._ip(state, 2), self._ip(state, 3)
        htpasswd = run(["htpasswd", "-Bbn", reg["username"], reg["password"]]).stdout.strip()
        # bcrypt salts differ per call: keep the first line so the container config stays stable.
        reg.setdefault("htpasswd", htpasswd)
        self._save_state(state)

        self._run_container(self.registry_name, "registry", built["registry"], [
            "--restart", "unless-stopped", "--network", self.network, "--ip", reg_ip,
            "--network-alias", "registry",
            "-p", f"{HOST}:{reg['port']}:5000",
            "-v", f"{self._ensure_volume(self.registry_name + '-data', 'registry')}:/var/lib/docker-registry",
            "-e", f"REGISTRY_HTPASSWD={reg['htpasswd']}",
        ])
        admin_pub = self.admin_key_path.with_suffix(".pub").read_text().strip()
        self._run_container(self.git_name, "githost", built["githost"], [
            "--restart", "unless-stopped", "--network", self.network, "--ip", git_ip,
            "--network-alias", "git",
            "-p", f"{HOST}:{git['port']}:22",
            "-v", f"{self._ensure_volume(self.git_name + '-data', 'githost')}:/srv/git",
            "-e", f"KEYSTONE_ADMIN_PUBKEY={admin_pub}",
        ])

        # The ACME CA (Pebble + challtestsrv) at SUBNET.4: gateways on the servers reach it
        # through their server's NAT, as the registry; it validates on the servers' own ports.
        acme = state["acme"]
        self._run_container(self.acme_name, "acme", built["acme"], [
            "--restart", "unless-stopped", "--network", self.network, "--ip", self._ip(state, 4),
            "--network-alias", "acme",
            "-p", f"{HOST}:{acme['directory_port']}:14000",
            "-p", f"{HOST}:{acme['management_port']}:15000",
            "-p", f"{HOST}:{acme['dns_port']}:8055",
            "-v", f"{self._ensure_volume(self.acme_name + '-data', 'acme')}:/var/lib/pebble",
            "-e", f"KEYSTONE_ACME_ADDRESS={self._ip(state, 4)}",
        ])

        root_pub = self.root_key_path.with_suffix(".pub").read_text().strip()
        forwards = f"{reg['port']}={reg_ip}:5000 {git['port']}={git_ip}:22"
        driver = inner_storage_driver()
        daemon_json = self._daemon_json(state, driver)
        for i in range(1, servers + 1):
            name = self.server_name(i)
            ports = state["servers"][str(i)]
            env = {"KEYSTONE_ROOT_PUBKEY": root_pub, "KEYSTONE_FORWARDS": forwards,
                   "KEYSTONE_DAEMON_JSON": daemon_json}
            self._run_container(name, "server", built["server"], self._server_args(
                state, ports, self._ip(state, 10 + i), self._ensure_volume(name + "-docker", "server"), env))
        # Servers beyond the requested count (from an earlier, larger `up`) go away.
        for name in self._containers(role="server"):
            idx = name.rsplit("-", 1)[-1]
            if not idx.isdigit() or int(idx) > servers:
                docker("rm", "-f", "-v", name)
                docker("volume", "rm", "-f", name + "-docker", check=False)
        if bare:
            # The Docker that provisioning installs on the bare server has no fuse-overlayfs:
            # overlay2 where it nests (as on a real server), else vfs.
            bare_driver = "overlay2" if driver == "overlay2" else "vfs"
            env = {"KEYSTONE_ROOT_PUBKEY": root_pub, "KEYSTONE_FORWARDS": forwards,
                   "KEYSTONE_DAEMON_JSON": self._daemon_json(state, bare_driver),
                   "KEYSTONE_ROOT_PASSWORD": state["bare"]["root_password"]}
            self._run_container(self.bare_name, "bare", built["bare"], self._server_args(
                state, state["bare"], self._ip(state, 10),
                self._ensure_volume(self.bare_name + "-docker", "bare"), env))
        else:
            docker("rm", "-f", "-v", self.bare_name, check=False)

        self._wait_ready(state, servers, bare, timeout)
        info = self.status()
        if info.sample_commit is None:
            state = self._load_state()
            state["sample_commit"] = push_sample_commit(info.git, kind="initial")
            self._save_state(state)
            info.sample_commit = state["sample_commit"]
        if stand_ins:
            info.images = push_stand_ins(info.registry)
            state = self._load_state()
            state["images"] = info.images
            self._save_state(state)
        return info

    def _containers(self, role: str | None = None) -> list[str]:
        filters = ["--filter", f"label={LABEL}={self.name}"]
        if role:
            filters += ["--filter", f"label={ROLE_LABEL}={role}"]
        return docker_out("ps", "-a", *filters, "--format", "{{.Names}}").split()

    def _wait_ready(self, state: dict, servers: int, bare: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def server_ready(i: int) -> None:
            name = self.server_name(i)
            _wait_ssh_banner(state["servers"][str(i)]["ssh_port"], deadline)
            while docker("exec", name, "docker", "info", "--format", "{{.ServerVersion}}",
                         check=False, timeout=30).returncode != 0:
                if time.monotonic() > deadline:
                    log = docker("exec", name, "tail", "-n", "30", "/var/log/dockerd.log", check=False)
                    raise SandboxError(f"dockerd in {name} did not start:\n{log.stdout}")
                time.sleep(0.3)

        jobs = [lambda i=i: server_ready(i) for i in range(1, servers + 1)]
        jobs.append(lambda: _wait_http(state["registry"]["port"], deadline))
        jobs.append(lambda: _wait_ssh_banner(state["git"]["port"], deadline))
        jobs.append(lambda: self._wait_acme(state, deadline))
        if bare:
            jobs.append(lambda: _wait_ssh_banner(state["bare"]["ssh_port"], deadline))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for f in [pool.submit(j) for j in jobs]:
                f.result()

    def _wait_acme(self, state: dict, deadline: float) -> None:
        """Pebble's directory and challtestsrv's management API both answer."""
        while True:
            ok = docker("exec", self.acme_name, "sh", "-c",
                        "test -s /var/lib/pebble/cert.pem && "
                        "openssl s_client -connect 127.0.0.1:14000 </dev/null >/dev/null 2>&1",
                        check=False, timeout=30).returncode == 0
            if ok:
                try:
                    with socket.create_connection((HOST, state["acme"]["dns_port"]), timeout=2):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                log = docker("logs", "--tail", "30", self.acme_name, check=False)
                raise SandboxError(f"the ACME CA did not start:\n{log.stdout}{log.stderr}")
            time.sleep(0.3)

    def _host_key(self, container: str) -> str:
        return docker_out("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")

    def status(self) -> SandboxInfo:
        """Describe the sandbox from its state file and the live containers.

        Host keys are read out of band (`docker exec`) so callers can pin them.
        """
        state = self._load_state()
        if not state or "registry" not in state:
            raise SandboxError(f"sandbox {self.name!r} has not been brought up (no {self.state_file})")
        running = set(docker_out("ps", "--filter", f"label={LABEL}={self.name}",
                                 "--format", "{{.Names}}").split())
        known: list[str] = []

        def host_key(container: str, port: int) -> tuple[str, str]:
            if container not in running:
                return "", ""
            parts = self._host_key(container).split()
            key = f"{parts[0]} {parts[1]}"
            known.append(f"[{HOST}]:{port} {key}")
            return key, _fingerprint(key, self.state_dir)

        servers = []
        for i in range(1, int(state.get("server_count", 0)) + 1):
            ports = state["servers"][str(i)]
            key, fp = host_key(self.server_name(i), ports["ssh_port"])
            servers.append(Server(
                name=self.server_name(i), host=HOST, ssh_port=ports["ssh_port"], http_port=ports["http_port"],
                https_port=ports["https_port"], private_ip=self._ip(state, 10 + i),
                root_key_path=self.root_key_path, host_key=key, host_key_fingerprint=fp))
        bare = None
        if state.get("bare_enabled"):
            b = state["bare"]
            key, fp = host_key(self.bare_name, b["ssh_port"])
            bare = Server(name=self.bare_name, host=HOST, ssh_port=b["ssh_port"], http_port=b["http_port"],
                          https_port=b["https_port"], private_ip=self._ip(state, 10),
                          root_key_path=self.root_key_path, host_key=key, host_key_fingerprint=fp,
                          has_docker=False, root_password=b["root_password"])
        reg = state["registry"]
        registry = Registry(host=HOST, port=reg["port"], username=reg["username"], password=reg["password"],
                            private_ip=self._ip(state, 2), container=self.registry_name)
        gkey, gfp = host_key(self.git_name, state["git"]["port"])
        git = GitHost(host=HOST, port=state["git"]["port"], private_ip=self._ip(state, 3),
                      container=self.git_name, admin_key_path=self.admin_key_path,
                      known_hosts_path=self.known_hosts_path, host_key=gkey, host_key_fingerprint=gfp)
        acme = None
        if "acme" in state and self.acme_name in running:
            a = state["acme"]
            root = docker("exec", self.acme_name, "cat", "/var/lib/pebble/ca.pem", check=False)
            if root.returncode == 0 and root.stdout.strip():
                acme = AcmeCA(private_ip=self._ip(state, 4), container=self.acme_name,
                              directory_port=a["directory_port"],
                              management_port=a["management_port"], dns_port=a["dns_port"],
                              server_root_pem=root.stdout)
        tmp = self.known_hosts_path.with_name(f".known_hosts.{os.getpid()}")
        tmp.write_text("\n".join(known) + ("\n" if known else ""))
        tmp.replace(self.known_hosts_path)  # atomic: concurrent sessions read it
        expected = {self.registry_name, self.git_name, self.acme_name, *(s.name for s in servers)} | ({bare.name} if bare else set())
        return SandboxInfo(
            name=self.name, state_dir=self.state_dir, network=self.network, subnet=state["subnet"],
            servers=servers, bare=bare, registry=registry, git=git, known_hosts_path=self.known_hosts_path,
            sample_commit=state.get("sample_commit") if self.git_name in running else None,
            running=expected <= running, images=state.get("images", {}), acme=acme,
        )

    def down(self) -> list[str]:
        """Remove every container, network and volume labelled with this sandbox's name.

        Keys and ports stay in the state directory so the next `up` reuses them;
        the record of the pushed sample commit is dropped with the git volume.
        """
        with self.lock():
            return self._down()

    def _down(self) -> list[str]:
        removed: list[str] = []
        names = self._containers()
        if names:
            docker("rm", "-f", "-v", *names)
            removed += [f"container {n}" for n in names]
        for net in docker_out("network", "ls", "--filter", f"label={LABEL}={self.name}",
                              "--format", "{{.Name}}").split():
            docker("network", "rm", net)
            removed.append(f"network {net}")
        vols = docker_out("volume", "ls", "--filter", f"label={LABEL}={self.name}", "--format", "{{.Name}}").split()
        if vols:
            docker("volume", "rm", "-f", *vols)
            removed += [f"volume {v}" for v in vols]
        state = self._load_state()
        if state:
            removed += self._untag_pushed_images(state)
            for k in ("sample_commit", "images"):
                state.pop(k, None)
            self._save_state(state)
        return removed

    @staticmethod
    def _untag_pushed_images(state: dict) -> list[str]:
        """Drop the host's tags of what was pushed to this sandbox's registry
        (``127.0.0.1:PORT/...``): the registry's volume is gone, and each session
        otherwise left four or more tags behind on the host (81 sandboxes' worth seen
        on a long-lived machine). Layers shared with the local builds stay."""
        port = state.get("registry", {}).get("port")
        if not port:
            return []
        prefix = f"{HOST}:{port}/"
        rows = docker_out("image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
        refs = []
        for row in rows:
            ref, _, image_id = row.partition(" ")
            if ref.startswith(prefix):
                refs.append(image_id if ref.endswith(":<none>") else ref)
        if refs:
            docker("image", "rm", *refs, check=False)
        return [f"image tag {r}" for r in refs]
