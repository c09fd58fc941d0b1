"""The Keystone pieces of every managed Laravel image (docs/cutover.md, SPEC 8).

The managed Dockerfile (app/builds) renders :func:`dockerfile_lines` after
the application is installed; the files travel inside the Dockerfile
(base64), so the build context is untouched. Two base flavours:

* ``serversideup/php`` FrankenPHP (production) and the sandbox's stand-in for
  it (Caddy + php-fpm laid out the same way): the ready handler is a
  Caddyfile snippet imported through the image's documented
  ``CADDY_SERVER_EXTRA_DIRECTIVES`` variable, and the scheduler loop starts
  from ``/etc/entrypoint.d`` (the base's own entrypoint runs those scripts
  before its command), so the base's ENTRYPOINT and CMD stay untouched.
* any other base: ``entry.sh`` is the ENTRYPOINT (it starts the loop, then
  execs the command) and the command is ``php -S`` with ``router.php``, which
  answers ``/.keystone/ready``.

Either way readiness is answered from marker files Keystone sets (armed,
draining), never by calling the app: a saturated app cannot fail it.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

IMAGE_DIR = Path(__file__).parent / "image"
INSTALL_DIR = "/opt/keystone"
FILES = {"router.php": 0o644, "ready.caddy": 0o644, "entry.sh": 0o755, "scheduler.sh": 0o755}


def image_files() -> dict[str, tuple[bytes, int]]:
    """``{file name: (content, mode)}`` installed under /opt/keystone."""
    return {name: ((IMAGE_DIR / name).read_bytes(), mode) for name, mode in FILES.items()}


# The sandbox's stand-in for serversideup/php FrankenPHP (app/sandbox/images/php-base):
# the same entrypoint, Caddyfile hook and users, with Caddy + php-fpm instead of FrankenPHP.
SANDBOX_SERVERSIDEUP_STAND_IN = "keystone-sandbox/php-base"


def is_frankenphp(base_image: str) -> bool:
    """True for bases laid out like serversideup/php FrankenPHP (its stand-in included)."""
    name = base_image.rsplit("/", 1)[-1]
    repository = base_image.split("@", 1)[0].rsplit(":", 1)[0]
    return "frankenphp" in name or repository.endswith(SANDBOX_SERVERSIDEUP_STAND_IN)


def dockerfile_lines(base_image: str, document_root: str = "public") -> str:
    """Dockerfile instructions that install the ready handler and the scheduler loop.

    The files are written from base64 (only ``A-Za-z0-9+/=``, inert in a
    Dockerfile and in sh) so the build context stays exactly ``git archive``
    of the commit; a change to them changes the Dockerfile text, hence the
    artifact's config hash, hence a rebuild.
    """
    writes = []
    for name, (content, mode) in image_files().items():
        blob = base64.b64encode(content).decode()
        writes.append(f" && echo {blob} | base64 -d > {INSTALL_DIR}/{name}"
                      f" && chmod {mode:04o} {INSTALL_DIR}/{name}")
    lines = [
        "# Keystone runtime: /.keystone/ready (drain-aware readiness for the gateway)",
        "# and the scheduler loop (runs schedule:run only where Keystone set the flag).",
        "USER root",
        f"RUN mkdir -p {INSTALL_DIR} \\\n" + " \\\n".join(writes),
    ]
    if is_frankenphp(base_image):
        lines += [
            "RUN mkdir -p /etc/entrypoint.d"
            " && printf '#!/bin/sh\\n%s/entry.sh\\n' "
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
