"""The Keystone pieces of every managed Laravel image (docs/cutover.md, SPEC 8).

The managed Dockerfile (app/builds) adds :func:`image_files` to the build
context under :data:`CONTEXT_DIR` and renders :func:`dockerfile_lines` after
the application is copied in. Two base flavours:

* ``serversideup/php`` FrankenPHP (production): the ready handler is a
  Caddyfile snippet imported through the image's documented
  ``CADDY_SERVER_EXTRA_DIRECTIVES`` variable, and the scheduler loop starts
  from ``/etc/entrypoint.d`` (the base's own entrypoint runs those scripts
  before its command), so the base's ENTRYPOINT and CMD stay untouched.
* any other base, e.g. the sandbox's ``php -S`` stand-in: ``entry.sh`` is the
  ENTRYPOINT (it starts the loop, then execs the command) and the command is
  ``php -S`` with ``router.php``, which answers ``/.keystone/ready``.
"""
from __future__ import annotations

import json
from pathlib import Path

IMAGE_DIR = Path(__file__).parent / "image"
CONTEXT_DIR = ".keystone-runtime"
"""Directory name of Keystone's files inside the build context (next to the app)."""
INSTALL_DIR = "/opt/keystone"
FILES = {"router.php": 0o644, "ready.caddy": 0o644, "entry.sh": 0o755, "scheduler.sh": 0o755}


def image_files() -> dict[str, tuple[bytes, int]]:
    """``{relative path: (content, mode)}`` to add to the build context under CONTEXT_DIR."""
    return {name: ((IMAGE_DIR / name).read_bytes(), mode) for name, mode in FILES.items()}


def is_frankenphp(base_image: str) -> bool:
    name = base_image.rsplit("/", 1)[-1]
    return "frankenphp" in name


def dockerfile_lines(base_image: str, document_root: str = "public") -> str:
    """Dockerfile instructions that install the ready handler and the scheduler loop."""
    lines = [
        "# Keystone runtime: /.keystone/ready (drain-aware readiness for the gateway)",
        "# and the scheduler loop (runs schedule:run only where Keystone set the flag).",
        "USER root",
        f"COPY {CONTEXT_DIR}/ {INSTALL_DIR}/",
        f"RUN chmod 0755 {INSTALL_DIR} {INSTALL_DIR}/entry.sh {INSTALL_DIR}/scheduler.sh"
        f" && chmod 0644 {INSTALL_DIR}/router.php {INSTALL_DIR}/ready.caddy",
    ]
    if is_frankenphp(base_image):
        lines += [
            "RUN mkdir -p /etc/entrypoint.d"
            " && printf '#!/bin/sh\\n%s/scheduler.sh &\\n' "
            f"{INSTALL_DIR} > /etc/entrypoint.d/90-keystone-scheduler.sh"
            " && chmod 0755 /etc/entrypoint.d/90-keystone-scheduler.sh",
            f'ENV CADDY_SERVER_EXTRA_DIRECTIVES="import {INSTALL_DIR}/ready.caddy"',
            "USER www-data",
        ]
    else:
        lines += [
            "USER www-data",
            f'ENTRYPOINT ["{INSTALL_DIR}/entry.sh"]',
            "CMD " + json.dumps(["php", "-S", "0.0.0.0:8080", "-t", document_root,
                                 f"{INSTALL_DIR}/router.php"]),
        ]
    return "\n".join(lines) + "\n"
