"""The build configuration of an environment (``environment.build_config``), validated.

Errors name their path (``build_config/php_version: ...``) so the form and
the operation log can say exactly what is wrong. Every value that reaches the
Dockerfile is checked against a strict pattern here; the one free-form value,
the JS build command, is rendered in exec (JSON) form so it cannot add
Dockerfile instructions.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from app.models.enums import BuildStrategy

TEMPLATE_VERSION = "2"
DEFAULT_PHP_VERSION = "8.3"
BASE_IMAGE_TEMPLATE = "serversideup/php:{php_version}-frankenphp"
JS_TOOLS = ("none", "bun", "node")
JS_DEFAULTS = {
    "bun": {"image": "oven/bun:1", "command": "bun install --frozen-lockfile && bun run build"},
    "node": {"image": "node:22-alpine", "command": "npm ci && npm run build"},
}

# A Docker image reference: [registry[:port]/]path[:tag][@sha256:digest]
_LBL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = (rf"(?:localhost(?::[0-9]{{1,5}})?|{_LBL}(?:\.{_LBL})+(?::[0-9]{{1,5}})?"
           rf"|{_LBL}:[0-9]{{1,5}})")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF_RE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$")
PHP_VERSION_RE = re.compile(r"[0-9]\.[0-9]{1,2}")  # used with fullmatch
DOC_ROOT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")  # used with fullmatch


class BuildConfigError(ValueError):
    """A build setting is invalid; the message starts with its path."""


def validate_image_ref(value: object, path: str = "image") -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or not IMAGE_REF_RE.fullmatch(value):
        raise BuildConfigError(f"{path}: {value!r} is not a Docker image reference "
                               "(registry/name:tag or name@sha256:...)")
    return value


@dataclass(frozen=True)
class JsBuild:
    tool: str
    image: str
    command: str
    output: str

    @property
    def run(self) -> str:
        """``RUN`` arguments in exec form: the command is one JSON string, never Dockerfile syntax."""
        return json.dumps(["sh", "-c", self.command])


@dataclass(frozen=True)
class BuildConfig:
    strategy: BuildStrategy = BuildStrategy.TARGET_SERVER
    php_version: str = DEFAULT_PHP_VERSION
    base_image: str | None = None
    document_root: str = "public"
    js_tool: str = "none"
    js_command: str | None = None
    js_image: str | None = None
    js_output: str = "public/build"
    builder_service_id: int | None = None
    image: str | None = None             # external_registry: the prebuilt image to run

    @property
    def effective_base_image(self) -> str:
        return self.base_image or BASE_IMAGE_TEMPLATE.format(php_version=self.php_version)

    @property
    def js(self) -> JsBuild | None:
        if self.js_tool == "none":
            return None
        defaults = JS_DEFAULTS[self.js_tool]
        return JsBuild(self.js_tool, self.js_image or defaults["image"],
                       self.js_command or defaults["command"], self.js_output)

    def to_json(self) -> dict:
        data = asdict(self)
        data["strategy"] = str(self.strategy)
        return {k: v for k, v in data.items() if v is not None}


def _get(raw: dict, key: str, default):
    value = raw.get(key, default)
    return default if value in (None, "") else value


def parse_build_config(raw: dict | None) -> BuildConfig:
    """Validate ``environment.build_config``; raise :class:`BuildConfigError` naming the key."""
    raw = dict(raw or {})
    p = "build_config/"
    try:
        strategy = BuildStrategy(_get(raw, "strategy", BuildStrategy.TARGET_SERVER.value))
    except ValueError:
        raise BuildConfigError(f"{p}strategy: must be one of "
                               f"{', '.join(s.value for s in BuildStrategy)}") from None
    php_version = str(_get(raw, "php_version", DEFAULT_PHP_VERSION))
    if not PHP_VERSION_RE.fullmatch(php_version):
        raise BuildConfigError(f"{p}php_version: must look like 8.3")
    base_image = _get(raw, "base_image", None)
    if base_image is not None:
        validate_image_ref(base_image, f"{p}base_image")
    document_root = str(_get(raw, "document_root", "public")).strip("/")
    if not DOC_ROOT_RE.fullmatch(document_root) or ".." in document_root.split("/"):
        raise BuildConfigError(f"{p}document_root: a relative directory such as public")
    # ``health_path`` lived here once; the web service's settings own it now
    # (app/drivers/laravel/settings.py, moved by migration 7c2f9a1d4e60): ignored.
    js_tool = str(_get(raw, "js_tool", "none"))
    if js_tool not in JS_TOOLS:
        raise BuildConfigError(f"{p}js_tool: must be one of {', '.join(JS_TOOLS)}")
    js_command = _get(raw, "js_command", None)
    if js_command is not None:
        if not isinstance(js_command, str) or len(js_command) > 500 or re.search(r"[\x00-\x1f\x7f]", js_command):
            raise BuildConfigError(f"{p}js_command: one line, at most 500 characters")
    js_image = _get(raw, "js_image", None)
    if js_image is not None:
        validate_image_ref(js_image, f"{p}js_image")
    js_output = str(_get(raw, "js_output", "public/build")).strip("/")
    if not DOC_ROOT_RE.fullmatch(js_output) or ".." in js_output.split("/"):
        raise BuildConfigError(f"{p}js_output: a relative directory such as public/build")
    builder_service_id = _get(raw, "builder_service_id", None)
    if builder_service_id is not None:
        try:
            builder_service_id = int(builder_service_id)
        except (TypeError, ValueError):
            raise BuildConfigError(f"{p}builder_service_id: must be a service id") from None
    image = _get(raw, "image", None)
    if image is not None:
        validate_image_ref(image, f"{p}image")
    if strategy == BuildStrategy.EXTERNAL_REGISTRY and image is None:
        raise BuildConfigError(f"{p}image: the external_registry strategy needs the image to run")
    return BuildConfig(strategy=strategy, php_version=php_version, base_image=base_image,
                       document_root=document_root, js_tool=js_tool,
                       js_command=js_command, js_image=js_image, js_output=js_output,
                       builder_service_id=builder_service_id, image=image)


def config_hash(config: BuildConfig, dockerfile: str) -> str:
    """What decides whether an artifact can be reused: the Dockerfile text + the external image.

    The commit is not part of it (artifacts are looked up by commit AND this
    hash); where the image is built (strategy, builder) is not either: the
    same Dockerfile and commit give the same image wherever they are built.
    """
    payload = json.dumps({"dockerfile": dockerfile, "image": config.image,
                          "template": TEMPLATE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def runs_prebuilt_image(raw: dict | None) -> bool:
    """external_registry (SPEC 6): the environment runs a prebuilt image; a deploy resolves
    no commit and touches no git (unreadable settings: False, the build plan says why)."""
    try:
        return parse_build_config(raw).strategy == BuildStrategy.EXTERNAL_REGISTRY
    except BuildConfigError:
        return False
