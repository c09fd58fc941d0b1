"""Cross-server UFW rules run through the sudo rule provisioning wrote (issue 13, defect 1).

Before: ``ufw allow proto tcp from CIDR to any port N comment ...`` ran as the
management user without sudo, in an order the sudoers alias does not allow.
Now the command and the sudoers entry are rendered from the same words
(app.provisioning.commands.UFW_PRIVATE_ALLOW); these tests compare the two
byte for byte, the way sudo compares them.
"""
import fnmatch
import re
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from app.drivers.base import FirewallRule
from app.provisioning import commands as c
from app.provisioning import files


def _alias_entries(sudoers: str, alias: str) -> list[str]:
    """The command entries of one Cmnd_Alias, continuation lines joined, as sudo reads them."""
    text = sudoers.replace("\\\n", " ")
    m = re.search(rf"^Cmnd_Alias {alias} = (.*)$", text, re.M)
    assert m, f"no {alias} in sudoers"
    return [re.sub(r"\s+", " ", e).strip() for e in m.group(1).split(",")]


def _sudo_allows(entries: list[str], line: str) -> bool:
    """sudo's match for ``sudo -n PROGRAM ARGS``: the program exactly, args by fnmatch."""
    prefix = "sudo -n "
    if not line.startswith(prefix):
        return False          # not run through sudo at all
    program, _, args = line[len(prefix):].partition(" ")
    for entry in entries:
        e_program, _, e_args = entry.partition(" ")
        if e_program == program and fnmatch.fnmatchcase(args, e_args):
            return True
    return False


@pytest.mark.parametrize("ufw", ["/usr/sbin/ufw", "/sbin/ufw"])
def test_allow_and_delete_match_the_sudoers_alias_byte_for_byte(ufw):
    entries = _alias_entries(files.sudoers("keystone", ufw=ufw).decode(), "KEYSTONE_FIREWALL")
    allow = c.ufw_allow_private("10.0.0.0/16", 5432, ufw).render()
    delete = c.ufw_delete_private("10.0.1.7", 6379, ufw).render()
    assert allow == f"sudo -n {ufw} allow from 10.0.0.0/16 to any port 5432 proto tcp"
    assert delete == f"sudo -n {ufw} delete allow from 10.0.1.7 to any port 6379 proto tcp"
    # Byte for byte: the entry with its wildcards replaced by the values is the command.
    assert f"sudo -n {entries[3]}".replace("*", "10.0.0.0/16", 1).replace("*", "5432", 1) == allow
    assert f"sudo -n {entries[4]}".replace("*", "10.0.1.7", 1).replace("*", "6379", 1) == delete
    assert _sudo_allows(entries, allow) and _sudo_allows(entries, delete)


def test_the_old_commands_are_refused_by_the_same_rule():
    entries = _alias_entries(files.sudoers("keystone").decode(), "KEYSTONE_FIREWALL")
    # The pre-fix command: no sudo, protocol first, a comment at the end.
    old = "ufw allow proto tcp from 10.0.0.0/16 to any port 5432 comment 'keystone x'"
    assert not _sudo_allows(entries, old)
    assert not _sudo_allows(entries, "sudo -n " + old.replace("ufw", "/usr/sbin/ufw", 1))
    assert not _sudo_allows(entries, "sudo -n /usr/sbin/ufw allow 5432/tcp")
    assert not _sudo_allows(entries, "sudo -n /usr/sbin/ufw default allow incoming")


def test_sudoers_and_commands_share_one_source():
    sudoers = files.sudoers("keystone").decode()
    assert c.sudoers_command("/usr/sbin/ufw", c.UFW_PRIVATE_ALLOW) in sudoers
    assert c.sudoers_command("/usr/sbin/ufw", c.UFW_PRIVATE_DELETE) in sudoers
    assert c.sudoers_command("/usr/sbin/ufw", c.UFW_PRIVATE_ALLOW) == \
        "/usr/sbin/ufw allow from * to any port * proto tcp"


@pytest.mark.parametrize("address,port", [
    ("10.0.0.0/16; id", 5432), ("$(id)", 5432), ("any", 5432), ("", 5432),
    ("10.0.0.1", 0), ("10.0.0.1", 70000), ("10.0.0.1", "5432"), ("10.0.0.1", True),
])
def test_bad_addresses_and_ports_are_refused(address, port):
    with pytest.raises(c.FirewallRuleError):
        c.ufw_allow_private(address, port)


def test_a_host_address_is_written_without_a_prefix_length():
    assert c.ufw_allow_private("10.0.0.9/32", 80).render() == \
        "sudo -n /usr/sbin/ufw allow from 10.0.0.9 to any port 80 proto tcp"
    assert c.ufw_allow_private("10.0.3.4/16", 80).render() == \
        "sudo -n /usr/sbin/ufw allow from 10.0.0.0/16 to any port 80 proto tcp"


class _Ctx:
    """Records what open_firewall runs (a fake of the operations engine, pure)."""

    def __init__(self, ufw_installed=True):
        self.ran: list[str] = []
        self.ufw_installed = ufw_installed

    @contextmanager
    def step(self, name, server=None):
        ctx = self

        class Step:
            def run(self, command, **kw):
                ctx.ran.append(command.render())
                ok = ctx.ufw_installed or not command.render().startswith("test -x")
                return SimpleNamespace(exit_code=0 if ok else 1, stdout="")

            def log(self, line):
                pass

            def unchanged(self, line=""):
                pass

        yield Step()


def test_open_firewall_runs_the_sudo_command_the_rule_allows():
    from app.services_ops.steps import open_firewall
    server = SimpleNamespace(private_ip="10.0.0.5", facts={"private_network": "10.0.0.0/24"})
    ctx = _Ctx()
    open_firewall(ctx, server, [FirewallRule(5432, "tcp", "postgres 7"),
                                FirewallRule(8081, "tcp", "laravel 3 blue")],
                  sources=["10.0.0.5", "10.0.0.6"])
    sudoers = files.sudoers("keystone").decode()
    entries = _alias_entries(sudoers, "KEYSTONE_FIREWALL") + \
        _alias_entries(sudoers, "KEYSTONE_PUBLISHED")
    helper = "sudo -n /usr/local/sbin/keystone-firewall allow 10.0.0.5"
    assert ctx.ran == ["test -x /usr/sbin/ufw", "test -x /usr/local/sbin/keystone-firewall",
                       "sudo -n /usr/sbin/ufw allow from 10.0.0.0/24 to any port 5432 proto tcp",
                       f"{helper} 5432 10.0.0.5,10.0.0.6",
                       "sudo -n /usr/sbin/ufw allow from 10.0.0.0/24 to any port 8081 proto tcp",
                       f"{helper} 8081 10.0.0.5,10.0.0.6"]
    assert all(_sudo_allows(entries, line) for line in ctx.ran[2:])


def test_open_firewall_uses_the_ufw_path_provisioning_found():
    from app.services_ops.steps import open_firewall
    server = SimpleNamespace(private_ip="10.0.0.5",
                             facts={"private_network": "10.0.0.0/24", "ufw_path": "/sbin/ufw"})
    ctx = _Ctx()
    open_firewall(ctx, server, [FirewallRule(5432, "tcp", "pg")], sources=["10.0.0.5"])
    assert ctx.ran[-2] == "sudo -n /sbin/ufw allow from 10.0.0.0/24 to any port 5432 proto tcp"


def test_open_firewall_refuses_udp_rather_than_running_a_command_sudo_denies():
    from app.services_ops.steps import open_firewall
    from app.operations import StepFailed
    server = SimpleNamespace(private_ip="10.0.0.5", facts={})
    with pytest.raises(StepFailed, match="only TCP"):
        open_firewall(_Ctx(), server, [FirewallRule(53, "udp", "dns")], sources=["10.0.0.5"])
