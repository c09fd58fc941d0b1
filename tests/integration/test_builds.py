"""Acceptance of issue 7 on the real sandbox: git host with deploy keys, registry, servers.

No mocks: the deploy key is authorised on the sandbox git host, the source is
fetched with it on this machine (the control plane), the image is built by
the Docker Engine inside a sandbox server, pushed to the sandbox registry and
pulled by digest on the other server.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import current_app

from app.accounts import create_account
from app.applications import create_application
from app.builds import BUILD_STEP, check_build_plan, ensure_artifact, image_ref
from app.extensions import db
from app.models import BuildArtifact, Operation, OperationStep, Registry, Server, Service
from app.models.enums import (ArtifactStatus, OperationKind, RegistryType, ServerStatus,
                              StepStatus)
from app.operations import lifecycle, start_operation
from app.operations.context import OperationContext
from app.operations.runtime import Runtime
from app.remote.keys import generate_ed25519
from app.repositories import resolve_commit, verify_access, workdir_base
from app.repositories.validation import ValidationError
from app.sandbox import load_images
from app.sandbox.testbed import MANAGEMENT_USER

pytestmark = pytest.mark.integration

PHP_BASE = "keystone-sandbox/php-base:8.3-fpm"


# --------------------------------------------------------------------------- helpers

@pytest.fixture()
def org(app, sandbox, provisioned_servers):
    user = create_account(organisation=f"Builds {uuid.uuid4().hex[:6]}",
                          email=f"b-{uuid.uuid4().hex[:6]}@example.com",
                          password="correct horse battery")
    org = user.organisation
    root_key = sandbox.servers[0].root_key_path.read_text()
    org.management_key_private = root_key
    db.session.commit()
    return org


def add_servers(org, sandbox, count=1):
    servers = []
    for i, s in enumerate(sandbox.servers[:count], start=1):
        server = Server(organisation_id=org.id, name=f"sandbox-{i}", public_ip=s.host,
                        ssh_port=s.ssh_port, private_ip=s.private_ip,
                        host_key_fingerprint=s.host_key_fingerprint, management_user=MANAGEMENT_USER,
                        status=ServerStatus.ACTIVE)
        servers.append(server)
    db.session.add_all(servers)
    db.session.commit()
    return servers


# When each application's deploy key was made (time.time()): a file last written before
# that cannot hold the key, so the control plane's scan reads only files written since.
KEY_MADE_AT: dict[int, float] = {}


def new_application(org, sandbox, authorise=True, **build_config):
    name = f"sample-{uuid.uuid4().hex[:6]}"
    made_at = time.time()
    application = create_application(org.id, name, sandbox.git.sample_repo_url, "main")
    db.session.commit()
    KEY_MADE_AT[application.id] = made_at
    env = application.environments[0]
    env.build_config = {"base_image": PHP_BASE, **build_config}
    db.session.commit()
    if authorise:
        sandbox.git.authorize_key(application.deploy_key_public)
        result = verify_access(application)
        db.session.commit()
        assert result.ok, result.message
    return application, env


def run_operation(org, env, fn):
    """Run ``fn(ctx)`` as an environment operation, in-process, through the real engine."""
    op = start_operation(OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                         target_id=env.id, organisation_id=org.id,
                         lock_keys=[f"environment:{env.id}"], summary="build test", enqueue=False)
    outcome, _key, _holder = lifecycle.claim(op, "pytest/builds")
    assert outcome == "running"
    runtime = Runtime(current_app._get_current_object(), worker_name="pytest/builds")
    ctx = OperationContext(runtime, op)
    box = {}
    try:
        status = ctx.execute(lambda c: box.setdefault("result", fn(c)))
    finally:
        runtime.close()
    db.session.expire_all()
    return db.session.get(Operation, op.id), status, box.get("result")


def step_names(op) -> list[str]:
    return [s.name for s in db.session.execute(
        sa.select(OperationStep).where(OperationStep.operation_id == op.id)
        .order_by(OperationStep.order)).scalars()]


def server_sh(sandbox_server, script: str, check=True) -> str:
    proc = sandbox_server.exec("sh", "-c", script, check=check, timeout=300)
    return proc.stdout


def assert_no_deploy_key_anywhere(sandbox, application):
    """The private key is nowhere: not on this machine's work/temp dirs, not on any server."""
    private = application.deploy_key_private
    body = [ln for ln in private.splitlines() if ln and "PRIVATE KEY" not in ln]
    marker = body[3]          # the line holding the private scalar (the first lines are a shared header)
    # Control plane: no key file in the working directories, no file holding the key. The
    # other pytest-xdist worker's tests run deploys at the same time, each with its own
    # application's key in its own temp tree (popen-gwN): a key file there is its live
    # resolve, not a leftover of this test; this application's key is looked for everywhere.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")

    def another_workers(path: Path) -> bool:
        return bool(worker) and any(part.startswith("popen-gw") and part != f"popen-{worker}"
                                    for part in path.parts)

    # Only a file written since the key was made can hold it: the rest of /tmp (every
    # earlier test's databases, other sessions' trees: gigabytes on a long-lived machine)
    # is not read, which kept this scan at minutes per call.
    since = KEY_MADE_AT.get(application.id, 0.0) - 2
    for base in {workdir_base(), tempfile.gettempdir()}:
        for root, _dirs, files in os.walk(base):
            for name in files:
                path = Path(root) / name
                if not another_workers(path):
                    assert "deploy_key" not in name, f"key file left on the control plane: {path}"
                try:
                    st = path.lstat()
                    if (stat.S_ISREG(st.st_mode) and st.st_mtime >= since
                            and st.st_size < 1_000_000):
                        assert marker not in path.read_text(errors="ignore"), path
                except OSError:
                    pass
    # Servers (builder and targets): no file named like a key, no file holding it.
    for s in sandbox.servers:
        found = server_sh(s, "find / -xdev \\( -path /proc -o -path /sys -o -path /var/lib/docker "
                             "\\) -prune -o -name '*deploy*key*' -print 2>/dev/null || true")
        assert found.strip() == "", f"{s.name}: {found}"
        hits = s.exec("grep", "-rlF", marker, "/home", "/root", "/tmp", "/var/tmp", check=False)
        assert hits.stdout.strip() == "", f"{s.name}: key content in {hits.stdout}"
        ops = server_sh(s, "ls -A /home/keystone/operations 2>/dev/null | "
                           "xargs -I{} find /home/keystone/operations/{} -type f 2>/dev/null || true")
        assert "source.tar" not in ops and "deploy" not in ops, ops


@pytest.fixture(scope="module")
def php_base_on_servers(sandbox):
    """The stand-in base image in both server engines (serversideup/php cannot be pulled here)."""
    load_images(sandbox.servers[:2], [PHP_BASE])
    return PHP_BASE


# --------------------------------------------------------------------------- deploy keys

def test_an_authorised_deploy_key_lists_branches(app, org, sandbox):
    application, env = new_application(org, sandbox, authorise=False)
    sandbox.git.authorize_key(application.deploy_key_public)
    result = verify_access(application)
    db.session.commit()
    assert result.ok, result.message
    assert "main" in result.branches and application.repository_branches == result.branches
    assert result.trusted_now and result.host_keys
    assert application.repository_known_hosts.startswith(f"[127.0.0.1]:{sandbox.git.port} ")
    assert application.deploy_key_installed_at is not None
    assert any(k.fingerprint == sandbox.git.host_key_fingerprint for k in result.host_keys)
    # Second verification: pinned key, nothing newly trusted.
    again = verify_access(application)
    assert again.ok and not again.trusted_now
    sha = resolve_commit(env)
    assert len(sha) == 40
    assert sha == subprocess.run(
        ["git", "ls-remote", "--", sandbox.git.sample_repo_url, "refs/heads/main"],
        env=sandbox.git.git_env(), capture_output=True, text=True, check=True).stdout.split()[0]


def test_an_unauthorised_deploy_key_fails_with_a_clear_message(app, org, sandbox):
    application, _env = new_application(org, sandbox, authorise=False)
    result = verify_access(application)
    db.session.commit()
    assert not result.ok
    assert result.kind == "not_authorised"
    assert "not authorised for this repository" in result.message
    assert "read-only deploy key" in result.message
    assert application.deploy_key_installed_at is None and application.repository_branches == []

    # A key authorised for another repository only is refused too.
    sandbox.git.create_repo("other-builds.git")
    sandbox.git.authorize_key(application.deploy_key_public, "other-builds.git")
    result = verify_access(application)
    assert not result.ok and result.kind == "not_authorised"


def test_a_changed_git_host_key_is_refused(app, org, sandbox):
    application, _env = new_application(org, sandbox)
    _priv, public, _fp = generate_ed25519("impostor")
    application.repository_known_hosts = (f"[127.0.0.1]:{sandbox.git.port} "
                                          + " ".join(public.split()[:2]) + "\n")
    result = verify_access(application)
    assert not result.ok and result.kind == "host_key"
    assert "does not match" in result.message


# --------------------------------------------------------------------------- bad input

INJECTED_URLS = [
    "--upload-pack=touch {canary}",
    "ext::sh -c touch% {canary}",
    "ssh://-oProxyCommand=touch%20{canary}/x.git",
    "ssh://-oProxyCommand=touch {canary}/x.git",
    "$(touch {canary})",
    "git@127.0.0.1:x.git\ntouch {canary}",
    "x" * 10_000,
]
INJECTED_BRANCHES = ["--upload-pack=touch {canary}", "main;touch {canary}", "$(touch {canary})",
                     "main\ntouch {canary}", "y" * 10_000]


def test_injected_urls_and_branches_stored_behind_the_validators_back_stay_inert(app, org, sandbox):
    application, env = new_application(org, sandbox)
    canary = f"/tmp/keystone-canary-{uuid.uuid4().hex}"
    good_url = application.repository_url
    for template in INJECTED_URLS:
        application.repository_url = template.format(canary=canary)
        result = verify_access(application)
        assert not result.ok and result.kind == "invalid"
        with pytest.raises(ValidationError):
            resolve_commit(env)
    application.repository_url = good_url
    for template in INJECTED_BRANCHES:
        env.branch = template.format(canary=canary)
        with pytest.raises(ValidationError):
            resolve_commit(env)
    # Nothing ran: neither here nor on any server (nor on the git host).
    assert not Path(canary).exists()
    for s in sandbox.servers:
        assert s.exec("test", "-e", canary, check=False).returncode != 0
    git = subprocess.run(["docker", "exec", sandbox.git.container, "test", "-e", canary])
    assert git.returncode != 0


def test_a_build_with_an_injected_branch_refuses_before_any_step(app, org, sandbox):
    application, env = new_application(org, sandbox)
    servers = add_servers(org, sandbox, 1)
    canary = f"/tmp/keystone-canary-{uuid.uuid4().hex}"
    env.branch = f"main;touch {canary}"
    db.session.commit()
    op, status, _ = run_operation(org, env, lambda ctx: ensure_artifact(ctx, env, "a" * 40, servers))
    assert str(status) == "failed"
    assert step_names(op) == []           # refused by the plan: nothing ran
    assert "branch" in (op.error or "").lower()
    assert not Path(canary).exists()
    assert sandbox.servers[0].exec("test", "-e", canary, check=False).returncode != 0


# --------------------------------------------------------------------------- builds

def test_build_on_one_server_reuse_and_no_key_left(app, org, sandbox, php_base_on_servers):
    application, env = new_application(org, sandbox)
    servers = add_servers(org, sandbox, 1)
    sha = resolve_commit(env)

    op, status, artifact = run_operation(org, env,
                                         lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status) == "succeeded", op.error
    names = step_names(op)
    assert names[:3] == ["Fetch source", "Upload source to sandbox-1", BUILD_STEP], names
    artifact = db.session.get(BuildArtifact, artifact.id)
    assert artifact.status == ArtifactStatus.READY
    assert artifact.commit_sha == sha and artifact.registry_ref is None
    assert artifact.built_by_operation_id == op.id and artifact.built_by_service_id is None
    assert artifact.image_digest.startswith("sha256:")
    assert artifact.image_tag.startswith(f"keystone/{application.name}-production:{sha[:12]}-")
    assert image_ref(artifact) == artifact.image_tag

    # The image runs the commit it was built from.
    server = sandbox.servers[0]
    out = server_sh(server, f"docker run --rm {artifact.image_tag} cat REVISION")
    assert out.strip() == sha
    out = server_sh(server, f"docker run --rm {artifact.image_tag} php -r 'echo getenv(\"KEYSTONE_COMMIT\");'")
    assert out.strip() == sha
    assert_no_deploy_key_anywhere(sandbox, application)

    # The same commit again: the artifact is reused, no build step runs.
    op2, status2, again = run_operation(org, env,
                                        lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status2) == "succeeded", op2.error
    assert again.id == artifact.id
    names2 = step_names(op2)
    assert BUILD_STEP not in names2 and "Fetch source" not in names2, names2
    assert "Reuse build artifact" in names2
    assert db.session.execute(sa.select(sa.func.count(BuildArtifact.id)).where(
        BuildArtifact.environment_id == env.id)).scalar_one() == 1


def test_a_failed_build_leaves_no_key_and_marks_the_artifact_failed(app, org, sandbox,
                                                                    php_base_on_servers):
    application, env = new_application(org, sandbox,
                                       base_image="keystone-sandbox/no-such-base:1")
    servers = add_servers(org, sandbox, 1)
    sha = resolve_commit(env)
    op, status, _ = run_operation(org, env, lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status) == "failed"
    assert BUILD_STEP in step_names(op)
    artifact = db.session.execute(sa.select(BuildArtifact).where(
        BuildArtifact.environment_id == env.id)).scalar_one()
    assert artifact.status == ArtifactStatus.FAILED
    build_dir = f"/home/keystone/operations/{op.hash}"
    assert server_sh(sandbox.servers[0], f"ls -A {build_dir} 2>/dev/null || true").strip() == ""
    assert_no_deploy_key_anywhere(sandbox, application)

    # A fetch that fails (key revoked) leaves nothing either.
    sandbox.git.revoke_key(application.deploy_key_public)
    env.build_config = {"base_image": PHP_BASE, "php_version": "8.2"}   # a new config: no reuse
    db.session.commit()
    op, status, _ = run_operation(org, env, lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status) == "failed"
    assert "not authorised" in op.error
    assert_no_deploy_key_anywhere(sandbox, application)


def test_multi_server_without_registry_is_blocked_before_anything_runs(app, org, sandbox):
    application, env = new_application(org, sandbox)
    servers = add_servers(org, sandbox, 2)
    op, status, _ = run_operation(org, env, lambda ctx: ensure_artifact(ctx, env, "b" * 40, servers))
    assert str(status) == "failed"
    assert step_names(op) == []
    assert "registry" in op.error


def test_build_once_push_and_run_the_same_digest_on_two_servers(app, org, sandbox):
    reg = sandbox.registry
    registry = Registry(organisation_id=org.id, name="sandbox", type=RegistryType.GENERIC,
                        url=reg.url, username=reg.username, password=reg.password,
                        namespace="keystone-test")
    db.session.add(registry)
    db.session.commit()
    # The base image comes from the private registry: the build step is logged in too.
    base = sandbox.images.get("php-base") or f"{reg.url}/{PHP_BASE}"
    application, env = new_application(org, sandbox, base_image=base)
    env.registry_id = registry.id
    db.session.commit()
    servers = add_servers(org, sandbox, 2)
    sha = resolve_commit(env)

    op, status, artifact = run_operation(org, env,
                                         lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status) == "succeeded", op.error
    names = step_names(op)
    assert names.count(BUILD_STEP) == 1, names              # built once
    assert "Push image to sandbox" in names and "Pull image on sandbox-2" in names
    artifact = db.session.get(BuildArtifact, artifact.id)
    repo = f"{reg.url}/keystone-test/{application.name}-production"
    assert artifact.registry_ref == f"{repo}@{artifact.image_digest}"
    assert artifact.image_digest.startswith("sha256:")
    assert sorted(artifact.meta["present_on"]) == sorted(s.id for s in servers)

    # Both servers hold the same image (same id) under the digest reference, and run it.
    ids = set()
    for s in sandbox.servers[:2]:
        ids.add(server_sh(s, f"docker image inspect --format '{{{{.Id}}}}' {artifact.registry_ref}").strip())
        name = f"ks-build-test-{uuid.uuid4().hex[:6]}"
        server_sh(s, f"docker run -d --name {name} {artifact.registry_ref}")
        try:
            body = ""
            for _ in range(40):
                proc = s.exec("docker", "exec", name, "curl", "-fsS", "http://127.0.0.1:8080/",
                              check=False)
                if proc.returncode == 0:
                    body = proc.stdout
                    break
                time.sleep(0.5)
            assert json.loads(body)["commit"] == sha
        finally:
            s.exec("docker", "rm", "-f", name, check=False)
    assert ids == {artifact.meta["image_id"]}

    # The registry credentials never reached a log line or a step script.
    logs = " ".join((s.logs or "") + (s.script or "") + (s.error_logs or "") for s in
                    db.session.execute(sa.select(OperationStep).where(
                        OperationStep.operation_id == op.id)).scalars())
    assert reg.password not in logs and "--password-stdin" in logs
    # Logged out, and the operation's DOCKER_CONFIG is gone.
    for s in sandbox.servers[:2]:
        for home in ("/root", "/home/keystone"):
            assert reg.password not in server_sh(s, f"cat {home}/.docker/config.json 2>/dev/null || true")
        assert server_sh(s, f"ls -A /home/keystone/operations/{op.hash} 2>/dev/null || true").strip() == ""
    assert_no_deploy_key_anywhere(sandbox, application)

    # A second deploy of the same commit: reused, nothing built, nothing pulled again.
    op2, status2, again = run_operation(org, env,
                                        lambda ctx: ensure_artifact(ctx, env, sha, servers))
    assert str(status2) == "succeeded", op2.error
    assert again.id == artifact.id
    assert BUILD_STEP not in step_names(op2)
    skipped = db.session.execute(sa.select(OperationStep).where(
        OperationStep.operation_id == op2.id)).scalars().all()
    assert all(s.status == StepStatus.SKIPPED for s in skipped), [(s.name, s.status) for s in skipped]


def test_dedicated_builder_builds_and_the_target_pulls(app, org, sandbox):
    reg = sandbox.registry
    registry = Registry(organisation_id=org.id, name="sandbox", type=RegistryType.GENERIC,
                        url=reg.url, username=reg.username, password=reg.password,
                        namespace="keystone-test")
    db.session.add(registry)
    db.session.commit()
    base = sandbox.images.get("php-base") or f"{reg.url}/{PHP_BASE}"
    application, env = new_application(org, sandbox, base_image=base,
                                       strategy="dedicated_builder")
    env.registry_id = registry.id
    servers = add_servers(org, sandbox, 2)
    # The builder is created the way the New service form does, and deployed: its readiness
    # check runs on the server (issue 21 item 1); before that the plan refuses it.
    from app.operations.runner import execute_operation
    from app.services_ops.create import build_service
    from app.services_ops.deploy import start_service_deploy
    builder = build_service("builder", servers[0], "builder", organisation_id=org.id)
    db.session.add(builder)
    db.session.commit()
    assert "builder_not_ready" in {p.code for p in check_build_plan(env, [servers[1]])}
    deploy_op = start_service_deploy(builder, enqueue=False)
    assert execute_operation(deploy_op.id) == "succeeded"
    db.session.expire_all()
    builder = db.session.get(Service, builder.id)
    assert builder.status.value == "running" and builder.replicas == []
    assert step_names(db.session.get(Operation, deploy_op.id))[-2:] == [
        "Check the Docker engine that builds", "Prepare the builder's work directory"]
    sha = resolve_commit(env)
    op, status, artifact = run_operation(
        org, env, lambda ctx: ensure_artifact(ctx, env, sha, [servers[1]]))
    assert str(status) == "succeeded", op.error
    artifact = db.session.get(BuildArtifact, artifact.id)
    assert artifact.built_by_service_id == builder.id
    assert artifact.meta["build_server_id"] == servers[0].id
    names = step_names(op)
    assert "Upload source to sandbox-1" in names and "Pull image on sandbox-2" in names
    out = server_sh(sandbox.servers[1], f"docker run --rm {artifact.registry_ref} cat REVISION")
    assert out.strip() == sha
    assert_no_deploy_key_anywhere(sandbox, application)


def test_external_registry_pulls_the_prebuilt_image_by_digest_everywhere(app, org, sandbox):
    """external_registry (SPEC 6): no git at all (the application has no deploy key and its
    repository was never verified), the digest comes from the registry, every server pulls
    ``repository@digest``."""
    from app.registries.images import org_credentials, resolve_digest
    reg = sandbox.registry
    registry = Registry(organisation_id=org.id, name="sandbox", type=RegistryType.GENERIC,
                        url=reg.url, username=reg.username, password=reg.password)
    db.session.add(registry)
    db.session.commit()
    image = sandbox.images.get("php-base") or f"{reg.url}/{PHP_BASE}"
    application, env = new_application(org, sandbox, authorise=False,
                                       strategy="external_registry", image=image)
    application.deploy_key_private = None
    env.registry_id = registry.id
    db.session.commit()
    servers = add_servers(org, sandbox, 2)
    op, status, artifact = run_operation(org, env,
                                         lambda ctx: ensure_artifact(ctx, env, None, servers))
    assert str(status) == "succeeded", op.error
    names = step_names(op)
    assert BUILD_STEP not in names and "Fetch source" not in names
    assert f"Resolve {image} to a digest" in names
    artifact = db.session.get(BuildArtifact, artifact.id)
    digest = resolve_digest(image, org_credentials(org.id))
    assert artifact.registry_ref == image.rsplit(":", 1)[0] + "@" + digest
    assert artifact.commit_sha == digest.split(":", 1)[1] and artifact.meta["external"] is True
    for s in sandbox.servers[:2]:
        got = server_sh(s, f"docker image inspect --format '{{{{json .RepoDigests}}}}' "
                           f"{artifact.registry_ref}")
        assert artifact.registry_ref in json.loads(got), got


def test_verify_access_through_the_view_swaps_in_the_branch_list(app, client, sandbox):
    from tests.conftest import AuthActions, csrf_token_from
    auth = AuthActions(client)
    auth.signup(email=f"v-{uuid.uuid4().hex[:6]}@example.com")
    page = client.get("/applications/new").get_data(as_text=True)
    resp = client.post("/applications/new", data={
        "csrf_token": csrf_token_from(page), "name": f"sample-{uuid.uuid4().hex[:6]}",
        "repository_url": sandbox.git.sample_repo_url, "repository_type": "auto",
        "default_branch": "main"})
    assert resp.status_code == 302
    from app.models import Application
    application = db.session.execute(sa.select(Application)).scalars().all()[-1]
    url = f"/applications/{application.id}/verify"
    headers = {"HX-Request": "true", "X-CSRFToken": auth.csrf()}

    def verify() -> str:
        """The view starts a repository_verify operation; the worker's part runs here."""
        from app.jobs import run_operation
        from app.models import Operation
        assert "<html" not in client.post(url, headers=headers).get_data(as_text=True)
        op = db.session.execute(sa.select(Operation).order_by(Operation.id.desc())).scalars().first()
        assert op.kind == "repository_verify" and op.target_id == application.id
        run_operation(op.id)
        db.session.expire_all()
        return client.get(f"/applications/{application.id}/access").get_data(as_text=True)

    denied = verify()
    assert "not authorised for this repository" in denied and "<html" not in denied
    assert "trusted now, at first verification" in denied        # the host key, shown
    sandbox.git.authorize_key(application.deploy_key_public)
    html = verify()
    assert "Access works" in html and "<code>main</code>" in html
    assert 'id="repository-access"' in html and "verified" in html
    assert sandbox.git.host_key_fingerprint in html
