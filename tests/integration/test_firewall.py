"""Cross-server ports on servers Keystone provisioned: the organisation's server connects, a
third machine on the same private network is refused (issue 13, section 1).

Docker publishes a port with DNAT, so UFW's default deny never sees it (docs/firewall.md).
Provisioning installs keystone-firewall, which keeps the rule in DOCKER-USER; the
management user runs it through the sudo rule provisioning wrote, over real SSH. The
third machine is the sandbox's bare server, on the same private network.
"""
from __future__ import annotations

import random

import pytest

from app.provisioning import commands as c
from app.remote import Connection
from app.sandbox import BUSYBOX_IMAGE, load_images
from app.sandbox.testbed import MANAGEMENT_USER
from app.shell import cmd
from tests.integration.testbeds import connects as _connects

pytestmark = pytest.mark.integration


@pytest.fixture()
def published(sandbox, provisioned_servers):
    """A busybox httpd on server 1, published on its private address only (as Keystone does)."""
    server = sandbox.servers[0]
    load_images([server], [BUSYBOX_IMAGE])
    port = random.randint(18_000, 18_999)
    name = f"ks-fw-probe-{port}"
    server.exec("docker", "run", "-d", "--name", name, "-p", f"{server.private_ip}:{port}:80",
                BUSYBOX_IMAGE, "sh", "-c",
                "mkdir -p /www && echo published > /www/index.html && httpd -f -p 80 -h /www")
    key = server.root_key_path.read_text()  # the management key provisioning installed
    conn = Connection(server.host, server.ssh_port, MANAGEMENT_USER, key,
                      server.host_key_fingerprint)
    conn.connect()
    try:
        yield server, port, conn
    finally:
        conn.run(c.firewall_remove(server.private_ip, port), timeout=60)
        conn.close()
        server.exec("docker", "rm", "-f", name, check=False)


def test_only_the_allowed_server_reaches_a_published_port(sandbox, published):
    server, port, conn = published
    other, third = sandbox.servers[1], sandbox.bare
    address = server.private_ip
    # Without a rule, Docker's published port is open to the whole private network.
    assert _connects(third, address, port) == "open"

    res = conn.run(c.firewall_allow(address, port, [server.private_ip, other.private_ip]),
                   timeout=60, pty=False)
    assert res.ok, res.stdout + res.stderr
    assert f"allowed: {address}:{port}" in res.stdout
    assert _connects(other, address, port) == "open"
    assert _connects(third, address, port) == "refused"
    # The same rule again changes nothing.
    again = conn.run(c.firewall_allow(address, port, [other.private_ip, server.private_ip]),
                     timeout=60)
    assert again.ok and again.stdout.startswith("unchanged:"), again.stdout

    # A reboot or a flushed chain loses the live rules; restore puts the saved ones back.
    server.exec("iptables", "-w", "10", "-F", "KEYSTONE-DOCKER")
    assert _connects(third, address, port) == "open"
    server.exec(c.FIREWALL_HELPER_PATH, "restore")
    assert _connects(third, address, port) == "refused"
    assert _connects(other, address, port) == "open"

    # Removed: back to Docker's default for the port.
    removed = conn.run(c.firewall_remove(address, port), timeout=60)
    assert removed.ok and f"removed: {address}:{port}" in removed.stdout
    assert _connects(third, address, port) == "open"


def test_the_management_user_cannot_use_iptables_directly(sandbox, published):
    server, port, conn = published
    res = conn.run(cmd("sudo", "-n", "/usr/sbin/iptables", "-F", "DOCKER-USER"), timeout=60)
    assert not res.ok
    bad = conn.run(cmd("sudo", "-n", c.FIREWALL_HELPER_PATH, "allow", server.private_ip,
                       str(port), "0.0.0.0/0"), timeout=60, pty=False)
    assert not bad.ok and "not an IPv4 source address" in (bad.stderr + bad.stdout)
