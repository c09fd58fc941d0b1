"""keystone-firewall: who may connect to a port Docker publishes (issue 13, section 1).

UFW never sees a Docker-published port, so the rules live in DOCKER-USER, kept by a
script provisioning installs and the management user runs through sudo. The sudo rule
allows any arguments, so the script checks every argument in full itself: these tests
run the real script with hostile arguments (it refuses them before touching iptables).
"""
import subprocess

import pytest

from app.provisioning import commands as c
from app.provisioning import files
from tests.unit.test_firewall_sudo import _alias_entries, _sudo_allows

SCRIPT = files.firewall_helper()


def _run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-s", "--", *args], input=SCRIPT, capture_output=True,
                          timeout=30)


def test_commands_are_what_the_sudo_rule_allows():
    entries = _alias_entries(files.sudoers("keystone").decode(), "KEYSTONE_PUBLISHED")
    allow = c.firewall_allow("10.0.0.12", 18099, ["10.0.0.11", "10.0.0.13", "10.0.0.11"])
    assert allow.render() == ("sudo -n /usr/local/sbin/keystone-firewall allow 10.0.0.12 18099 "
                              "10.0.0.11,10.0.0.13")
    remove = c.firewall_remove("10.0.0.12", 18099)
    for command in (allow, remove):
        assert _sudo_allows(entries, command.render()), command.render()
    assert not _sudo_allows(entries, "sudo -n /usr/local/sbin/keystone-firewall2 allow x")
    assert not _sudo_allows(entries, "sudo -n /usr/sbin/iptables -F DOCKER-USER")


@pytest.mark.parametrize("address,port,sources", [
    ("10.0.0.12; id", 80, ["10.0.0.1"]), ("10.0.0.12", 80, ["$(id)"]), ("10.0.0.12", 80, []),
    ("::1", 80, ["10.0.0.1"]), ("10.0.0.12", 80, ["fe80::1"]), ("10.0.0.12", 0, ["10.0.0.1"]),
    ("10.0.0.12", "80", ["10.0.0.1"]), ("10.0.0.12", 80, ["10.0.0.0/24"]),
])
def test_the_builders_refuse_bad_values(address, port, sources):
    with pytest.raises(c.FirewallRuleError):
        c.firewall_allow(address, port, sources)


@pytest.mark.parametrize("args,says", [
    (("allow", "10.0.0.12;id", "80", "10.0.0.1"), "not an IPv4 address"),
    (("allow", "10.0.0.12\n", "80", "10.0.0.1"), "not an IPv4 address"),
    (("allow", "10.0.0.256", "80", "10.0.0.1"), "not an IPv4 address"),
    (("allow", "10.0.0.12", "0", "10.0.0.1"), "not a TCP port"),
    (("allow", "10.0.0.12", "65536", "10.0.0.1"), "not a TCP port"),
    (("allow", "10.0.0.12", "80\n1", "10.0.0.1"), "not a TCP port"),
    (("allow", "10.0.0.12", "80", "10.0.0.1,$(id)"), "not an IPv4 source"),
    (("allow", "10.0.0.12", "80", "10.0.0.1\n-j ACCEPT"), "sources must be one line"),
    (("allow", "10.0.0.12", "80", "-s 0.0.0.0/0"), "not an IPv4 source"),
    (("allow", "10.0.0.12", "80", ","), "at least one source"),
    (("allow", "10.0.0.12", "80"), "usage"),
    (("remove", "10.0.0.12"), "usage"),
    (("flush",), "usage"),
    (("restore", "now"), "usage"),
])
def test_the_script_refuses_hostile_arguments_before_touching_iptables(args, says):
    proc = _run_script(*args)
    assert proc.returncode == 2, proc
    assert says in proc.stderr.decode()
    assert not proc.stdout


def test_the_unit_reapplies_the_rules_whenever_docker_starts():
    unit = files.firewall_unit().decode()
    assert f"ExecStart={c.FIREWALL_HELPER_PATH} restore" in unit
    assert "WantedBy=docker.service" in unit and "After=docker.service" in unit
