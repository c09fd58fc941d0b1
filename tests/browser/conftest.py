"""A live Keystone (gunicorn gthread + RQ worker + real Redis) driven by Debian's chromium.

Playwright's own browser download does not work on these machines: the tests
launch the chromium package's binary through `executablePath`.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_sandbox_base() -> str:
    """KEYSTONE_BROWSER_SANDBOX, else NAME-browser for KEYSTONE_TEST_SANDBOX=NAME (engineers
    sharing a machine never take down each other's browser sandboxes), else ks-browser."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    suffix = f"-{worker}" if worker else ""  # one live server per xdist worker, org ids 1, 2...
    if os.environ.get("KEYSTONE_BROWSER_SANDBOX"):
        return os.environ["KEYSTONE_BROWSER_SANDBOX"] + suffix
    if os.environ.get("KEYSTONE_TEST_SANDBOX"):
        return os.environ["KEYSTONE_TEST_SANDBOX"] + "-browser" + suffix
    return "ks-browser" + suffix


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, request):
    """Keystone for the browser: started here, or the one at KEYSTONE_BROWSER_URL (what
    ``python -m bench.first_deploy`` starts with ``make run``, to time a real first deploy;
    it passes the same KEYSTONE_INSTANCE_PATH and KEYSTONE_SANDBOX_NAME)."""
    if os.environ.get("KEYSTONE_BROWSER_URL"):
        yield {"url": os.environ["KEYSTONE_BROWSER_URL"].rstrip("/"),
               "env": {k: os.environ[k] for k in ("KEYSTONE_INSTANCE_PATH",
                                                   "KEYSTONE_SANDBOX_NAME")},
               "log": None}
        return
    redis_url = request.getfixturevalue("redis_url")
    base = tmp_path_factory.mktemp("live")
    port = _free_port()
    env = dict(os.environ,
               KEYSTONE_INSTANCE_PATH=str(base / "instance"),
               DATABASE_URL=f"sqlite:///{base / 'keystone.db'}",
               REDIS_URL=redis_url,
               KEYSTONE_SECRET_KEY="browser-test-secret",
               KEYSTONE_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
               KEYSTONE_QUEUE=f"browser-{port}",
               # its own Redis keys: the integration tier's operations share this Redis
               # and their ids (1, 2, ...) are this server's ids too
               KEYSTONE_REDIS_PREFIX=f"browser-{port}",
               KEYSTONE_OPEN_SIGNUP="1",  # the tests sign up several organisations
               # the wizard's sandbox: never a developer's own keystone-sandbox. Each
               # organisation's sandbox is named BASE-SLUG-ID; KEYSTONE_TEST_SANDBOX (the name
               # an engineer gives the integration tier) keeps parallel runs apart.
               KEYSTONE_SANDBOX_NAME=_browser_sandbox_base())
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "keystone"), "db", "upgrade"], env=env, check=True,
                   capture_output=True, cwd=ROOT)
    log = open(base / "server.log", "w")
    web = subprocess.Popen([str(bindir / "gunicorn"), "--worker-class", "gthread", "--threads",
                            "16", "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                           env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    # Two workers, as `make run` starts: operations on different targets run side by side.
    workers = [subprocess.Popen([str(bindir / "keystone"), "worker"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT) for _ in range(2)]
    url = f"http://127.0.0.1:{port}"
    # Generous: on a loaded shared machine importing the app alone can take ~20 s.
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/signup", timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline or web.poll() is not None:
                raise RuntimeError("Keystone did not start:\n" + (base / "server.log").read_text())
            time.sleep(0.2)
    yield {"url": url, "env": env, "log": base / "server.log"}
    for proc in (*workers, web):
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ``browser`` (one chromium per session) lives in tests/conftest.py: the integration tier's
# live-logs module uses it too, and two session fixtures would start Playwright twice in one
# process ("Sync API inside the asyncio loop").


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()


@pytest.fixture()
def screenshot():
    """Save a screenshot: into docs/screenshots when KEYSTONE_SCREENSHOTS=1."""
    def take(pg, name: str):
        target = SCREENSHOTS if os.environ.get("KEYSTONE_SCREENSHOTS") == "1" else \
            Path(os.environ.get("TMPDIR", "/tmp")) / "keystone-screenshots"
        target.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(target / f"{name}.png"), full_page=True)
    return take
