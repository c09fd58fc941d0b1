"""The provisioning plan: facts in, commands out only where the server differs.

Each step reads what it needs from the server, compares it with the desired
state and changes only the difference (pyinfra's operations). A server that
already matches gets no changing command at all, and every step says what it
found ("docker.io 20.10 already installed"). Steps run in order over one root
(or sudo) connection; the SSH step and the verification also open fresh
connections as the management user, because "Keystone can still log in" is
only proven by logging in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from app.provisioning import commands as c
from app.provisioning import files
from app.provisioning.host import HostIO, ProvisioningError

BASE_PACKAGES = ("sudo", "ufw", "fail2ban", "curl", "ca-certificates")


@dataclass
class Desired:
    user: str                 # the management user ("keystone")
    public_key: str           # the organisation's management public key (OpenSSH line)


@dataclass
class PlanState:
    desired: Desired
    # Opens a NEW connection to the server as ``user`` with the management key
    # (host key pinned). Used to prove logins work before anything is closed.
    connect_as: Callable[[str], object]
    facts: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    @property
    def systemd(self) -> bool:
        return bool(self.facts.get("systemd"))


@dataclass
class StepResult:
    changed: bool
    message: str


def _key_id(line: str) -> str:
    """The part of an authorized_keys line that identifies the key (type + base64)."""
    parts = line.split()
    for i, part in enumerate(parts):
        if part.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(parts):
            return part + " " + parts[i + 1]
    return " ".join(parts[:2])


def _has_key(authorized: str | None, public_key: str) -> bool:
    want = _key_id(public_key)
    return any(_key_id(line) == want for line in (authorized or "").splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


# --------------------------------------------------------------------- steps

def inspect(io: HostIO, st: PlanState) -> str:
    release = c.parse_os_release(io.read(c.os_release()).stdout)
    distro = release.get("ID", "")
    if distro not in ("debian", "ubuntu") and "debian" not in release.get("ID_LIKE", ""):
        raise ProvisioningError(
            f"Keystone provisions Debian and Ubuntu servers; this one runs "
            f"{release.get('PRETTY_NAME') or distro or 'an unknown system'}.")
    st.facts.update(
        distro=distro, version=release.get("VERSION_ID", ""),
        codename=release.get("VERSION_CODENAME", ""),
        pretty=release.get("PRETTY_NAME", distro),
        arch=io.read(c.dpkg_architecture(), check=True).stdout.strip(),
        systemd=io.read(c.systemd_present()).ok,
    )
    notes = [st.facts["pretty"], st.facts["arch"],
             "systemd" if st.systemd else "no systemd (services are started directly)"]
    if st.systemd and io.read(c.which("cloud-init")).ok:
        # A fresh cloud server is still configuring itself (and holding apt).
        io.read(c.cloud_init_wait(), timeout=600, quiet=False)
        notes.append("cloud-init finished")
    return ", ".join(notes)


def base_packages(io: HostIO, st: PlanState) -> str:
    wanted = list(BASE_PACKAGES)
    if st.systemd:
        wanted.append("python3-systemd")  # fail2ban's journal backend
    installed = c.parse_dpkg_status(io.read(c.dpkg_status(wanted)).stdout)
    missing = [p for p in wanted if p not in installed]
    if not missing:
        return f"already installed: {', '.join(wanted)}"
    io.change(c.apt_update(), timeout=600)
    st.results["apt_updated"] = True
    io.change(c.apt_install(missing), timeout=900)
    return f"installed {', '.join(missing)}"


DOCKER_PACKAGES_SEEN = ("docker-ce", "docker.io", "docker-compose-plugin", "docker-compose",
                        "docker-compose-v2")


def docker_engine(io: HostIO, st: PlanState) -> str:
    installed = c.parse_dpkg_status(io.read(c.dpkg_status(DOCKER_PACKAGES_SEEN)).stdout)
    if "docker-ce" in installed:
        st.results["docker_source"] = c.SOURCE_DOCKER
        return "Docker Engine (docker-ce, Docker's apt repository) already installed"
    if "docker.io" in installed:
        st.results["docker_source"] = c.SOURCE_DISTRIBUTION
        return "Docker Engine (docker.io, the distribution's package) already installed"
    distro, codename = st.facts["distro"], st.facts["codename"]
    if distro in ("debian", "ubuntu") and codename and \
            io.read(c.docker_repo_reachable(distro, codename), timeout=20).ok:
        io.change(c.fetch_docker_key(distro), timeout=60)
        io.write_file(c.DOCKER_SOURCES, c.docker_sources_line(st.facts["arch"], distro,
                                                              codename).encode())
        io.change(c.apt_update(), timeout=600)
        io.change(c.apt_install(c.DOCKER_REPO_PACKAGES), timeout=1200)
        st.results["docker_source"] = c.SOURCE_DOCKER
        return "installed docker-ce and the compose plugin from Docker's apt repository"
    io.log("Docker's apt repository (download.docker.com) is not reachable from this server: "
           "using the distribution's packages.")
    packages = ["docker.io"]
    if io.read(c.apt_available("docker-compose-v2")).ok:
        packages.append("docker-compose-v2")      # Ubuntu: the real v2 plugin
    elif "docker-compose" not in installed:
        packages.append("docker-compose")         # Debian: v2 from 13 on, v1 in 12 (shimmed)
    if not st.results.get("apt_updated"):
        io.change(c.apt_update(), timeout=600)
    io.change(c.apt_install(packages), timeout=1200)
    st.results["docker_source"] = c.SOURCE_DISTRIBUTION
    return f"installed {', '.join(packages)} from the distribution"


def compose_plugin(io: HostIO, st: PlanState) -> str:
    res = io.read(c.compose_version())
    if res.ok:
        shim = io.read(c.read_file(c.COMPOSE_SHIM_PATH))
        st.results["compose"] = "shim" if shim.ok and shim.stdout.encode() == files.COMPOSE_SHIM \
            else "plugin"
        if st.results["compose"] == "shim":
            return f"`docker compose` works (Keystone's shim over docker-compose {res.stdout.strip()})"
        return f"`docker compose` works (plugin {res.stdout.strip()})"
    if not io.read(c.which("docker-compose")).ok:
        raise ProvisioningError("Neither the Docker Compose plugin nor docker-compose is installed, "
                                "and `docker compose` does not work.")
    io.change(c.install_dir("/usr/local/lib/docker/cli-plugins", "root", "0755"))
    io.write_file(c.COMPOSE_SHIM_PATH, files.COMPOSE_SHIM, mode="0755",
                  why="install the docker compose shim")
    res = io.read(c.compose_version())
    if not res.ok:
        raise ProvisioningError("`docker compose version` still fails after installing the shim.")
    st.results["compose"] = "shim"
    return (f"the distribution ships no Compose v2 plugin: installed a `docker compose` shim over "
            f"docker-compose {res.stdout.strip()}")


def start_docker(io: HostIO, st: PlanState) -> str:
    running = io.read(c.docker_info()).ok
    enabled = io.read(c.is_enabled("docker")).ok if st.systemd else True
    if running and enabled:
        return "the Docker daemon is running" + (" and enabled at boot" if st.systemd else "")
    if st.systemd:
        io.change(c.start_docker(True), timeout=120)
    else:
        dockerd = io.read(c.which("dockerd"), check=True).stdout.strip().splitlines()[-1]
        io.change(c.start_docker(False, dockerd), timeout=60)
    deadline = time.monotonic() + 60
    while not io.read(c.docker_info()).ok:
        if time.monotonic() > deadline:
            log = io.read(c.read_file(c.DOCKERD_LOG))
            for line in log.stdout.splitlines()[-10:]:
                io.log(line)
            raise ProvisioningError("The Docker daemon did not answer within 60 s after starting.")
        time.sleep(1)
    return "started the Docker daemon" + (" and enabled it at boot" if st.systemd else
                                          " (no systemd: started with start-stop-daemon)")


def management_user(io: HostIO, st: PlanState) -> str:
    user, key = st.desired.user, st.desired.public_key
    notes = []
    res = io.read(c.getent_passwd(user))
    if not res.ok:
        io.change(c.create_user(user))
        res = io.read(c.getent_passwd(user), check=True)
        notes.append(f"created user {user}")
    home = res.stdout.strip().split(":")[5]
    st.facts["home"] = home
    shadow = io.read(c.getent_shadow_field(user), check=True).stdout.strip().split(":")
    if len(shadow) < 2 or shadow[1] != "*":
        io.change(c.no_password(user), why=f"{user} has no password (keys only)")
        notes.append("no password")
    groups = io.read(c.user_groups(user), check=True).stdout.split()
    if "docker" not in groups:
        io.change(c.add_to_group(user, "docker"))
        notes.append("added to the docker group")
    ssh_dir = f"{home}/.ssh"
    stat = c.parse_stat(io.read(c.stat_owner_mode([ssh_dir])).stdout)
    if stat.get(ssh_dir) != (f"{user}:{user}", "700"):
        io.change(c.install_dir(ssh_dir, user, "0700"))
        notes.append(f"{ssh_dir} 0700")
    auth_path = f"{ssh_dir}/authorized_keys"
    current = io.read_file(auth_path)
    stat = c.parse_stat(io.read(c.stat_owner_mode([auth_path])).stdout)
    if not _has_key(current, key) or stat.get(auth_path) != (f"{user}:{user}", "600"):
        content = (current or "")
        if content and not content.endswith("\n"):
            content += "\n"
        if not _has_key(current, key):
            content += key.strip() + "\n"
        io.write_file(auth_path, content.encode(), mode="0600", owner=user,
                      why=f"authorise the management key for {user}")
        notes.append("management key authorised")
    # Root keeps a key-only login with the management key: re-provisioning (and
    # only re-provisioning) logs in as root, since the management user's sudo
    # is deliberately too narrow to install packages or change sshd.
    root_keys = io.read_file("/root/.ssh/authorized_keys")
    if not _has_key(root_keys, key):
        io.change(c.install_dir("/root/.ssh", "root", "0700"))
        content = root_keys or ""
        if content and not content.endswith("\n"):
            content += "\n"
        io.write_file("/root/.ssh/authorized_keys", (content + key.strip() + "\n").encode(),
                      mode="0600", why="authorise the management key for root (re-provisioning)")
        notes.append("management key authorised for root")
    if not notes:
        return f"{user} exists, has no password, is in the docker group and has the management key"
    return "; ".join(notes)


def directories(io: HostIO, st: PlanState) -> str:
    user, home = st.desired.user, st.facts["home"]
    paths = [f"{home}/{d}" for d in c.MANAGEMENT_DIRS]
    stat = c.parse_stat(io.read(c.stat_owner_mode(paths)).stdout)
    made = []
    for path in paths:
        if stat.get(path) != (f"{user}:{user}", "750"):
            io.change(c.install_dir(path, user, "0750"))
            made.append(path)
    if not made:
        return "present: " + ", ".join(paths)
    return "created " + ", ".join(made)


def sudo_rules(io: HostIO, st: PlanState) -> str:
    ufw = io.read(c.which("ufw"), check=True).stdout.strip().splitlines()[-1]
    f2b = io.read(c.which("fail2ban-client"), check=True).stdout.strip().splitlines()[-1]
    st.facts["ufw_path"] = ufw
    wanted = files.sudoers(st.desired.user, ufw=ufw, fail2ban_client=f2b)
    current = io.read_file(c.SUDOERS_PATH)
    if current is not None and current.encode() == wanted:
        return f"{c.SUDOERS_PATH} is up to date (ufw status/allow from, fail2ban status)"
    io.write_file(c.SUDOERS_PATH, wanted, mode="0440", validate=c.visudo_check,
                  why=f"write {c.SUDOERS_PATH}")
    return f"wrote {c.SUDOERS_PATH} (checked with visudo): ufw status/allow from, fail2ban status"


def _ssh_ports(io: HostIO, st: PlanState) -> list[int]:
    eff = c.parse_sshd_effective(io.read(c.sshd_effective(), check=True).stdout)
    ports = sorted({int(p) for p in eff.get("port", ["22"])})
    st.facts["sshd_ports"] = ports
    return ports


def firewall(io: HostIO, st: PlanState) -> str:
    ports = _ssh_ports(io, st)
    # SSH (the port sshd actually listens on) first, then HTTP and HTTPS.
    wanted_ports = list(dict.fromkeys([*ports, 80, 443]))
    state = c.parse_ufw(io.read(c.ufw_status(), check=True).stdout,
                        io.read(c.ufw_added(), check=True).stdout)
    done = []
    for port in wanted_ports:
        if c.ufw_rule_for(port) not in state.rules:
            io.change(c.ufw_allow(port))
            done.append(f"allowed {port}/tcp")
    if state.incoming != "deny":
        io.change(c.ufw_default("deny", "incoming"))
        done.append("incoming denied by default")
    if state.outgoing != "allow":
        io.change(c.ufw_default("allow", "outgoing"))
    if not state.active:
        io.change(c.ufw_enable())
        done.append("enabled")
    wanted_rules = {c.ufw_rule_for(p) for p in wanted_ports}
    extra = [r for r in state.rules if r not in wanted_rules and " from " not in r]
    if extra:
        io.log("Rules Keystone did not add are left in place: " + "; ".join(extra))
    allowed = ", ".join(f"{p}/tcp" for p in wanted_ports)
    if not done:
        return f"UFW is active and allows {allowed} (SSH on {', '.join(map(str, ports))})"
    return "; ".join(done) + f" — UFW allows {allowed}"


def published_ports(io: HostIO, st: PlanState) -> str:
    """keystone-firewall: who may connect to a port Docker publishes (UFW never sees them)."""
    notes = []
    wanted = files.firewall_helper()
    current = io.read_file(c.FIREWALL_HELPER_PATH)
    if current is None or current.encode() != wanted:
        io.write_file(c.FIREWALL_HELPER_PATH, wanted, mode="0755",
                      why=f"write {c.FIREWALL_HELPER_PATH}")
        notes.append(f"installed {c.FIREWALL_HELPER_PATH}")
    if st.systemd:
        unit = files.firewall_unit()
        current = io.read_file(c.FIREWALL_UNIT_PATH)
        if current is None or current.encode() != unit:
            io.write_file(c.FIREWALL_UNIT_PATH, unit, why=f"write {c.FIREWALL_UNIT_PATH}")
            io.change(c.daemon_reload())
            notes.append("rules re-applied whenever Docker starts")
        if not io.read(c.is_enabled("keystone-firewall.service")).ok:
            io.change(c.enable_unit("keystone-firewall.service"))
    # The chain and its jump from DOCKER-USER (and any saved rules), now.
    restored = io.read(c.firewall_restore(), check=True).stdout.strip()
    where = ("re-applied by keystone-firewall.service whenever Docker starts" if st.systemd
             else "no systemd: re-applied at the next provisioning or deploy")
    if not notes:
        return f"{c.FIREWALL_HELPER_PATH} is up to date; {restored}; {where}"
    return "; ".join(notes) + f"; {restored}; {where}"


def fail2ban(io: HostIO, st: PlanState) -> str:
    ports = st.facts.get("sshd_ports") or _ssh_ports(io, st)
    notes = []
    if not st.systemd:
        # Without journald sshd's messages go to a log file (with rsyslog) or
        # nowhere; the jail needs a file that exists to start at all.
        if not io.read(c.test_exists(c.FAIL2BAN_LOGPATH)).ok:
            io.change(c.touch(c.FAIL2BAN_LOGPATH))
            notes.append(f"created {c.FAIL2BAN_LOGPATH}")
    wanted = files.fail2ban_jail(ports, st.systemd, c.FAIL2BAN_LOGPATH)
    current = io.read_file(c.FAIL2BAN_JAIL)
    config_changed = current is None or current.encode() != wanted
    if config_changed:
        io.write_file(c.FAIL2BAN_JAIL, wanted, why=f"write {c.FAIL2BAN_JAIL}")
        io.read(c.fail2ban_test(), check=True)
        notes.append(f"jail for sshd ({'journal' if st.systemd else 'polling ' + c.FAIL2BAN_LOGPATH})")
    running = io.read(c.fail2ban_status()).ok
    enabled = io.read(c.is_enabled("fail2ban")).ok if st.systemd else True
    if not running or not enabled:
        io.change(c.start_fail2ban(st.systemd), timeout=60)
        notes.append("started")
    elif config_changed:
        io.change(c.fail2ban_reload(), timeout=60)
        notes.append("reloaded")
    deadline = time.monotonic() + 20
    while not io.read(c.fail2ban_status()).ok:
        if time.monotonic() > deadline:
            raise ProvisioningError("fail2ban did not report its sshd jail within 20 s.")
        time.sleep(0.5)
    if not notes:
        return ("fail2ban's sshd jail is running ("
                + ("journal backend" if st.systemd else f"polling {c.FAIL2BAN_LOGPATH}") + ")")
    return "; ".join(notes)


def _prove_login(st: PlanState, user: str, attempts_until: float) -> str:
    """Log in as ``user`` with the management key over a NEW connection; return `id -un`."""
    last: Exception | None = None
    while True:
        conn = None
        try:
            conn = st.connect_as(user)
            res = conn.run(c.whoami(), timeout=30)
            if res.ok and res.stdout.strip() == user:
                return res.stdout.strip()
            last = ProvisioningError(f"`id -un` as {user} answered {res.stdout.strip()!r}.")
        except Exception as exc:  # remote errors carry user-facing messages
            last = exc
        finally:
            if conn is not None:
                conn.close()
        if time.monotonic() >= attempts_until:
            raise ProvisioningError(f"Keystone could not log in as {user} with the management "
                                    f"key over a new connection: {last}")
        time.sleep(1)


def ssh_hardening(io: HostIO, st: PlanState) -> str:
    eff = c.parse_sshd_effective(io.read(c.sshd_effective(), check=True).stdout)
    root_now = (eff.get("permitrootlogin") or ["yes"])[0]
    # Never loosen: a server that forbids root logins keeps forbidding them.
    root_wanted = "no" if root_now == "no" else "prohibit-password"
    wanted = files.sshd_dropin(root_wanted)
    current = io.read_file(c.SSHD_DROPIN)
    settings_ok = all((eff.get(k) or [""])[0] == v for k, v in c.SSHD_SETTINGS.items()) and \
        (root_now in c.ROOT_KEY_ONLY or root_now == "no")
    if settings_ok and current is not None and current.encode() == wanted:
        return ("password logins are off (PasswordAuthentication no, KbdInteractiveAuthentication "
                f"no, PermitRootLogin {root_wanted})")
    # 1. Before closing anything: the management user's key login must work.
    who = _prove_login(st, st.desired.user, time.monotonic() + 10)
    io.log(f"verified over a second connection: key login as {who} works")
    # 2. Write, validate with `sshd -t`, roll back if invalid.
    io.write_file(c.SSHD_DROPIN, wanted, why=f"write {c.SSHD_DROPIN}")

    def rollback(reason: str) -> ProvisioningError:
        if current is None:
            io.change(c.remove_file(c.SSHD_DROPIN), check=False)
        else:
            io.write_file(c.SSHD_DROPIN, current.encode(), why="restore the previous drop-in")
        if io.read(c.sshd_test()).ok:
            io.change(c.sshd_reload(st.systemd), check=False)
        return ProvisioningError(reason + " The previous SSH configuration was restored.")

    test = io.read(c.sshd_test())
    if not test.ok:
        for line in test.stdout.splitlines()[-10:]:
            io.log(line)
        raise rollback("`sshd -t` rejected the new configuration.")
    # 3. Reload; this connection stays open (sessions survive a reload).
    io.change(c.sshd_reload(st.systemd), timeout=60)
    # 4. Prove it again on the reloaded sshd before declaring success.
    try:
        _prove_login(st, st.desired.user, time.monotonic() + 20)
    except ProvisioningError as exc:
        raise rollback(f"After the reload: {exc}") from None
    eff = c.parse_sshd_effective(io.read(c.sshd_effective(), check=True).stdout)
    bad = {k: (eff.get(k) or ["?"])[0] for k, v in c.SSHD_SETTINGS.items()
           if (eff.get(k) or [""])[0] != v}
    if bad:
        raise ProvisioningError("sshd still has " + ", ".join(f"{k} {v}" for k, v in bad.items())
                                + ": another configuration file overrides Keystone's drop-in.")
    io.log("verified after the reload: key login as the management user still works")
    return f"password logins turned off (PermitRootLogin {root_wanted}); key login re-verified"


def verify(io: HostIO, st: PlanState) -> str:
    """Read-only checks; any failure fails the operation."""
    if not io.read(c.sshd_test()).ok:
        raise ProvisioningError("`sshd -t` reports an invalid SSH configuration.")
    status = io.read(c.ufw_status(), check=True).stdout
    if not c.parse_ufw(status, "").active:
        raise ProvisioningError("UFW is not active.")
    if not io.read(c.fail2ban_status()).ok:
        raise ProvisioningError("fail2ban's sshd jail is not running.")
    st.results["docker_version"] = io.read(c.docker_server_version(), check=True).stdout.strip()
    st.results["compose_version"] = io.read(c.compose_version(), check=True).stdout.strip()
    conn = st.connect_as(st.desired.user)
    try:
        for command, what in ((c.docker_ps(), "docker ps"),
                              (c.compose_version(), "docker compose version")):
            io.log(f"$ {command.masked()}   (as {st.desired.user})")
            res = conn.run(command, timeout=60)
            if not res.ok:
                raise ProvisioningError(f"`{what}` fails for {st.desired.user}: "
                                        f"{(res.stdout or res.stderr).strip()[-300:]}")
        ufw = st.facts.get("ufw_path", "/usr/sbin/ufw")
        check = c.cmd("sudo", "-n", ufw, "status")
        io.log(f"$ {check.masked()}   (as {st.desired.user})")
        res = conn.run(check, timeout=60)
        if not res.ok or "Status: active" not in res.stdout:
            raise ProvisioningError(f"{st.desired.user} cannot read the firewall with sudo: "
                                    f"{res.stdout.strip()[-300:]}")
    finally:
        conn.close()
    return (f"docker {st.results['docker_version']} and compose {st.results['compose_version']} "
            f"work for {st.desired.user}; UFW active; fail2ban sshd jail running; sshd config valid")


PLAN: list[tuple[str, Callable[[HostIO, PlanState], str]]] = [
    ("Inspect the server", inspect),
    ("Install base packages", base_packages),
    ("Install Docker Engine", docker_engine),
    ("Docker Compose plugin", compose_plugin),
    ("Start Docker", start_docker),
    ("Management user", management_user),
    ("Keystone directories", directories),
    ("Sudo rules", sudo_rules),
    ("Firewall (UFW)", firewall),
    ("Cross-server ports (DOCKER-USER)", published_ports),
    ("fail2ban for SSH", fail2ban),
    ("Key-only SSH logins", ssh_hardening),
    ("Verify", verify),
]
