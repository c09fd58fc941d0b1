"""Views never block on the network (issue 16.3): no module in app/blueprints/ imports
SSH, HTTP or git-host code, or the functions that call out (the host-key probe, verify
access, the registry check, the sandbox, the Hetzner API, RQ). They start operations;
the worker runs the call, with a live log.

Checked on the source of every view module: its import statements (module top and
inside functions alike) and the names it takes from Keystone's own packages.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

BLUEPRINTS = Path(__file__).resolve().parents[2] / "app" / "blueprints"
VIEW_MODULES = sorted(BLUEPRINTS.glob("*.py"))

# Modules that open connections (or hand work to the queue behind the engine's back).
FORBIDDEN_MODULES = (
    "app.remote", "paramiko", "socket", "ssl", "requests", "httpx", "urllib.request",
    "http.client", "hcloud", "redis", "rq", "app.providers.hetzner", "app.repositories.git",
    "app.sandbox.sandbox", "app.sandbox.docker", "app.jobs",
)
# Names that make a network call when called.
FORBIDDEN_NAMES = {
    "probe_host_key",                                   # SSH to a custom server
    "verify_access", "resolve_commit", "keyscan", "ls_remote",   # the git host
    "check_for_update", "resolve_digest",               # the registry
    "cloud_provider", "HetznerProvider",                # the Hetzner API
    "Sandbox", "Queue",                                 # Docker, RQ
}


def _imports(path: Path):
    """(line, module, names) of every import statement in the file."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, tuple(a.name for a in node.names)


def _violations(path: Path) -> list[str]:
    found = []
    for line, module, names in _imports(path):
        for bad in FORBIDDEN_MODULES:
            if module == bad or module.startswith(bad + "."):
                found.append(f"{path.name}:{line} imports {module}")
            for name in names:  # `from app import remote`, `from urllib import request`
                if f"{module}.{name}" == bad:
                    found.append(f"{path.name}:{line} imports {module}.{name}")
        for name in names:
            if name in FORBIDDEN_NAMES:
                found.append(f"{path.name}:{line} imports {name} from {module}")
    return found


def test_the_check_sees_every_view_module():
    names = {p.stem for p in VIEW_MODULES}
    assert {"applications", "onboarding", "servers", "services", "registries"} <= names


@pytest.mark.parametrize("path", VIEW_MODULES, ids=lambda p: p.name)
def test_no_view_module_imports_network_code(path):
    assert _violations(path) == []


def test_the_check_catches_what_the_views_used_to_do(tmp_path):
    """The old views, as they were: each network call is caught."""
    old = tmp_path / "old_views.py"
    old.write_text(
        "import redis\n"
        "from rq import Queue\n"
        "from app.repositories import assign_deploy_key, verify_access\n"
        "def confirm():\n"
        "    from app.providers.custom import check_private_key, probe_host_key\n"
        "from app.services_ops.updates import check_for_update\n"
        "from app.providers import ProviderError, cloud_provider\n"
        "from app import remote\n"
        "from app.sandbox import Sandbox\n")
    found = _violations(old)
    for expected in ("imports redis", "imports rq", "imports Queue from rq",
                     "imports verify_access", "imports probe_host_key",
                     "imports check_for_update", "imports cloud_provider",
                     "imports app.remote", "imports Sandbox"):
        assert any(expected in v for v in found), (expected, found)
    assert not any("assign_deploy_key" in v or "check_private_key" in v for v in found)
