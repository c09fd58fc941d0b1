"""Session fixtures over the real sandbox: servers with sshd + Docker, a registry, a git host.

Why real: every Keystone feature acts on servers over SSH, and the failures
that matter (host keys, registry auth, deploy-key scoping, Docker-in-Docker
networking) only show up against the real thing. The fixture first runs
scripts/ensure-docker.sh (installs what is missing and starts dockerd when
run as root on Debian), then brings up a sandbox named ``keystone-test`` so a
developer's own ``keystone-sandbox`` is never touched. It is torn down at the
end of the session unless KEYSTONE_KEEP_SANDBOX=1 (then the next session
reuses it in a couple of seconds). Missing Docker is a failure, never a skip.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from app.sandbox import Sandbox, SandboxInfo, docker_available

ROOT = Path(__file__).resolve().parents[2]
TEST_SANDBOX_NAME = os.environ.get("KEYSTONE_TEST_SANDBOX", "keystone-test")
INSTALL_HINT = (
    "The integration tier needs a running Docker Engine and these tools. On Debian/Ubuntu as root run "
    "`scripts/ensure-docker.sh`, which does `apt-get install docker.io docker-compose debootstrap "
    "docker-registry apache2-utils openssh-client busybox-static git socat` and starts dockerd. "
    "Elsewhere install Docker Engine, debootstrap, htpasswd (apache2-utils), ssh-keygen (OpenSSH), "
    "git, a static busybox and make `docker info` work for this user."
)


def _ensure_docker() -> None:
    script = ROOT / "scripts" / "ensure-docker.sh"
    proc = subprocess.run([str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not docker_available():
        pytest.fail(f"Docker is not available and could not be set up.\n{INSTALL_HINT}\n\n"
                    f"scripts/ensure-docker.sh said:\n{proc.stdout[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def sandbox_manager() -> Sandbox:
    """The Sandbox object (for load_images, status, extra repos...), brought up once per session."""
    _ensure_docker()
    sb = Sandbox(name=TEST_SANDBOX_NAME, state_dir=ROOT / "instance" / "sandbox" / TEST_SANDBOX_NAME)
    sb.up(servers=2, bare=True, stand_ins=True)
    yield sb
    if os.environ.get("KEYSTONE_KEEP_SANDBOX") != "1":
        sb.down()


@pytest.fixture(scope="session")
def sandbox(sandbox_manager: Sandbox) -> SandboxInfo:
    """Servers (.servers, .bare), registry (.registry), git host (.git) of the test sandbox."""
    return sandbox_manager.status()
