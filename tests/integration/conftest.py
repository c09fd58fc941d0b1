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
# `make test` runs the sandbox tiers on several pytest-xdist workers (--dist loadfile): each
# worker has its own sandbox (NAME-gw0, NAME-gw1, ...), so a module that restarts a server,
# fills its disk or hardens the bare server never meets another module's deploy.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
TEST_SANDBOX_NAME = os.environ.get("KEYSTONE_TEST_SANDBOX", "keystone-test") + (
    f"-{_WORKER}" if _WORKER else "")
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def sandbox_manager() -> Sandbox:
    """The Sandbox object (for load_images, status, extra repos...), brought up once per session.

    Several pytest sessions on one machine (developers running tiers side by
    side) share the test sandbox: `up` runs under a file lock, each session
    registers its pid, and the last live session to finish takes it down.
    """
    import fcntl

    _ensure_docker()
    state_dir = ROOT / "instance" / "sandbox" / TEST_SANDBOX_NAME
    users = state_dir.parent / f"{TEST_SANDBOX_NAME}.users"
    users.mkdir(parents=True, exist_ok=True)
    lock_path = state_dir.parent / f"{TEST_SANDBOX_NAME}.lock"
    sb = Sandbox(name=TEST_SANDBOX_NAME, state_dir=state_dir)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (users / str(os.getpid())).touch()
        sb.up(servers=2, bare=True, stand_ins=True)
    yield sb
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (users / str(os.getpid())).unlink(missing_ok=True)
        others = [p for p in users.iterdir() if p.name.isdigit() and _pid_alive(int(p.name))]
        if not others and os.environ.get("KEYSTONE_KEEP_SANDBOX") != "1":
            sb.down()


@pytest.fixture(scope="session")
def sandbox(sandbox_manager: Sandbox) -> SandboxInfo:
    """Servers (.servers, .bare), registry (.registry), git host (.git) of the test sandbox."""
    return sandbox_manager.status()


# The longest modules first (seconds per module, printed at the end of `make test`): with
# --dist loadfile each xdist worker takes the next module when it is free, so a long module
# started last would leave the other worker idle while it runs.
LONGEST_FIRST = (  # seconds per module in the clean-clone run of 2026-12-03 10:27
    "tests/integration/test_deploys.py",            # 410
    "tests/integration/test_builds.py",             # 379
    "tests/integration/test_faults.py",             # 304
    "tests/integration/test_fanout.py",             # 240
    "tests/browser/test_first_deploy.py",           # 240
    "tests/integration/test_real_laravel.py",       # 238
    "tests/integration/test_replicas.py",           # 196
    "tests/integration/test_saturation.py",         # 181
    "tests/integration/test_push_to_deploy.py",     # 181
    "tests/integration/test_control_plane.py",      # 176
    "tests/integration/test_housekeeping.py",       # 175
    "tests/integration/test_https.py",              # 145
    "tests/integration/test_scheduler_modes.py",    # 126
    "tests/integration/test_remote.py",             # 124
    "tests/integration/test_drivers.py",            # 116
    "tests/integration/test_provisioning.py",       # 110
)


def pytest_collection_modifyitems(session, config, items):
    """The sandbox's own acceptance tests run first, on the pristine sandbox; then the
    longest modules (LONGEST_FIRST), then the rest in their usual order.

    Later modules change it on purpose (provisioning hardens the bare server and
    turns password login off), so test_sandbox.py must see it before they do.
    """
    def rank(item):
        module = item.nodeid.split("::", 1)[0]
        if module == "tests/integration/test_sandbox.py":
            return -1
        if module in LONGEST_FIRST:
            return LONGEST_FIRST.index(module)
        return len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: a module's tests keep their order


@pytest.fixture(scope="session")
def provisioned_servers(sandbox, tmp_path_factory, migrated_db_template, redis_url) -> list[dict]:
    """The sandbox servers as Keystone provisions a real one, once per session.

    Keystone's own ``server_provision`` operation runs on each server (the ``keystone``
    user with the narrow sudo rules, UFW active with default deny, fail2ban, key-only
    sshd); every deploy, driver and build test after it logs in as ``keystone``, never
    as root. On a kept sandbox the second run changes nothing and takes seconds.
    """
    from app.sandbox.testbed import provision_sandbox_servers
    from app.extensions import db
    from tests.conftest import make_app
    app = make_app(tmp_path_factory.mktemp("provisioning"), migrated_db_template, redis_url)
    with app.app_context():
        try:
            summaries = provision_sandbox_servers(sandbox)
        finally:
            db.session.remove()
            db.engine.dispose()
    print(f"\nprovisioned the sandbox servers: {summaries}")
    return summaries
