"""Issue 8 acceptance on real sandbox servers: deploys, zero downtime, migrations, scheduler,
failure, rollback. No mocks: the sample app is built from the sandbox git host on a sandbox
server, Postgres and Valkey are deployed and attached, the Caddy gateway routes a domain, and
every request goes through the server's published port 80 with the route's Host header.

The tests run in file order and build on each other (one module-scoped testbed).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from app.sandbox.testbed import wait_until
from tests.integration.testbeds import commit_of, running_testbed
from bench.loadgen import LoadGenerator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "deploys",
                 server_count=1) as tb:
        yield tb


class SchedulerWatch:
    """Polls which replicas hold the scheduler flag, every 0.2 s, across a deploy."""

    def __init__(self, server):
        self.server = server
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        script = ('for c in $(docker ps -q --filter label=dev.keystone.role=web); do '
                  'if docker exec "$c" test -e /tmp/keystone-scheduler >/dev/null 2>&1; then '
                  'docker inspect --format "{{.Name}}" "$c"; fi; done')
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            out = self.server.exec("sh", "-c", script, check=False, timeout=30).stdout
            self.samples.append((time.time(), sorted(out.split())))
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=40)


def schedule_runs(bed) -> list[tuple[str, float, float]]:
    """(hostname, started_at, finished_at) of every schedule:run, epoch seconds, by start."""
    rows = bed.psql("SELECT hostname, started_at, finished_at FROM schedule_runs"
                    " ORDER BY started_at, id")
    out = []
    for line in rows.splitlines():
        host, started, finished = line.split("|")
        out.append((host, float(started), float(finished)))
    return out


def assert_never_two_runners(runs, interval: int):
    """No two schedule:run processes overlap in time, and each tick (ticks are aligned to the
    interval, judged by when the process started) has at most one runner.

    The start and finish come from the PHP process itself, sub-second: a timestamp written
    by the database at the end of a slow run can fall in the next tick without any overlap.
    """
    ticks: dict[int, set[str]] = {}
    for host, started, _ in runs:
        ticks.setdefault(int(started // interval), set()).add(host)
    doubled = {t: hosts for t, hosts in ticks.items() if len(hosts) > 1}
    assert not doubled, f"two replicas ran the scheduler in the same tick: {doubled}"
    overlaps = []
    busy_until, busy_host = float("-inf"), None
    for host, started, finished in sorted(runs, key=lambda r: r[1]):
        if host != busy_host and started < busy_until:
            overlaps.append((busy_host, busy_until, host, started))
        if finished > busy_until:
            busy_until, busy_host = finished, host
    assert not overlaps, f"schedule:run overlapped on two replicas: {overlaps}"


# --------------------------------------------------------------------------- tests

def test_first_deploy_serves_the_commit_with_database_and_cache(bed, sandbox):
    from app.sandbox.sample import push_new_commit
    head = push_new_commit(sandbox.git)  # a good head, whatever an earlier session left there
    op = bed.deploy()
    assert op.result["commit"] == head
    env = bed.env
    assert env.status.value == "deployed"
    assert env.current_artifact.commit_sha == op.result["commit"]
    status, body = bed.get("/")
    assert status == 200, body
    data = json.loads(body)
    assert data["commit"] == op.result["commit"]
    assert data["database"]["reachable"] is True, data
    assert data["redis"]["reachable"] is True, data
    # Keys go under REDIS_PREFIX, as in a Laravel app: no NOPERM from the slice's ACL user.
    assert "error" not in data["redis"] and data["redis"]["hits"] >= 1, data
    assert data["redis"]["prefix"], data
    assert data["database"]["migrations"] == 2
    # One replica, recorded with its container id, digest and health, and it runs the scheduler.
    web = next(s for s in env.services if s.id == bed.web_id)
    live = [r for r in web.replicas if r.status.value == "running"]
    assert len(live) == 1
    replica = live[0]
    assert replica.container_id and replica.image_digest == env.current_artifact.image_digest
    assert replica.health_status.value == "healthy" and replica.config["slot"] == "blue"
    assert env.scheduler_replica_id == replica.id
    bed.first_op = op


def remote_commands(op) -> list[str]:
    """Every command an operation and its children ran on a server (recorded scripts)."""
    out = []
    for o in [op, *op.children, *(cc for c in op.children for cc in c.children)]:
        for step in o.steps:
            if step.server_id is not None and step.script:
                out += [line for line in step.script.splitlines() if line.strip()]
    return out


def step_names(op) -> list[str]:
    return [s.name for o in [op, *op.children, *(cc for c in op.children for cc in c.children)]
            for s in o.steps]


def test_redeploy_of_the_same_commit_changes_nothing(bed):
    before = bed.containers()
    op = bed.deploy()
    assert op.result["noop"] is True
    assert [c for c in op.children] == []
    plan = next(s for s in op.steps if s.name == "Plan the deploy")
    assert plan.status.value == "skipped" and "Nothing changed" in plan.logs
    assert bed.containers() == before
    # Issue 20.4: no server touched beyond reading facts (is the image still there?), no pull.
    commands = remote_commands(op)
    assert commands and all(c.startswith("docker image inspect ") for c in commands), commands
    assert not any(n.startswith("Pull image") for n in step_names(op))
    assert {"resolve", "artifact", "plan"} <= set(op.result["phases"])
    assert set(op.result["timing"]) >= {"total_s", "work_s", "overhead_s"}


def test_a_deploy_where_only_variables_changed_reuses_the_artifact(bed):
    """Issue 20.4: no fetch and no build (only `git ls-remote`); the web replica is replaced
    with the new value, through the usual cutover; the time per phase is on the result."""
    from app.attachments import set_user_variable
    from app.extensions import db
    commit = bed.commit_served()
    set_user_variable(bed.env, "VARS_ONLY_MARK", f"mark-{time.time_ns()}")
    db.session.commit()
    op = bed.deploy()
    names = step_names(op)
    assert "Reuse build artifact" in names and any(n.startswith("Resolve ") for n in names)
    assert "Fetch source" not in names and "Build image" not in names, names
    assert op.result["noop"] is False and "web" in op.result["changed_services"]
    assert op.result["commit"] == commit == bed.commit_served()
    assert {"start", "health", "gateway", "drain", "stop"} <= set(op.result["phases"])
    assert "build" not in op.result["phases"] and "fetch" not in op.result["phases"]
    assert len(bed.containers()) == 1


def test_new_commit_zero_downtime_migration_once_scheduler_single(bed, sandbox):
    from app.sandbox.sample import push_new_commit
    old_commit = bed.commit_served()
    new_commit = push_new_commit(sandbox.git)
    # Let the old replica run the scheduler a few ticks first.
    time.sleep(bed.scheduler_interval * 2 + 1)
    load = LoadGenerator(bed.http_port(), bed.hostname, rps=60, connections=4,
                         body_key=commit_of, max_seconds=600)
    with SchedulerWatch(bed.sandbox_servers[0]) as watch, load:
        op = bed.deploy()
        # The new replica runs the scheduler for a few ticks after the cutover.
        time.sleep(bed.scheduler_interval * 2 + 1)
    stats = load.stats
    assert op.result["commit"] == new_commit != old_commit
    assert bed.commit_served() == new_commit
    assert stats.requests > 50
    assert (stats.non_2xx, stats.connection_errors, stats.post_failures) == (0, 0, 0), stats
    assert set(stats.bodies) <= {old_commit, new_commit}
    # Migrations ran exactly once in this deploy, in a one-off container.
    migrate_steps = [s for child in [op] for s in child.steps if s.name.startswith("Run migrations")]
    assert len(migrate_steps) == 1 and op.result["migrations_ran"] == 1
    assert "Nothing to migrate" in migrate_steps[0].logs
    assert bed.psql("SELECT COUNT(*), COUNT(DISTINCT migration) FROM migrations").strip() == "2|2"
    # No gateway configuration change on this deploy (the slots were routed at the first one).
    kinds = [c.kind.value for c in op.children]
    assert "slice_configure" not in kinds and "gateway_cutover" in kinds
    # Exactly one replica held the scheduler flag at every moment sampled across the cutover,
    # and the schedule:run records agree: never two runners in one tick, both replicas ran it.
    assert watch.samples and all(len(holders) <= 1 for _, holders in watch.samples), \
        [s for s in watch.samples if len(s[1]) > 1]
    holders = [h[0] for _, h in watch.samples if h]
    assert len(set(holders)) == 2, holders      # it moved from the old to the new replica
    runs = schedule_runs(bed)
    assert_never_two_runners(runs, bed.scheduler_interval)
    assert len({host for host, _, _ in runs}) >= 2
    bed.second_commit = new_commit


def test_broken_commit_fails_and_the_old_commit_serves_throughout(bed, sandbox):
    from app.sandbox.sample import push_broken_commit
    good = bed.commit_served()
    caddyfile = bed.sandbox_servers[0].exec("sha256sum", "/home/keystone/gateway/Caddyfile").stdout
    push_broken_commit(sandbox.git)
    load = LoadGenerator(bed.http_port(), bed.hostname, rps=40, connections=2,
                         body_key=commit_of, max_seconds=600)
    with load:
        op = bed.deploy(expect="failed")
    stats = load.stats
    assert stats.requests > 20
    assert dict(stats.bodies) == {good: stats.requests}, stats.bodies
    assert (stats.non_2xx, stats.connection_errors) == (0, 0), stats
    assert bed.commit_served() == good
    # The failing replica was removed and its last log lines kept on the step.
    text = json.dumps([[s.name, s.logs] for c in op.children for cc in [c, *c.children]
                       for s in cc.steps])
    assert "never became healthy" in text
    assert "Remove ks-" in text and "docker logs --tail 40" in text
    assert len(bed.containers()) == 1
    after = bed.sandbox_servers[0].exec("sha256sum", "/home/keystone/gateway/Caddyfile").stdout
    assert after == caddyfile  # the gateway was not touched
    assert bed.env.status.value == "deployed"


def test_rollback_brings_back_the_previous_commit(bed):
    from app.extensions import db
    from app.models import BuildArtifact
    first = db.session.get(BuildArtifact, bed.first_op.result["artifact_id"])
    op = bed.deploy(artifact=first)
    assert op.result["rollback"] is True and op.result["commit"] == first.commit_sha
    assert wait_until(lambda: bed.commit_served() == first.commit_sha, 10)
    assert any(s.name.startswith("Roll back to build") and "not reversed" in s.logs
               for s in op.steps)
    assert len(bed.containers()) == 1


def test_a_failed_migration_never_starts_the_new_replicas(bed):
    """The migrations run while the new replicas are created; a replica starts only once
    they succeeded. Here they fail: the created replica is removed without ever starting,
    the deploy fails with the migration's error and the old replica keeps serving."""
    from app.extensions import db
    from app.models import EnvironmentVariable, Service
    from app.models.enums import VariableSource
    serving = bed.commit_served()
    (old,) = bed.containers()
    web = db.session.get(Service, bed.web_id)
    config = dict(web.config or {})
    web.config = {**config, "migration_command": "php artisan migrate:no-such-command"}
    variable = EnvironmentVariable(environment_id=bed.env_id, key="MIGRATION_FAILS",
                                   value="1", source=VariableSource.USER)
    db.session.add(variable)
    db.session.commit()
    try:
        # The build that serves now (the branch head is the broken commit), a new variable.
        op = bed.deploy(expect="failed", artifact=bed.env.current_artifact)
        steps = [s for c in [op, *op.children] for cc in [c, *c.children] for s in cc.steps]
        migrate = next(s for s in steps if s.name.startswith("Run migrations"))
        assert migrate.status.value == "failed"
        assert "migrate:no-such-command" in migrate.error_logs
        assert "migrate:no-such-command" in (op.error or "")  # the migration's error, on top
        start = next(s for s in steps if s.name.startswith("Start ks-web-"))
        assert "up --no-start" in start.script
        assert "not started: the migrations did not succeed" in start.error_logs
        assert "docker start" not in start.script  # created, never started
        assert bed.containers() == [old] and bed.commit_served() == serving
        new = start.name.split()[1]
        gone = bed.sandbox_servers[0].exec("docker", "container", "inspect", new, check=False)
        assert gone.returncode != 0  # removed, not left created
    finally:
        db.session.expire_all()
        web = db.session.get(Service, bed.web_id)
        web.config = config
        db.session.delete(db.session.get(EnvironmentVariable, variable.id))
        db.session.commit()


def test_add_worker_deploys_a_queue_worker_stopped_gracefully(bed, sandbox):
    from app.deploys.service import add_role_service
    from app.extensions import db
    from app.models import Service
    from app.sandbox.sample import push_new_commit
    worker = add_role_service(bed.env, "worker")
    assert worker.process_roles == ["worker"]
    # Redeploy the build that runs now (the branch head is the broken commit): only the new
    # worker service has something to do.
    op = bed.deploy(artifact=bed.env.current_artifact)
    assert op.result["changed_services"] == ["worker"]   # the web service is left alone
    assert "migrations_ran" not in op.result
    db.session.expire_all()
    worker = db.session.get(Service, worker.id)
    live = [r for r in worker.replicas if r.status.value == "running"]
    assert len(live) == 1
    server = bed.sandbox_servers[0]
    cmdline = server.exec("docker", "exec", live[0].container_name, "cat", "/proc/1/cmdline",
                          check=False).stdout
    ps = server.exec("docker", "top", live[0].container_name, check=False).stdout
    assert "queue:work" in ps, (cmdline, ps)
    # A new commit redeploys web and worker; the old worker gets SIGTERM and exits by itself
    # (the sample's queue:work finishes its job and stops), well before its grace period.
    push_new_commit(sandbox.git)
    op = bed.deploy()
    assert sorted(op.result["changed_services"]) == ["web", "worker"]
    stops = [s for c in op.children if c.kind.value == "gateway_cutover" for s in c.steps
             if s.name.startswith(f"Stop ks-worker-{worker.id}-")]
    assert len(stops) == 1 and "up to 70s" in stops[0].name
    assert stops[0].duration_seconds < 60, stops[0].logs


def test_storage_persists_across_deploys_and_is_shared_by_web_and_worker(bed, sandbox):
    """Issue 13, defect 3: storage/ is a named volume per environment per server.

    A file written under storage/app/public by the web replica is seen by the
    worker replica on the same server, and is still there in the new replicas
    of the next deploy (different containers, same volume). Laravel's
    directories exist in the volume, owned by the user the app runs as.
    """
    import secrets
    from app.drivers.laravel.driver import STORAGE_PATH, storage_volume_name
    from app.sandbox.sample import push_new_commit
    server = bed.sandbox_servers[0]
    env = bed.env
    volume = storage_volume_name(env.id)
    worker_id = next(s.id for s in env.services if s.process_roles == ["worker"])

    def live():
        (web,) = bed.containers()
        (worker,) = bed.containers(service_id=worker_id)
        return web, worker

    def mounts(container):
        info = json.loads(server.exec("docker", "inspect", container).stdout)[0]
        return {m.get("Name"): m["Destination"] for m in info["Mounts"] if m["Type"] == "volume"}

    def read(container, path):
        return server.exec("docker", "exec", container, "cat", path, check=False).stdout

    token = secrets.token_hex(8)
    probe = f"{STORAGE_PATH}/app/public/keystone-probe-{token}.txt"
    web, worker = live()
    for container in (web, worker):
        assert mounts(container).get(volume) == STORAGE_PATH, mounts(container)
    server.exec("docker", "exec", web, "sh", "-c", 'printf %s "$1" > "$2"', "sh", token, probe)
    assert read(worker, probe) == token               # shared by web and worker
    # Laravel's directories, owned by the app's user (not root), in the volume.
    user = server.exec("docker", "exec", web, "id", "-un").stdout.strip()
    owners = server.exec("docker", "exec", web, "stat", "-c", "%U %n",
                         *[f"{STORAGE_PATH}/{d}" for d in
                           ("app/public", "framework/cache", "framework/sessions",
                            "framework/views", "logs")]).stdout.split("\n")
    assert [line.split()[0] for line in owners if line] == [user] * 5, owners

    push_new_commit(sandbox.git)
    op = bed.deploy()
    assert sorted(op.result["changed_services"]) == ["web", "worker"]
    new_web, new_worker = live()
    assert new_web != web and new_worker != worker    # new containers ...
    assert read(new_web, probe) == token               # ... the same files
    assert read(new_worker, probe) == token
    assert mounts(new_web).get(volume) == STORAGE_PATH
    server.exec("docker", "exec", new_web, "rm", "-f", probe, check=False)


def test_external_registry_deploys_an_image_by_digest_without_git(bed, sandbox):
    """SPEC 6, external_registry (issue 21 item 1): an image pushed to the registry by someone
    else (here: the running build, retagged and pushed out of band, as a CI would) is
    deployed by its reference, pinned to the digest the registry serves, with no deploy key
    and no git at all. Last in the module: the environment stays on external_registry."""
    import uuid

    from app.extensions import db
    from app.registries.images import org_credentials, resolve_digest
    env = bed.env
    built = env.current_artifact
    server = bed.sandbox_servers[0]
    reg = sandbox.registry
    ref = f"{reg.url}/keystone-test/prebuilt-{uuid.uuid4().hex[:6]}:v1"
    conf = f"/tmp/ci-docker-{uuid.uuid4().hex[:6]}"   # the "CI"'s own login, removed after
    try:
        server.exec("docker", "--config", conf, "login", "-u", reg.username,
                    "--password-stdin", reg.url, input=reg.password)
        server.exec("docker", "tag", built.image_tag if not built.registry_ref
                    else built.registry_ref, ref)
        server.exec("docker", "--config", conf, "push", ref)
    finally:
        server.exec("rm", "-rf", conf, check=False)
        server.exec("docker", "image", "rm", ref, check=False)
    digest = resolve_digest(ref, org_credentials(bed.org_id))

    env.build_config = {**(env.build_config or {}), "strategy": "external_registry",
                        "image": ref}
    env.application.deploy_key_private = None       # no git possible
    db.session.commit()
    op = bed.deploy()
    names = [s.name for s in op.steps]
    assert not any(n.startswith("Resolve main") or n == "Fetch source" for n in names), names
    resolved = next(s for s in op.steps if s.name == f"Resolve {ref} to a digest")
    assert digest in resolved.logs
    env = bed.env
    artifact = env.current_artifact
    assert artifact.registry_ref == ref.rsplit(":", 1)[0] + "@" + digest
    assert artifact.meta["external"] is True and artifact.commit_sha == digest.split(":")[1]
    assert wait_until(lambda: bed.commit_served() == built.commit_sha, 30)
    web = next(s for s in env.services if s.id == bed.web_id)
    [live] = [r for r in web.replicas if r.status.value == "running"]
    assert live.image_digest == digest
    image = server.exec("docker", "inspect", "--format", "{{.Config.Image}}",
                        live.container_name).stdout.strip()
    assert image == artifact.registry_ref
