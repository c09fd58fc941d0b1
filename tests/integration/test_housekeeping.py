"""Issue 23 on the sandbox: housekeeping after each deploy keeps exactly what rollback needs.

One bed (one provisioned server, the sandbox registry), keep=3, eight deploys of tiny
commits (each build reuses every layer but the source's). After each deploy the end
listener has started a housekeeping operation for the server; it is run. Then:

* exactly the running artifact plus the three newest others are on the server (by image
  id, selected by Keystone's label) and in the registry (HEAD by digest: 200 kept, 404
  pruned); the four older artifacts are ``pruned`` and rollback is not offered them;
* an image without Keystone's labels (tagged with a Keystone-like name) and a container
  Keystone did not create (named like a replica) are still there;
* rollback to each kept artifact works (the page serves its commit), and the housekeeping
  after each rollback removes nothing more;
* every Keystone container runs with json-file logging capped (``docker inspect``).
"""
from __future__ import annotations

import requests
import sqlalchemy as sa
import pytest

from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration

KEEP = 3
DEPLOYS = 8
FOREIGN_IMAGE = "keystone/sample-old:not-ours"
FOREIGN_CONTAINER = "ks-web-999-blue-op1"


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app.extensions import db
    from app.models import Registry
    from app.sandbox.testbed import PHP_BASE
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "housekeeping", server_count=1) as tb:
        env = tb.env
        env.registry_id = db.session.execute(sa.select(Registry.id).where(
            Registry.organisation_id == tb.org_id)).scalar_one()
        env.keep_artifacts = KEEP
        db.session.commit()
        server = tb.sandbox_servers[0]
        # Not Keystone's: an image with a Keystone-like name but none of its labels, and a
        # stopped container named like a replica that Keystone did not create.
        server.exec("docker", "tag", PHP_BASE, FOREIGN_IMAGE)
        server.exec("docker", "rm", "-f", FOREIGN_CONTAINER, check=False)
        server.exec("docker", "create", "--name", FOREIGN_CONTAINER, PHP_BASE, "true")
        try:
            yield tb
        finally:
            server.exec("docker", "rm", "-f", FOREIGN_CONTAINER, check=False)
            server.exec("docker", "image", "rm", FOREIGN_IMAGE, check=False)


def _housekeep_after(bed, deploy_op):
    """The housekeeping the deploy's end listener started: run it (no worker in tests)."""
    from app.housekeeping.handlers import active_housekeeping
    op = active_housekeeping(bed.server_ids[0])
    assert op is not None, f"no housekeeping was started after deploy #{deploy_op.id}"
    assert f"after deploy #{deploy_op.id}" in (op.summary or "")
    return bed.run(op.id)


def _keystone_image_ids(bed) -> set[str]:
    out = bed.sandbox_servers[0].exec(
        "docker", "image", "ls", "--quiet", "--no-trunc", "--filter",
        "label=dev.keystone.managed-dockerfile").stdout
    return set(out.split())


def _in_registry(bed, ref: str) -> bool:
    reg = bed.sandbox.registry
    repo, _, digest = ref.partition("@")
    path = repo.split("/", 1)[1]
    resp = requests.head(f"http://{reg.url}/v2/{path}/manifests/{digest}",
                         auth=(reg.username, reg.password), timeout=15, headers={
                             "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code in (200, 404), resp.status_code
    return resp.status_code == 200


def test_eight_deploys_keep_the_running_artifact_and_three_more(bed):
    from app.extensions import db
    from app.models import BuildArtifact
    from app.models.enums import ArtifactStatus
    from app.sandbox.sample import push_new_commit

    results = []
    for _ in range(DEPLOYS):
        push_new_commit(bed.sandbox.git)
        op = bed.deploy()
        results.append(_housekeep_after(bed, op).result)
    db.session.expire_all()
    artifacts = db.session.execute(sa.select(BuildArtifact).where(
        BuildArtifact.environment_id == bed.env_id).order_by(BuildArtifact.id)).scalars().all()
    assert len(artifacts) == DEPLOYS
    running = bed.env.current_artifact_id
    assert running == artifacts[-1].id
    kept, old = artifacts[-(KEEP + 1):], artifacts[:-(KEEP + 1)]

    # On the server: of this environment's artifacts, exactly the kept ones' images (the
    # shared sandbox server may hold other modules' Keystone images: not this bed's).
    ours = {a.meta["image_id"] for a in artifacts}
    assert _keystone_image_ids(bed) & ours == {a.meta["image_id"] for a in kept}
    # In the registry: kept manifests answer, pruned ones are deleted.
    assert all(a.registry_ref for a in artifacts)
    assert [_in_registry(bed, a.registry_ref) for a in artifacts] == \
        [False] * len(old) + [True] * len(kept)
    assert [a.status for a in old] == [ArtifactStatus.PRUNED] * len(old)
    assert [a.status for a in kept] == [ArtifactStatus.READY] * len(kept)
    # Rollback offers only what is kept (the page and the API list READY builds).
    offered = db.session.execute(sa.select(BuildArtifact.id).where(
        BuildArtifact.environment_id == bed.env_id,
        BuildArtifact.status == ArtifactStatus.READY)).scalars().all()
    assert sorted(offered) == [a.id for a in kept]
    # The operations said what they did.
    assert sum(r["images_removed"] for r in results) >= len(old)
    assert sorted(sum((r["artifacts_pruned"] for r in results), [])) == [a.id for a in old]
    assert all("freed_bytes" in r for r in results)
    assert results[-1]["kept_artifacts"] == sorted(a.id for a in kept)

    # Not Keystone's: untouched.
    server = bed.sandbox_servers[0]
    assert server.exec("docker", "image", "inspect", FOREIGN_IMAGE, check=False).returncode == 0
    assert server.exec("docker", "container", "inspect", FOREIGN_CONTAINER,
                       check=False).returncode == 0

    # Rollback to each kept artifact works; housekeeping after it removes nothing more.
    for artifact in reversed(kept[:-1]):
        op = bed.deploy(artifact=artifact)
        assert bed.commit_served() == artifact.commit_sha
        result = _housekeep_after(bed, op).result
        assert result["images_removed"] == 0 and result["artifacts_pruned"] == []
    assert _keystone_image_ids(bed) & ours == {a.meta["image_id"] for a in kept}

    # A pruned artifact cannot be rolled back to (the view's check).
    db.session.expire_all()
    assert db.session.get(BuildArtifact, old[-1].id).status == ArtifactStatus.PRUNED


def test_every_keystone_container_has_capped_json_logs(bed):
    import json
    server = bed.sandbox_servers[0]
    ids = server.exec("docker", "ps", "--quiet", "--filter",
                      "label=dev.keystone.managed=true").stdout.split()
    assert ids
    data = json.loads(server.exec("docker", "container", "inspect", *ids).stdout)
    configs = {c["Name"]: c["HostConfig"]["LogConfig"] for c in data}
    assert all(c["Type"] == "json-file" and c["Config"].get("max-size") == "10m"
               and c["Config"].get("max-file") == "3" for c in configs.values()), configs
