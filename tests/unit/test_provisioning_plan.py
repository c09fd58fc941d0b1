"""The provisioning plan against a recording connection: exact commands, facts parsed,
and a server that already matches gets no changing command at all."""
from __future__ import annotations

import re

import pytest

from app.provisioning import commands as c
from app.provisioning import files
from app.provisioning.host import HostIO, LocalStep, ProvisioningError
from app.provisioning.plan import (PLAN, Desired, PlanState, base_packages, docker_engine,
                                   firewall, management_user)
from app.remote import RecordingConnection

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ1Xk1m2Jq4oXv9vT2r0hZq7mU3s2kq9wQY6bq1S1xg keystone-acme"
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
SSHD_T = ("port 22\npasswordauthentication no\nkbdinteractiveauthentication no\n"
          "permitemptypasswords no\npubkeyauthentication yes\npermitrootlogin without-password\n")
UFW_ACTIVE = ("Status: active\nLogging: on (low)\nDefault: deny (incoming), allow (outgoing), "
              "deny (routed)\nNew profiles: skip\n")
UFW_ADDED = ("Added user rules (see 'ufw status' for running firewall):\nufw allow 22/tcp\n"
             "ufw allow 80/tcp\nufw allow 443/tcp\n")


def end(text: str):
    return re.compile(re.escape(text) + "$")


def provisioned_host() -> RecordingConnection:
    fake = RecordingConnection()
    s = fake.script
    s(end("cat -- /etc/os-release"), output=OS_RELEASE)
    s("dpkg --print-architecture", output="amd64\n")
    s("test -d /run/systemd/system", exit_code=1)
    s(re.compile(r"^dpkg-query .* sudo ufw"), output="".join(
        f"{p} ii \n" for p in ("sudo", "ufw", "fail2ban", "curl", "ca-certificates")))
    s(re.compile(r"^dpkg-query .* docker-ce"), exit_code=1, output="docker.io ii \ndocker-compose ii \n")
    s("docker compose version --short", output="1.29.2\n")
    s(end("cat -- " + c.COMPOSE_SHIM_PATH), output=files.COMPOSE_SHIM.decode())
    s("docker info", output="20.10.24\n")
    s("getent passwd keystone", output="keystone:x:1000:1000::/home/keystone:/bin/bash\n")
    s("getent shadow keystone", output="keystone:*:19000:0:99999:7:::\n")
    s("id -nG keystone", output="keystone docker\n")
    s(end("-- /home/keystone/.ssh"), output="/home/keystone/.ssh keystone:keystone 700\n")
    s(end("cat -- /home/keystone/.ssh/authorized_keys"), output=KEY + "\n")
    s(end("-- /home/keystone/.ssh/authorized_keys"),
      output="/home/keystone/.ssh/authorized_keys keystone:keystone 600\n")
    s(end("cat -- /root/.ssh/authorized_keys"), output="ssh-ed25519 AAAAother root@laptop\n" + KEY + "\n")
    s(re.compile(r"^stat .* /home/keystone/services"), output="".join(
        f"/home/keystone/{d} keystone:keystone 750\n" for d in c.MANAGEMENT_DIRS))
    s(end("sh ufw"), output="/usr/sbin/ufw\n")
    s(end("sh fail2ban-client"), output="/usr/bin/fail2ban-client\n")
    s(end("cat -- " + c.SUDOERS_PATH), output=files.sudoers("keystone").decode())
    s(end("sshd -T"), output=SSHD_T)
    s("ufw status verbose", output=UFW_ACTIVE)
    s("ufw show added", output=UFW_ADDED)
    s(end("cat -- " + c.FAIL2BAN_JAIL), output=files.fail2ban_jail([22], False).decode())
    s(end("cat -- " + c.FIREWALL_HELPER_PATH), output=files.firewall_helper().decode())
    s(end(c.FIREWALL_HELPER_PATH + " restore"), output="restored: 0 published port(s)\n")
    s(end("cat -- " + c.SSHD_DROPIN), output=files.sshd_dropin().decode())
    s(end("sshd -t"))
    s("docker version --format", output="20.10.24\n")
    return fake


def management_conn() -> RecordingConnection:
    fake = RecordingConnection(username="keystone")
    fake.script("sudo -n /usr/sbin/ufw status", output="Status: active\n")
    fake.script("id -un", output="keystone\n")
    return fake


def run_plan(fake, sudo=False):
    logs: list[str] = []
    opened: list[RecordingConnection] = []

    def connect_as(user):
        conn = management_conn()
        conn.connect()
        opened.append(conn)
        return conn

    st = PlanState(Desired("keystone", KEY), connect_as=connect_as)
    outcomes = []
    for title, fn in PLAN:
        io = HostIO(LocalStep(fake, logs.append), sudo=sudo)
        outcomes.append((title, io.changed if fn(io, st) is not None else None, io.changes))
    return outcomes, st, logs, opened


def test_a_provisioned_server_gets_no_changing_command():
    fake = provisioned_host()
    outcomes, st, logs, opened = run_plan(fake)
    changed = [(t, ch) for t, flag, ch in outcomes if flag]
    assert changed == []
    assert fake.files == {}                       # nothing uploaded
    mutating = re.compile(r"^(apt-get|useradd|usermod|install |ufw (allow|default|--force)|"
                          r"systemctl|service|start-stop-daemon|fail2ban-client reload)")
    assert [cmd for cmd in fake.commands if mutating.search(cmd)] == []
    assert st.results["docker_source"] == c.SOURCE_DISTRIBUTION
    assert st.results["compose"] == "shim"
    assert st.facts["sshd_ports"] == [22] and st.systemd is False
    # Verification ran as the management user on a connection of its own.
    assert opened and opened[0].commands == ["docker ps", "docker compose version --short",
                                             "sudo -n /usr/sbin/ufw status"]


def test_fresh_server_packages_and_docker_from_the_distribution():
    fake = RecordingConnection()
    fake.script("dpkg-query", exit_code=1)
    fake.script("curl -fsS --max-time 8", exit_code=7)       # download.docker.com unreachable
    fake.script("apt-cache show --no-all-versions docker-compose-v2", exit_code=100)
    st = PlanState(Desired("keystone", KEY), connect_as=lambda u: None,
                   facts={"distro": "debian", "codename": "bookworm", "arch": "amd64",
                          "systemd": True})
    io = HostIO(LocalStep(fake, lambda _l: None))
    base_packages(io, st)
    docker_engine(io, st)
    assert io.changed
    changes = [cmd for cmd in fake.commands if cmd.startswith("DEBIAN_FRONTEND")]
    assert changes == [
        "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update",
        "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o "
        "Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "
        "--no-install-recommends ca-certificates curl fail2ban python3-systemd sudo ufw",
        "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o "
        "Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "
        "--no-install-recommends docker-compose docker.io",
    ]
    assert st.results["docker_source"] == c.SOURCE_DISTRIBUTION


def test_docker_from_dockers_repository_when_reachable():
    fake = RecordingConnection()
    fake.script("dpkg-query", exit_code=1)
    st = PlanState(Desired("keystone", KEY), connect_as=lambda u: None,
                   facts={"distro": "ubuntu", "codename": "noble", "arch": "arm64", "systemd": True})
    io = HostIO(LocalStep(fake, lambda _l: None))
    docker_engine(io, st)
    assert "curl -fsS --max-time 8 -o /dev/null -- https://download.docker.com/linux/ubuntu/dists/noble/Release" in fake.commands
    assert ("install -m 0755 -d /etc/apt/keyrings && curl -fsSL --max-time 30 -o "
            "/etc/apt/keyrings/docker.asc -- https://download.docker.com/linux/ubuntu/gpg && "
            "chmod a+r /etc/apt/keyrings/docker.asc") in fake.commands
    (staged, (data, mode)), = fake.files.items()
    assert data == (b"deb [arch=arm64 signed-by=/etc/apt/keyrings/docker.asc] "
                    b"https://download.docker.com/linux/ubuntu noble stable\n") and mode == 0o600
    assert any(cmd.endswith(f"-- {staged} /etc/apt/sources.list.d/docker.list") for cmd in fake.commands)
    assert fake.commands[-1].endswith("install --no-install-recommends containerd.io docker-buildx-plugin "
                                      "docker-ce docker-ce-cli docker-compose-plugin")
    assert st.results["docker_source"] == c.SOURCE_DOCKER


def test_inactive_firewall_allows_ssh_first_then_enables():
    fake = RecordingConnection()
    fake.script(end("sshd -T"), output="port 2222\n")
    fake.script("ufw status verbose", output="Status: inactive\n")
    fake.script("ufw show added", output="Added user rules:\n(None)\n")
    st = PlanState(Desired("keystone", KEY), connect_as=lambda u: None)
    io = HostIO(LocalStep(fake, lambda _l: None))
    firewall(io, st)
    ufw = [cmd for cmd in fake.commands if cmd.startswith("ufw ") and "status" not in cmd
           and "show" not in cmd]
    # SSH (its actual port) first, so enabling can never cut the session.
    assert ufw == ["ufw allow 2222/tcp", "ufw allow 80/tcp", "ufw allow 443/tcp",
                   "ufw default deny incoming", "ufw default allow outgoing", "ufw --force enable"]
    assert ufw.index("ufw allow 2222/tcp") < ufw.index("ufw --force enable")


def test_sudo_login_wraps_every_command_and_stages_files_in_home():
    fake = RecordingConnection(username="admin")
    fake.script("getent passwd keystone", output="keystone:x:1000:1000::/home/keystone:/bin/bash\n")
    fake.script("getent shadow keystone", output="keystone:!:19000::::::\n")
    fake.script("id -nG keystone", output="keystone\n")
    st = PlanState(Desired("keystone", KEY), connect_as=lambda u: None)
    io = HostIO(LocalStep(fake, lambda _l: None), sudo=True)
    management_user(io, st)
    wrapped = [cmd for cmd in fake.commands if not cmd.startswith("rm -f -- .keystone-stage-")]
    assert all(cmd.startswith("sudo -n sh -c ") for cmd in wrapped), wrapped
    assert "sudo -n sh -c 'usermod --password '\"'\"'*'\"'\"' keystone'" in fake.commands
    assert "sudo -n sh -c 'usermod --append --groups docker keystone'" in fake.commands
    staged = [p for p in fake.files]
    assert staged and all(p.startswith(".keystone-stage-") for p in staged)
    assert any(KEY.encode() in data for data, _mode in fake.files.values())


def test_failed_change_is_a_provisioning_error_with_the_masked_command():
    fake = RecordingConnection()
    fake.script("apt-get", exit_code=100, output="E: Unable to locate package nope\n")
    io = HostIO(LocalStep(fake, lambda _l: None))
    with pytest.raises(ProvisioningError, match=r"apt-get .* exited with 100: E: Unable to locate"):
        io.change(c.apt_install(["nope"]))


def test_rendered_files():
    sudoers = files.sudoers("keystone").decode()
    assert "keystone ALL=(root) NOPASSWD: KEYSTONE_FIREWALL, KEYSTONE_HEALTH" in sudoers
    assert "/usr/sbin/ufw allow from * to any port * proto tcp" in sudoers
    assert "ALL=(ALL)" not in sudoers and "NOPASSWD: ALL" not in sudoers
    dropin = files.sshd_dropin().decode()
    assert "PasswordAuthentication no" in dropin and "PermitRootLogin prohibit-password" in dropin
    assert "backend = systemd" in files.fail2ban_jail([22], True).decode()
    polling = files.fail2ban_jail([2222, 22], False).decode()
    assert "backend = polling" in polling and "logpath = /var/log/auth.log" in polling
    assert "port = 22,2222" in polling


def test_parsers():
    assert c.parse_dpkg_status("sudo ii \nufw un \ncurl:amd64 ii \n") == {"sudo", "curl"}
    st = c.parse_ufw(UFW_ACTIVE, UFW_ADDED)
    assert st.active and st.incoming == "deny" and st.outgoing == "allow"
    assert "ufw allow 443/tcp" in st.rules
    assert not c.parse_ufw("Status: inactive\n", "").active
    assert c.parse_sshd_effective("Port 22\nport 2222\n")["port"] == ["22", "2222"]
    assert c.parse_stat("/home/keystone/my dir keystone:keystone 750\n") == {
        "/home/keystone/my dir": ("keystone:keystone", "750")}
