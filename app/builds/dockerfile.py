"""Render the managed Laravel Dockerfile (SPEC 7) from a validated BuildConfig."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2

from app.builds.config import TEMPLATE_VERSION, BuildConfig
from app.deploys.image import dockerfile_lines
from app.drivers.laravel.settings import DEFAULT_HEALTH_PATH

TEMPLATES = Path(__file__).parent / "templates"
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False,
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True)

# /up (or the configured path) must answer 200; a 404 there means the app has
# no health route (Laravel < 11), and then / must answer 2xx/3xx.
HEALTHCHECK_SCRIPT = (
    'code=$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:8080${KEYSTONE_HEALTH_PATH}"); '
    '[ "$code" = 200 ] || { [ "$code" = 404 ] && curl -fs -o /dev/null http://127.0.0.1:8080/; }'
)


def render_dockerfile(config: BuildConfig) -> str:
    template = _env.get_template("Dockerfile.laravel.j2")
    return template.render(
        base_image=config.effective_base_image,
        document_root=config.document_root,
        # The image's default; every replica gets the web service's own health.path as
        # KEYSTONE_HEALTH_PATH at run time (its one owner: app/drivers/laravel/settings.py).
        health_path=DEFAULT_HEALTH_PATH,
        js=config.js,
        template_version=TEMPLATE_VERSION,
        healthcheck=json.dumps(["sh", "-c", HEALTHCHECK_SCRIPT]),
        # The deploy's in-image pieces: /.keystone/ready and the scheduler loop (app.deploys).
        keystone_runtime=dockerfile_lines(config.effective_base_image, config.document_root),
    )
