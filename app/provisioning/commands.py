"""Commands and parsers of server provisioning: PURE (no I/O, no SSH).

Every shell line provisioning runs is built here from :mod:`app.shell` values,
so the exact strings can be tested (Kamal's command tests) and nothing is ever
interpolated into a shell string. Parsers turn command output (facts) into
Python values that the plan compares with the desired state.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from app.shell import Command, Raw, and_then, cmd, env, sh_c

APT_LOCK_TIMEOUT = "300"  # fresh cloud servers run unattended-upgrades at boot

# ----------------------------------------------------------------- constants

MANAGEMENT_DIRS = ("services", "gateway", "operations")
SUDOERS_PATH = "/etc/sudoers.d/keystone"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-keystone.conf"
FAIL2BAN_JAIL = "/etc/fail2ban/jail.d/keystone.local"
FAIL2BAN_LOGPATH = "/var/log/auth.log"
COMPOSE_SHIM_PATH = "/usr/local/lib/docker/cli-plugins/docker-compose"
DOCKERD_PIDFILE = "/run/keystone-dockerd.pid"
DOCKERD_LOG = "/var/log/dockerd.log"
SSHD_PIDFILE = "/run/sshd.pid"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.list"

DOCKER_REPO_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin",
                        "docker-compose-plugin")
SOURCE_DOCKER = "docker.com"      # Docker's own apt repository
SOURCE_DISTRIBUTION = "distribution"  # the distribution's docker.io (+ compose package)

# Key-only SSH. The drop-in is named 00-... because sshd keeps the FIRST value it
# reads for each keyword and Debian/Ubuntu include sshd_config.d/*.conf at the top
# of sshd_config: a cloud image's 50-cloud-init.conf ("PasswordAuthentication
# yes") comes later and loses.
SSHD_SETTINGS = {
    "passwordauthentication": "no",
    "kbdinteractiveauthentication": "no",
    "permitemptypasswords": "no",
    "pubkeyauthentication": "yes",
}
# What `sshd -T` prints for PermitRootLogin prohibit-password (older releases say
# "without-password"; both mean keys only).
ROOT_KEY_ONLY = ("prohibit-password", "without-password")


# ----------------------------------------------------------------- reading facts

def read_file(path: str) -> Command:
    """``cat -- path``; run with check=False: a missing file is a fact, not an error."""
    return cmd("cat", Raw("--"), path)


def os_release() -> Command:
    return read_file("/etc/os-release")


def parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def uid() -> Command:
    return cmd("id", "-u")


def sudo_check() -> Command:
    return cmd("sudo", "-n", "true")


def with_sudo(command: Command) -> Command:
    """Run ``command`` as root through passwordless sudo (bootstrap logins that are not root)."""
    return cmd("sudo", "-n", sh_c(command))


def systemd_present() -> Command:
    """Exit 0 when systemd is the running init (the check systemd's own tools use)."""
    return cmd("test", "-d", "/run/systemd/system")


def which(program: str) -> Command:
    return cmd("sh", "-c", 'command -v "$1"', "sh", program)


def dpkg_architecture() -> Command:
    return cmd("dpkg", "--print-architecture")


def cloud_init_wait() -> Command:
    return cmd("cloud-init", "status", "--wait")


def dpkg_status(packages: list[str] | tuple[str, ...]) -> Command:
    return cmd("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n", *packages)


def parse_dpkg_status(text: str) -> set[str]:
    """Names of packages that are installed ("ii") in dpkg-query output."""
    installed = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            installed.add(parts[0].split(":")[0])
    return installed


def apt_available(package: str) -> Command:
    """Exit 0 when apt knows a candidate version of ``package``."""
    return cmd("apt-cache", "show", "--no-all-versions", package)


def apt_update() -> Command:
    return env(cmd("apt-get", "-q", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}", "update"),
               DEBIAN_FRONTEND="noninteractive")


def apt_install(packages) -> Command:
    return env(cmd("apt-get", "-q", "-y", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}",
                   "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
                   "install", "--no-install-recommends", *sorted(packages)),
               DEBIAN_FRONTEND="noninteractive")


def sshd_effective() -> Command:
    """The configuration sshd would run with (``sshd -T``), as ``keyword value`` lines."""
    return cmd("sshd", "-T")


def parse_sshd_effective(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out.setdefault(parts[0].lower(), []).append(parts[1].strip())
    return out


def sshd_test() -> Command:
    return cmd("sshd", "-t")


def sshd_reload(systemd: bool) -> Command:
    if systemd:
        # "ssh" is the unit on Debian and Ubuntu; reload keeps open sessions.
        return cmd("systemctl", "reload", "ssh")
    # No init system (a container): SIGHUP makes sshd re-read its config;
    # established sessions are separate processes and stay up.
    return cmd("start-stop-daemon", "--stop", "--signal", "HUP", "--quiet", "--oknodo",
               "--pidfile", SSHD_PIDFILE, "--exec", "/usr/sbin/sshd")


# ----------------------------------------------------------------- users

def getent_passwd(user: str) -> Command:
    return cmd("getent", "passwd", user)


def getent_shadow_field(user: str) -> Command:
    return cmd("getent", "shadow", user)


def create_user(user: str) -> Command:
    return cmd("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", user)


def no_password(user: str) -> Command:
    """'*' in the shadow file: no password can ever match, yet the account is not
    "locked" ('!'), which sshd without PAM would also refuse for key logins."""
    return cmd("usermod", "--password", "*", user)


def user_groups(user: str) -> Command:
    return cmd("id", "-nG", user)


def add_to_group(user: str, group: str) -> Command:
    return cmd("usermod", "--append", "--groups", group, user)


def install_dir(path: str, owner: str, mode: str = "0750") -> Command:
    return cmd("install", "-d", "-o", owner, "-g", owner, "-m", mode, Raw("--"), path)


def stat_owner_mode(paths) -> Command:
    return cmd("stat", "-c", "%n %U:%G %a", Raw("--"), *paths)


def parse_stat(text: str) -> dict[str, tuple[str, str]]:
    out = {}
    for line in text.splitlines():
        parts = line.rsplit(" ", 2)
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


def install_file(staged: str, dest: str, owner: str, group: str, mode: str) -> Command:
    return cmd("install", "-o", owner, "-g", group, "-m", mode, Raw("--"), staged, dest)


def remove_file(path: str) -> Command:
    return cmd("rm", "-f", Raw("--"), path)


def visudo_check(path: str) -> Command:
    return cmd("visudo", "-c", "-q", "-f", path)


def touch(path: str, mode: str = "0640") -> Command:
    return cmd("install", "-m", mode, "/dev/null", path)


def test_exists(path: str) -> Command:
    return cmd("test", "-e", path)


# ----------------------------------------------------------------- docker

def docker_repo_reachable(distro: str, codename: str) -> Command:
    url = f"https://download.docker.com/linux/{distro}/dists/{codename}/Release"
    return cmd("curl", "-fsS", "--max-time", "8", "-o", "/dev/null", Raw("--"), url)


def fetch_docker_key(distro: str) -> Command:
    url = f"https://download.docker.com/linux/{distro}/gpg"
    return and_then_all(
        cmd("install", "-m", "0755", "-d", "/etc/apt/keyrings"),
        cmd("curl", "-fsSL", "--max-time", "30", "-o", DOCKER_KEYRING, Raw("--"), url),
        cmd("chmod", "a+r", DOCKER_KEYRING),
    )


def docker_sources_line(arch: str, distro: str, codename: str) -> str:
    return (f"deb [arch={arch} signed-by={DOCKER_KEYRING}] "
            f"https://download.docker.com/linux/{distro} {codename} stable\n")


def docker_info() -> Command:
    return cmd("docker", "info", "--format", "{{.ServerVersion}}")


def docker_server_version() -> Command:
    return cmd("docker", "version", "--format", "{{.Server.Version}}")


def compose_version() -> Command:
    return cmd("docker", "compose", "version", "--short")


def docker_ps() -> Command:
    return cmd("docker", "ps")


def start_docker(systemd: bool, dockerd: str = "/usr/sbin/dockerd") -> Command:
    if systemd:
        return cmd("systemctl", "enable", "--now", "docker")
    return cmd("start-stop-daemon", "--start", "--oknodo", "--background", "--make-pidfile",
               "--pidfile", DOCKERD_PIDFILE, "--output", DOCKERD_LOG, "--exec", dockerd)


def is_enabled(unit: str) -> Command:
    return cmd("systemctl", "is-enabled", "--quiet", unit)


def is_active(unit: str) -> Command:
    return cmd("systemctl", "is-active", "--quiet", unit)


# ----------------------------------------------------------------- firewall

def ufw_status() -> Command:
    return cmd("ufw", "status", "verbose")


def ufw_added() -> Command:
    """Rules added to UFW, shown even while it is inactive (``ufw status`` is not)."""
    return cmd("ufw", "show", "added")


def ufw_allow(port: int) -> Command:
    return cmd("ufw", "allow", f"{int(port)}/tcp")


def ufw_default(policy: str, direction: str) -> Command:
    return cmd("ufw", "default", policy, direction)


def ufw_enable() -> Command:
    return cmd("ufw", "--force", "enable")


@dataclass
class UfwState:
    active: bool
    incoming: str | None   # "deny" / "allow" / "reject", None when unknown (inactive)
    outgoing: str | None
    rules: list[str]       # "ufw allow 22/tcp" lines from `ufw show added`


def parse_ufw(status: str, added: str) -> UfwState:
    active = bool(re.search(r"^Status:\s*active\b", status, re.M))
    incoming = outgoing = None
    m = re.search(r"^Default:\s*(\w+) \(incoming\),\s*(\w+) \(outgoing\)", status, re.M)
    if m:
        incoming, outgoing = m.group(1), m.group(2)
    rules = [line.strip() for line in added.splitlines() if line.strip().startswith("ufw ")]
    return UfwState(active, incoming, outgoing, rules)


def ufw_rule_for(port: int) -> str:
    return f"ufw allow {int(port)}/tcp"


# Cross-server rules: a port on this server opened to the private network (or one
# server's private address), run by the management user through the sudo rule
# provisioning wrote. The words below are the ONE source of both: files.sudoers
# renders each placeholder as sudo's ``*`` wildcard, ufw_private_rule fills them
# in, so the command matches the rule byte for byte (sudo compares argv words;
# a reordered ``proto``, an extra ``comment`` or a missing ``sudo`` is refused).
UFW_PATH = "/usr/sbin/ufw"
ADDRESS = "<ADDRESS>"
PORT = "<PORT>"
UFW_PRIVATE_ALLOW = ("allow", "from", ADDRESS, "to", "any", "port", PORT, "proto", "tcp")
UFW_PRIVATE_DELETE = ("delete", *UFW_PRIVATE_ALLOW)
UFW_STATUS_VARIANTS = (("status",), ("status", "verbose"), ("status", "numbered"))


class FirewallRuleError(ValueError):
    """An address or port that cannot be part of a cross-server rule."""


def sudoers_command(program: str, words: tuple[str, ...]) -> str:
    """One sudoers command entry: ``program`` and its words, placeholders as ``*``."""
    return " ".join([program, *("*" if w in (ADDRESS, PORT) else w for w in words)])


def ufw_private_rule(words: tuple[str, ...], address: str, port: int,
                     ufw: str = UFW_PATH) -> Command:
    """``sudo -n UFW <words>`` with the address (an IP or CIDR) and port filled in."""
    try:
        network = ipaddress.ip_network(str(address), strict=False)
    except ValueError:
        raise FirewallRuleError(f"{address!r} is not an IP address or network") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise FirewallRuleError(f"{port!r} is not a TCP port")
    text = str(network.network_address) if network.num_addresses == 1 else str(network)
    values = {ADDRESS: text, PORT: str(port)}
    return cmd("sudo", "-n", ufw, *(values.get(w, w) for w in words))


def ufw_allow_private(address: str, port: int, ufw: str = UFW_PATH) -> Command:
    return ufw_private_rule(UFW_PRIVATE_ALLOW, address, port, ufw)


def ufw_delete_private(address: str, port: int, ufw: str = UFW_PATH) -> Command:
    return ufw_private_rule(UFW_PRIVATE_DELETE, address, port, ufw)


# ------------------------------------------------- cross-server ports (DOCKER-USER)
# UFW never sees a Docker-published port (docs/firewall.md): who may connect to one
# is kept by app/provisioning/scripts/keystone-firewall, run through sudo.
FIREWALL_HELPER_PATH = "/usr/local/sbin/keystone-firewall"
FIREWALL_UNIT_PATH = "/etc/systemd/system/keystone-firewall.service"
FIREWALL_HELPER_ACTIONS = (("allow", "*"), ("remove", "*"), ("restore",), ("list",))
MAX_FIREWALL_SOURCES = 256


def _ipv4(value: str, what: str) -> str:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise FirewallRuleError(f"{value!r} is not an IP address ({what})") from None
    if address.version != 4:
        raise FirewallRuleError(f"{value!r}: cross-server rules are IPv4 only ({what})")
    return str(address)


def _tcp_port(port) -> str:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise FirewallRuleError(f"{port!r} is not a TCP port")
    return str(port)


def firewall_allow(address: str, port: int, sources) -> Command:
    """Only ``sources`` (and this server's own containers) may connect to ``address:port``."""
    unique = sorted({_ipv4(s, "source") for s in sources}, key=ipaddress.ip_address)
    if not unique:
        raise FirewallRuleError("at least one source address is needed")
    if len(unique) > MAX_FIREWALL_SOURCES:
        raise FirewallRuleError(f"more than {MAX_FIREWALL_SOURCES} source addresses")
    return cmd("sudo", "-n", FIREWALL_HELPER_PATH, "allow", _ipv4(address, "published address"),
               _tcp_port(port), ",".join(unique))


def firewall_remove(address: str, port: int) -> Command:
    return cmd("sudo", "-n", FIREWALL_HELPER_PATH, "remove", _ipv4(address, "published address"),
               _tcp_port(port))


def firewall_restore() -> Command:
    return cmd(FIREWALL_HELPER_PATH, "restore")


def firewall_installed() -> Command:
    return cmd("test", "-x", FIREWALL_HELPER_PATH)


def enable_unit(unit: str) -> Command:
    return cmd("systemctl", "enable", unit)


def daemon_reload() -> Command:
    return cmd("systemctl", "daemon-reload")


# ----------------------------------------------------------------- fail2ban

def fail2ban_status() -> Command:
    return cmd("fail2ban-client", "status", "sshd")


def fail2ban_reload() -> Command:
    return cmd("fail2ban-client", "reload")


def fail2ban_test() -> Command:
    return cmd("fail2ban-client", "--test")


def start_fail2ban(systemd: bool) -> Command:
    if systemd:
        return cmd("systemctl", "enable", "--now", "fail2ban")
    return cmd("service", "fail2ban", "start")


def whoami() -> Command:
    return cmd("id", "-un")


def and_then_all(*commands: Command) -> Command:
    return and_then(*commands)
