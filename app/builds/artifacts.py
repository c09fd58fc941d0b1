"""Build artifacts: reuse or build an image for (environment, commit, build config), then
make the exact same image present on every target server.

``ensure_artifact(ctx, environment, commit_sha, servers) -> BuildArtifact``
is what the deploy flow calls inside its operation:

1. :func:`app.builds.plan.plan_build` (nothing runs when it finds a problem).
2. Reuse: a READY artifact of the same commit and ``config_hash`` (the
   rendered Dockerfile) is reused: no "Build image" step runs. A pushed
   artifact is reused anywhere (servers pull it by digest); a local-only one
   only where the image still is.
3. Otherwise build once (see app.repositories.git for why the source is
   fetched on the control plane and uploaded as a ``git archive`` tarball):
   fetch + archive locally, upload to ``/home/keystone/operations/<hash>/``
   on the build server, ``docker build`` there, push to the environment's
   registry when it has one (``docker login --password-stdin`` with an
   operation-private ``DOCKER_CONFIG``, logout in ``finally``), and record
   the repo digest.
4. Every target server pulls ``name@sha256:...`` (never a rebuild per
   server); the local image id is checked against the built one.

The reference to run is :func:`image_ref` (``registry/name@sha256:...``
when pushed, the unique local tag otherwise).
"""
from __future__ import annotations

import json
import logging
import posixpath
import shutil
import tempfile
from pathlib import Path

import sqlalchemy as sa

from app import shell
from app.builds import commands as dc
from app.builds.config import BuildConfig, config_hash
from app.builds.dockerfile import render_dockerfile
from app.builds.plan import BuildPlan, plan_build
from app.deploys.timing import NULL_CLOCK
from app.extensions import db
from app.models import BuildArtifact, Registry, Server
from app.models.base import utcnow
from app.models.enums import ArtifactStatus, BuildStrategy
from app.operations.errors import StepFailed
from app.registries import auth_commands, repository_for
from app.registries.references import ImageReferenceError, repository_name, same_repository
from app.repositories import workdir_base
from app.repositories.git import commit_info, fetch_and_archive
from app.repositories.validation import ValidationError, is_commit_sha

log = logging.getLogger(__name__)

REMOTE_OPERATIONS_DIR = "/home/keystone/operations"
LOCAL_REPOSITORY_PREFIX = "keystone"
BUILD_STEP = "Build image"
BUILD_TIMEOUT = 30 * 60


class BuildError(RuntimeError):
    """A build could not complete; the message is for the user."""


def _fail(message: str) -> Exception:
    return StepFailed(message)


def _operation(ctx):
    op = getattr(ctx, "operation", None) or getattr(ctx, "op", None)
    if op is None:
        raise BuildError("ensure_artifact needs an operation context")
    return op


def image_ref(artifact: BuildArtifact) -> str:
    """What a compose file runs: the digest reference when pushed, else the local tag."""
    return artifact.registry_ref or artifact.image_tag


def artifact_tag(repository: str, commit_sha: str, chash: str) -> str:
    return f"{repository}:{commit_sha[:12]}-{chash[:8]}"


def remote_workdir(ctx) -> str:
    """``/home/keystone/operations/<hash>`` (the operation's directory on servers)."""
    if callable(getattr(ctx, "workdir", None)):
        return ctx.workdir()
    return posixpath.join(REMOTE_OPERATIONS_DIR, _operation(ctx).hash)


# --------------------------------------------------------------------------- lookups

def find_reusable(environment, commit_sha: str, chash: str, *, pushed_to: str | None = None):
    """READY artifacts of this environment, commit and config, newest first."""
    stmt = (sa.select(BuildArtifact)
            .where(BuildArtifact.environment_id == environment.id,
                   BuildArtifact.commit_sha == commit_sha,
                   BuildArtifact.config_hash == chash,
                   BuildArtifact.status == ArtifactStatus.READY)
            .order_by(BuildArtifact.id.desc()))
    found = db.session.execute(stmt).scalars().all()
    if pushed_to is not None:
        found = [a for a in found
                 if a.registry_ref and same_repository(a.registry_ref, pushed_to)]
    return found


def _run(step, command, **kw):
    return step.run(command, **kw)


def _stdout(result) -> str:
    return (getattr(result, "stdout", "") or "").strip()


def _ok(result) -> bool:
    code = getattr(result, "exit_code", None)
    if code is None:
        code = getattr(result, "returncode", 1)
    return code == 0


def _image_id_on(step, ref: str) -> str | None:
    result = _run(step, dc.image_id(ref), check=False, timeout=60)
    if not _ok(result):
        return None
    for line in _stdout(result).splitlines():
        line = line.strip()
        if line.startswith("sha256:"):
            return line
    return None


# --------------------------------------------------------------------------- registry login

class RegistrySession:
    """``docker login`` for one step with a private DOCKER_CONFIG; logout + removal in finally.

    Shared by builds (push, pull by digest) and the drivers' image pulls
    (app.services_ops.steps.pull_image): the credential lives only in
    ``config_dir`` inside the operation's directory, never in the server
    user's ``~/.docker/config.json``. With ``registry=None`` (an open
    registry) nothing logs in and the directory is still private and removed.
    """

    def __init__(self, step, registry, config_dir: str):
        self.step = step
        self.registry = registry
        self.config_dir = config_dir
        self.auth = auth_commands(registry, config_dir) if registry is not None else None

    def __enter__(self) -> str:
        _run(self.step, dc.mkdir_private(self.config_dir), timeout=30)
        if self.auth is not None:
            self.step.log(f"docker login {self.registry.url} as {self.registry.username} "
                          "(password on stdin)")
            password = self.auth.password.value
            if hasattr(self.step, "secret"):
                self.step.secret(password)      # masked in every line recorded from now on
            _run(self.step, self.auth.login, stdin=(password + "\n").encode(), timeout=120)
        return self.config_dir

    def __exit__(self, *exc) -> None:
        try:
            if self.auth is not None:
                _run(self.step, self.auth.logout, check=False, timeout=60)
        finally:
            _run(self.step, dc.remove_dir(self.config_dir), check=False, timeout=60)


# --------------------------------------------------------------------------- main entry

def ensure_artifact(ctx, environment, commit_sha: str | None, servers, *,
                    clock=None) -> BuildArtifact:
    """Reuse or build the artifact for ``commit_sha`` and make it present on every server
    (external_registry: the configured image pinned by digest; ``commit_sha`` is unused).

    Raises :class:`app.builds.plan.BuildPlanError` before any step when the
    plan is impossible (e.g. several servers and no registry).
    """
    artifact, registry, verified = find_or_build(ctx, environment, commit_sha, servers,
                                                 clock=clock)
    with (clock or NULL_CLOCK).phase("pull"):
        _make_present(ctx, artifact, servers, registry, verified=verified)
    return artifact


def find_or_build(ctx, environment, commit_sha: str | None, servers, *, clock=None):
    """The artifact for ``commit_sha`` (reused, or built now), WITHOUT pulling it anywhere.

    Returns ``(artifact, registry, verified)``: ``verified`` are the ids of the servers
    just seen holding the image (a reused local-only artifact), which
    :func:`make_present` need not look at again. A deploy calls this, plans, and pulls
    (``make_present``) only when something is to be deployed: a deploy that changes
    nothing touches no server beyond reading facts.
    """
    clock = clock or NULL_CLOCK
    servers = list(servers)
    plan = plan_build(environment, servers)
    if plan.strategy == BuildStrategy.EXTERNAL_REGISTRY:
        # No commit, no git: the image is resolved to a digest and pulled everywhere.
        with clock.phase("pull"):
            artifact = _ensure_external(ctx, environment, servers, plan)
        return artifact, artifact_registry(artifact), {s.id for s in servers}
    if not is_commit_sha(commit_sha):
        raise ValidationError(f"{commit_sha!r} is not a commit sha")

    dockerfile = render_dockerfile(plan.config)
    chash = config_hash(plan.config, dockerfile)
    registry = environment.container_registry if plan.push else None
    repository = (repository_for(registry, environment.application.name, environment.name)
                  if registry is not None else
                  f"{LOCAL_REPOSITORY_PREFIX}/{environment.application.name}-{environment.name}")

    with clock.phase("artifact"):
        for candidate in find_reusable(environment, commit_sha, chash,
                                       pushed_to=repository if registry is not None else None):
            verified: set[int] = set()
            if candidate.registry_ref or _present_everywhere(ctx, candidate, servers, verified):
                with ctx.step("Reuse build artifact") as step:
                    step.unchanged(f"commit {commit_sha[:12]} with this build configuration was "
                                   f"already built (artifact #{candidate.id}, "
                                   f"{image_ref(candidate)}): not rebuilding")
                return candidate, registry, verified

    artifact = _build(ctx, environment, commit_sha, plan, dockerfile, chash, repository, registry,
                      clock)
    return artifact, registry, {plan.build_server.id}


def _present_everywhere(ctx, artifact: BuildArtifact, servers, verified: set[int]) -> bool:
    """A local-only artifact is reusable only where its image still is."""
    wanted = (artifact.meta or {}).get("image_id") or artifact.image_digest
    for server in servers:
        with ctx.step(f"Look for image on {server.name}", server=server) as step:
            found = _image_id_on(step, artifact.image_tag)
            if found != wanted:
                step.log(f"{artifact.image_tag} is not on {server.name}: it will be built")
                return False
            step.unchanged(f"{artifact.image_tag} is on {server.name}")
            verified.add(server.id)
    return True


def _make_present(ctx, artifact: BuildArtifact, servers, registry,
                  verified: set[int] = frozenset()) -> None:
    """Pull ``name@sha256:...`` on every server that lacks it; check the image id matches.

    ``verified``: servers just seen holding the image (or that built it): not asked again.
    The other servers pull side by side (one thread and one SSH connection each,
    ``ctx.in_parallel``); each thread loads its rows by id in its own session.
    """
    wanted = (artifact.meta or {}).get("image_id")
    ref = image_ref(artifact)
    artifact_id = artifact.id
    registry_id = registry.id if registry is not None else None
    server_ids = [s.id for s in servers if s.id not in verified]

    def pull_on(server_id: int) -> None:
        server = db.session.get(Server, server_id)
        art = db.session.get(BuildArtifact, artifact_id)
        with ctx.step(f"Pull image on {server.name}", server=server) as step:
            found = _image_id_on(step, ref)
            if found and (wanted is None or found == wanted):
                step.unchanged(f"{ref} is already on {server.name}")
            elif not art.registry_ref:
                raise _fail(f"{ref} is not on {server.name} and was never pushed to a registry")
            else:
                config_dir = posixpath.join(remote_workdir(ctx), f"docker-{artifact_id}")
                reg = (db.session.get(Registry, registry_id) if registry_id is not None
                       else artifact_registry(art))
                with RegistrySession(step, reg, config_dir) as docker_config:
                    _run(step, dc.pull(ref, docker_config), timeout=BUILD_TIMEOUT)
                found = _image_id_on(step, ref)
                if wanted is not None and found != wanted:
                    raise _fail(f"{server.name} pulled {ref} but got image {found}, "
                                f"expected {wanted}")
                step.log(f"{server.name} has {ref} (image {found})")

    if len(server_ids) == 1:
        pull_on(server_ids[0])
    elif server_ids:
        ctx.in_parallel(server_ids, pull_on)
        db.session.refresh(artifact)
    meta = dict(artifact.meta or {})
    present = sorted(set(meta.get("present_on", [])) | {s.id for s in servers})
    if present != meta.get("present_on"):
        meta["present_on"] = present
        artifact.meta = meta
        db.session.commit()


make_present = _make_present   # public name (the deploy flow's rollback uses it)


def artifact_registry(artifact: BuildArtifact):
    registry_id = (artifact.meta or {}).get("registry_id")
    return db.session.get(Registry, registry_id) if registry_id else None


def _build(ctx, environment, commit_sha: str, plan: BuildPlan, dockerfile: str, chash: str,
           repository: str, registry, clock=None) -> BuildArtifact:
    op = _operation(ctx)
    clock = clock or NULL_CLOCK
    application = environment.application
    server = plan.build_server
    tag = artifact_tag(repository, commit_sha, chash)
    artifact = BuildArtifact(
        environment_id=environment.id, commit_sha=commit_sha, config_hash=chash, image_tag=tag,
        built_by_operation_id=op.id,
        built_by_service_id=plan.builder_service.id if plan.builder_service is not None else None,
        status=ArtifactStatus.BUILDING,
        meta={"strategy": str(plan.strategy), "build_server_id": server.id,
              "build_config": plan.config.to_json(), "branch": environment.branch,
              "registry_id": registry.id if registry is not None else None,
              "started_at": utcnow().isoformat()})
    db.session.add(artifact)
    db.session.commit()

    local_dir = Path(tempfile.mkdtemp(prefix=f"keystone-op-{op.hash}-build-", dir=workdir_base()))
    remote_dir = posixpath.join(remote_workdir(ctx), f"build-{artifact.id}")
    remote_cleanup_needed = False
    try:
        if hasattr(ctx, "secret") and application.deploy_key_private:
            ctx.secret(application.deploy_key_private)   # never in a log line, whatever happens
        with clock.phase("fetch"), ctx.step("Fetch source") as step:
            step.log(f"git fetch {application.repository_url} {commit_sha} (branch {environment.branch}) "
                     "on the Keystone host with the deploy key")
            tar_path = local_dir / "source.tar"
            try:
                fetch_and_archive(local_dir, application.deploy_key_private,
                                  application.repository_known_hosts, application.repository_url,
                                  commit_sha, environment.branch, tar_path, on_line=step.log)
            except Exception as exc:
                raise _fail(str(exc)) from None
            size = tar_path.stat().st_size
            step.log(f"git archive {commit_sha[:12]}: {size} bytes")
            info = commit_info(local_dir, commit_sha)
            if info:
                # Deployment history shows who wrote it and what it says (issue 17.6).
                artifact.meta = {**artifact.meta, "commit": info}
                db.session.commit()
        data = tar_path.read_bytes()
        tar_path.unlink()

        with clock.phase("upload_source"), \
                ctx.step(f"Upload source to {server.name}", server=server) as step:
            remote_cleanup_needed = True
            _run(step, dc.mkdir_private(remote_dir), timeout=30)
            step.put_file(posixpath.join(remote_dir, "source.tar"), data, mode=0o600)
            step.put_file(posixpath.join(remote_dir, "Dockerfile"), dockerfile.encode(), mode=0o644)
            _run(step, dc.extract_source(posixpath.join(remote_dir, "source.tar"),
                                         posixpath.join(remote_dir, "context")), timeout=300)
            step.log(f"source of {commit_sha[:12]} and the managed Dockerfile are in {remote_dir}")
        del data

        # Become the image's dev.keystone.* labels (the managed Dockerfile's LABEL).
        build_args = {"KEYSTONE_COMMIT": commit_sha, "KEYSTONE_CONFIG_HASH": chash,
                      "KEYSTONE_ENVIRONMENT": str(environment.id)}
        build = dc.docker_build(posixpath.join(remote_dir, "Dockerfile"),
                                posixpath.join(remote_dir, "context"), tag, build_args)
        with clock.phase("build"), ctx.step(BUILD_STEP, server=server) as step:
            if registry is not None:
                # Logged in while building too: the base image may live in the same
                # (private) registry.
                with RegistrySession(step, registry, posixpath.join(remote_dir, "docker")) as cfg:
                    _run(step, shell.env(build, DOCKER_CONFIG=cfg), timeout=BUILD_TIMEOUT)
            else:
                _run(step, build, timeout=BUILD_TIMEOUT)
            image_id = _image_id_on(step, tag)
            if not image_id:
                raise _fail(f"docker build finished but {tag} is not on {server.name}")
            step.log(f"built {tag} (image {image_id})")
        artifact.image_digest = image_id
        artifact.meta = {**artifact.meta, "image_id": image_id, "present_on": [server.id]}
        db.session.commit()

        if registry is not None:
            with clock.phase("push"), \
                    ctx.step(f"Push image to {registry.name}", server=server) as step:
                config_dir = posixpath.join(remote_dir, "docker")
                with RegistrySession(step, registry, config_dir) as docker_config:
                    _run(step, dc.push(tag, docker_config), timeout=BUILD_TIMEOUT)
                digest = _repo_digest(step, tag, repository)
                artifact.image_digest = digest
                artifact.registry_ref = f"{repository}@{digest}"
                step.log(f"pushed {artifact.registry_ref}")
        artifact.status = ArtifactStatus.READY
        artifact.meta = {**artifact.meta, "finished_at": utcnow().isoformat()}
        db.session.commit()
        return artifact
    except BaseException as exc:
        db.session.rollback()
        artifact.status = ArtifactStatus.FAILED
        artifact.meta = {**(artifact.meta or {}), "error": str(exc)[:500]}
        db.session.commit()
        raise
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
        if remote_cleanup_needed:
            with clock.phase("build"):
                _cleanup_remote(ctx, server, remote_dir)


def _cleanup_remote(ctx, server, remote_dir: str) -> None:
    try:
        with ctx.step(f"Clean up build directory on {server.name}", server=server) as step:
            _run(step, dc.remove_dir(remote_dir), check=False, timeout=120)
    except Exception as exc:  # never mask the build's own outcome
        log.warning("could not remove %s on %s: %s", remote_dir, server.name, exc)


def _repo_digest(step, ref: str, repository: str) -> str:
    result = _run(step, dc.repo_digests(ref), timeout=60)
    text = _stdout(result)
    start = text.find("[")
    try:
        digests = json.loads(text[start:]) if start >= 0 else []
    except ValueError:
        digests = []
    for entry in digests or []:
        name, _, digest = str(entry).partition("@")
        # Docker reports the familiar name (``acme/app`` for docker.io/acme/app).
        if same_repository(name, repository) and digest.startswith("sha256:"):
            return digest
    raise _fail(f"pushed {ref} but the registry digest is unknown ({text[:200]})")


# --------------------------------------------------------------------------- external images

def _ensure_external(ctx, environment, servers, plan: BuildPlan) -> BuildArtifact:
    """external_registry (SPEC 6): run a prebuilt image by reference, pinned by digest, with
    no git at all (no deploy key, no ``git ls-remote``, no source).

    The digest is resolved from the registry itself (its manifest, with the organisation's
    credentials for that host; a reference that already names ``@sha256:...`` is taken as
    is); every server then pulls ``repository@digest``, so they all run the same bytes
    whatever the tag does later. The artifact's ``commit_sha`` is the digest's hex (there
    is no commit to name): the same image is the same artifact, and redeploying it reuses it.
    """
    from app.registries.images import (ImageError, org_credentials, org_registry, parse_image,
                                       resolve_digest)
    op = _operation(ctx)
    config: BuildConfig = plan.config
    image = config.image
    org_id = environment.application.organisation_id
    try:
        repository = repository_name(image)
        host = parse_image(image).registry
    except (ImageReferenceError, ImageError, ValueError) as exc:
        raise _fail(str(exc)) from None
    # The servers log in to the image's registry: the environment's, else the organisation's
    # registry for that host (none: a public image).
    registry = environment.container_registry or org_registry(org_id, host)
    chash = config_hash(config, "")
    with ctx.step(f"Resolve {image} to a digest") as step:
        try:
            digest = resolve_digest(image, org_credentials(org_id))
        except ImageError as exc:
            raise _fail(str(exc)) from None
        step.log(f"{image} -> {digest} (from the registry; no git: the image is the release)")
    ref = f"{repository}@{digest}"
    artifact = db.session.execute(
        sa.select(BuildArtifact).where(BuildArtifact.environment_id == environment.id,
                                       BuildArtifact.registry_ref == ref,
                                       BuildArtifact.status == ArtifactStatus.READY)
        .order_by(BuildArtifact.id.desc())).scalars().first()
    if artifact is None:
        artifact = BuildArtifact(
            environment_id=environment.id, commit_sha=digest.split(":", 1)[1],
            config_hash=chash, image_tag=image, image_digest=digest, registry_ref=ref,
            built_by_operation_id=op.id, status=ArtifactStatus.READY,
            meta={"strategy": str(plan.strategy), "external": True, "image": image,
                  "registry_id": registry.id if registry is not None else None,
                  "present_on": []})
        db.session.add(artifact)
        db.session.commit()
    _make_present(ctx, artifact, servers, registry)
    return artifact
