"""The files provisioning writes on a server, rendered from the desired state (pure).

Each comes back as the exact bytes to write, so the plan can compare them with
what is on the server and leave an identical file alone.
"""
from __future__ import annotations

from pathlib import Path

from app.provisioning import commands as c

HEADER = "# Managed by Keystone (server provisioning). Re-provisioning rewrites this file.\n"


def sudoers(user: str, ufw: str = "/usr/sbin/ufw",
            fail2ban_client: str = "/usr/bin/fail2ban-client") -> bytes:
    """/etc/sudoers.d/keystone: the only commands the management user may run as root.

    Why these and nothing else: the management user is in the ``docker`` group,
    so deploys (containers, compose, images) need no sudo at all. What is left
    is the host firewall, which only root can read or change:

    * ``ufw status`` (plain, verbose, numbered): health checks and the server
      page read whether the firewall is up and what it allows.
    * ``ufw allow|delete allow from <address> to any port <port> proto tcp``:
      a service on this server (Postgres, Valkey) is opened to another
      server's private address only, and closed again when the attachment goes.
    * ``fail2ban-client status sshd``: health checks read the SSH jail.
    * ``keystone-firewall allow|remove|restore|list``: which private addresses may
      connect to a port Docker publishes (UFW never sees those; docs/firewall.md).
      The script validates every argument in full itself.

    Installing packages, changing sshd or the firewall defaults is
    provisioning's job, which logs in as root with the management key.
    """
    lines = [
        HEADER,
        f"# {user} is in the docker group; containers need no sudo. It may run as root only:\n",
        "#  - ufw status: health checks read the firewall state;\n",
        "#  - ufw allow/delete allow from ADDRESS to any port PORT proto tcp: open a service\n",
        "#    port (Postgres, Valkey) to one other server's private address, and close it;\n",
        "#  - fail2ban-client status sshd: health checks read the SSH jail.\n",
        "Cmnd_Alias KEYSTONE_FIREWALL = "
        + ", ".join(c.sudoers_command(ufw, words) for words in c.UFW_STATUS_VARIANTS)
        + ", \\\n",
        f"    {c.sudoers_command(ufw, c.UFW_PRIVATE_ALLOW)}, \\\n",
        f"    {c.sudoers_command(ufw, c.UFW_PRIVATE_DELETE)}\n",
        f"Cmnd_Alias KEYSTONE_HEALTH = {fail2ban_client} status sshd\n",
        "# keystone-firewall checks every argument itself (see the script's header).\n",
        "Cmnd_Alias KEYSTONE_PUBLISHED = "
        + ", ".join(" ".join((c.FIREWALL_HELPER_PATH, *words))
                    for words in c.FIREWALL_HELPER_ACTIONS) + "\n",
        f"{user} ALL=(root) NOPASSWD: KEYSTONE_FIREWALL, KEYSTONE_HEALTH, KEYSTONE_PUBLISHED\n",
    ]
    return "".join(lines).encode()


def firewall_helper() -> bytes:
    """/usr/local/sbin/keystone-firewall, byte for byte (app/provisioning/scripts/)."""
    return (Path(__file__).parent / "scripts" / "keystone-firewall").read_bytes()


def firewall_unit() -> bytes:
    """Re-applies the saved cross-server rules whenever Docker starts (boot included)."""
    return (
        HEADER
        + "[Unit]\n"
        + "Description=Keystone: re-apply the cross-server port rules in DOCKER-USER\n"
        + "After=docker.service\n"
        + "PartOf=docker.service\n\n"
        + "[Service]\n"
        + "Type=oneshot\n"
        + f"ExecStart={c.FIREWALL_HELPER_PATH} restore\n\n"
        + "[Install]\n"
        + "WantedBy=docker.service\n"
    ).encode()


def sshd_dropin(permit_root_login: str = "prohibit-password") -> bytes:
    return (
        HEADER
        + "# Key-only logins. Named 00-... because sshd keeps the first value it reads and\n"
        + "# sshd_config includes this directory at its top, before any cloud-init drop-in.\n"
        + "PasswordAuthentication no\n"
        + "KbdInteractiveAuthentication no\n"
        + "PermitEmptyPasswords no\n"
        + "PubkeyAuthentication yes\n"
        + f"PermitRootLogin {permit_root_login}\n"
    ).encode()


def fail2ban_jail(ssh_ports: list[int], systemd: bool, logpath: str = "/var/log/auth.log") -> bytes:
    ports = ",".join(str(p) for p in sorted(set(ssh_ports))) or "ssh"
    body = [HEADER, "[sshd]\n", "enabled = true\n", f"port = {ports}\n",
            "maxretry = 5\n", "findtime = 10m\n", "bantime = 1h\n"]
    if systemd:
        body += ["# systemd: read sshd's messages from the journal.\n", "backend = systemd\n"]
    else:
        body += ["# No systemd (a container): poll a log file that exists.\n",
                 "backend = polling\n", f"logpath = {logpath}\n"]
    return "".join(body).encode()


COMPOSE_SHIM = b"""#!/bin/sh
# Managed by Keystone: `docker compose ...` runs the distribution's docker-compose,
# because this distribution ships no Compose v2 CLI plugin package.
if [ "${1:-}" = "docker-cli-plugin-metadata" ]; then
    printf '{"SchemaVersion":"0.1.0","Vendor":"Keystone","Version":"v1-shim","ShortDescription":"docker-compose shim"}\\n'
    exit 0
fi
[ "${1:-}" = "compose" ] && shift
exec docker-compose "$@"
"""
