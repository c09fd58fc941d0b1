"""Drivers on real sandbox servers (issue 6 acceptance): no mocks.

One module-scoped world: an organisation whose server is the last sandbox
server (reached over SSH as Keystone reaches any server), the sandbox
registry, and Postgres / Valkey / Caddy services pointed at the stand-in
images through ``config["image"]``. Service ids are random so runs (and
other engineers' tests on the same sandbox) never share a container or a
volume; everything this module created is removed at the end.

The tests run in file order and build on each other.
"""
from __future__ import annotations

import json
import random
import subprocess
import time
import urllib.request

import pytest

from app.sandbox import push_image
from app.sandbox.testbed import MANAGEMENT_USER

pytestmark = pytest.mark.integration

TRICKY = {
    "KS_NEWLINES": "line1\nline2\n\nline4",
    "KS_CMDSUB": "$(id)",
    "KS_BRACED": "${HOME}",
    "KS_BARE": "$HOME and $$ and $",
    "KS_DQ": 'say "hi"',
    "KS_SQ": "it's",
    "KS_BACKSLASH": "a\\b\\\\c\\n",
    "KS_TRAILING_BS": "ends with \\",
    "KS_MIXED": "'\"\\$`!#;&|<> \t*?[~",
    "KS_HASH": "value # not a comment",
    "KS_SPACES": "  padded  ",
    "KS_EMPTY": "",
    "KS_UNICODE": "grüße ✓",
    "KS_EQUALS": "a=b=c",
    "KS_BACKTICK": "`id`",
}


class World:
    pass


def _run_op(op_id: int):
    from app.extensions import db
    from app.models import Operation
    from app.operations.runner import execute_operation
    status = execute_operation(op_id)
    db.session.expire_all()
    op = db.session.get(Operation, op_id)
    if status != "succeeded":
        lines = [f"operation {op.id} {op.kind} {status}: {op.error}"]
        for step in op.steps:
            lines.append(f"--- {step.name} [{step.status}]\n{step.logs[-3000:]}\n{step.error_logs}")
        for child in op.children:
            lines.append(f"child {child.id} {child.status}: {child.error}")
        pytest.fail("\n".join(lines), pytrace=False)
    return op


@pytest.fixture(scope="module")
def world(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from tests.conftest import make_app
    from app.accounts import create_account
    from app.extensions import db
    from app.models import (Application, Environment, Registry, Server, Service)
    from app.models.enums import DeployPolicy, ServiceCategory, ServerStatus

    srv = sandbox.servers[-1]
    reg = sandbox.registry
    # Our own repository (not the shared stand-in one) so the "new digest" push below
    # never changes what other tests resolve.
    pg_tag = "keystone-drivers-test/postgres:18"
    push_image(reg, "keystone-sandbox/postgres:18", pg_tag)  # the host's stand-in build

    # Runs before issue 13's defect 6 was fixed logged the server's engine in with the
    # default config; start from a clean one so the credential check below is about this run.
    srv.exec("docker", "logout", reg.url, check=False)
    tmp = tmp_path_factory.mktemp("drivers")
    app = make_app(tmp, migrated_db_template, redis_url)
    ctx = app.app_context()
    ctx.push()
    w = World()
    w.app, w.sandbox, w.srv, w.reg = app, sandbox, srv, reg
    user = create_account(organisation="Drivers", email="drivers@example.com",
                          password="correct horse battery")
    org = user.organisation
    org.management_key_private = srv.root_key_path.read_text()
    server = Server(organisation=org, name="drv-1", public_ip=srv.host, ssh_port=srv.ssh_port,
                    private_ip=srv.private_ip, management_user=MANAGEMENT_USER,
                    host_key_fingerprint=srv.host_key_fingerprint, status=ServerStatus.ACTIVE)
    registry = Registry(organisation=org, name="sandbox", url=reg.url, username=reg.username,
                        password=reg.password)
    app_row = Application(organisation=org, name="shop", repository_url="git@example.com:s.git")
    env = Environment(application=app_row, name="production", branch="main")
    base = random.randint(100_000, 900_000)
    images = sandbox.images
    pg = Service(id=base, organisation=org, server=server, name="pg", type="postgres",
                 driver_name="postgres", category=ServiceCategory.DATABASE, version_track="18",
                 deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                 config={"image": f"{reg.url}/{pg_tag}"})
    vk = Service(id=base + 1, organisation=org, server=server, name="cache", type="valkey",
                 driver_name="valkey", category=ServiceCategory.CACHE, version_track="8",
                 deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                 config={"image": images.get("valkey", f"{reg.url}/keystone-sandbox/valkey:8")})
    gw = Service(id=base + 2, organisation=org, server=server, name="gateway", type="caddy",
                 driver_name="caddy", category=ServiceCategory.GATEWAY, version_track="2",
                 deploy_policy=DeployPolicy.MANUAL_OR_ON_ROUTE_CHANGE,
                 config={"image": images.get("caddy", f"{reg.url}/keystone-sandbox/caddy:2")})
    web = Service(id=base + 3, organisation=org, environment=env, name="web", type="laravel",
                  driver_name="laravel", category=ServiceCategory.APPLICATION,
                  process_roles=["web"], config={"health_path": "/"})
    db.session.add_all([server, registry, app_row, env, pg, vk, gw, web])
    db.session.commit()
    w.org, w.user, w.server, w.env, w.pg, w.vk, w.gw, w.web = org, user, server, env, pg, vk, gw, web
    w.pg_tag = pg_tag
    w.php_image = images.get("php-base", f"{reg.url}/keystone-sandbox/php-base:8.3-fpm")
    w.probe = f"ks-probe-{base}"
    yield w
    _cleanup(w, base)
    db.session.remove()
    ctx.pop()


def _cleanup(w: World, base: int) -> None:
    s = w.srv
    ids = [str(base + i) for i in range(4)]
    out = s.exec("docker", "ps", "-aq", "--filter", "label=dev.keystone.managed=true",
                 "--format", "{{.ID}} {{.Label \"dev.keystone.service\"}}", check=False).stdout
    doomed = [line.split()[0] for line in out.splitlines() if line.split()[1:] and
              line.split()[1] in ids]
    if doomed:
        s.exec("docker", "rm", "-f", *doomed, check=False)
    s.exec("docker", "rm", "-f", w.probe, check=False)
    vols = s.exec("docker", "volume", "ls", "-q", check=False).stdout.split()
    mine = [v for v in vols if any(v.startswith(f"keystone_service_{i}_") for i in ids)]
    mine += [v for v in vols if v == f"keystone_env_{w.env.id}_storage"]   # the probe's
    if mine:
        s.exec("docker", "volume", "rm", "-f", *mine, check=False)
    s.exec("rm", "-rf", *[f"/home/keystone/services/{i}" for i in ids], "/tmp/ks-probe",
           check=False)
    s.exec("rm", "-f", "/home/keystone/gateway/Caddyfile", "/home/keystone/gateway/Caddyfile.next",
           "/home/keystone/gateway/Caddyfile.last-good", check=False)


# --------------------------------------------------------------------------- tests

def test_deploy_postgres_valkey_and_caddy(world):
    from app.services_ops.deploy import start_service_deploy
    from app.extensions import db
    from app.models.enums import ReplicaStatus, ServiceStatus, UpdateStatus
    w = world
    for svc in (w.pg, w.vk, w.gw):
        op = _run_op(start_service_deploy(svc, enqueue=False).id)
        db.session.refresh(svc)
        assert svc.status == ServiceStatus.RUNNING, svc.name
        assert svc.current_image_digest and svc.current_image_digest.startswith("sha256:")
        assert op.image_digest == svc.current_image_digest
        replica = svc.replicas[0]
        assert replica.status == ReplicaStatus.RUNNING
        assert replica.image_digest == svc.current_image_digest
        assert svc.update_status == UpdateStatus.CURRENT
        # The container runs the pinned digest, with our labels, on the shared network.
        info = json.loads(w.srv.exec("docker", "inspect", replica.container_name).stdout)[0]
        assert info["Config"]["Image"].endswith("@" + svc.current_image_digest)
        assert info["Config"]["Labels"]["dev.keystone.service"] == str(svc.id)
        assert info["Config"]["Labels"]["dev.keystone.operation"] == str(op.id)
        assert "keystone" in info["NetworkSettings"]["Networks"]
        mode = w.srv.exec("stat", "-c", "%a", f"/home/keystone/services/{svc.id}/.env").stdout
        assert mode.strip() == "600"
        w.srv.exec("docker", "compose", "--project-directory", f"/home/keystone/services/{svc.id}",
                   "-f", f"/home/keystone/services/{svc.id}/compose.yml", "--env-file",
                   f"/home/keystone/services/{svc.id}/compose.env", "config", "-q")
    pg_info = json.loads(w.srv.exec("docker", "inspect", w.pg.replicas[0].container_name).stdout)[0]
    mounts = {m.get("Name"): m["Destination"] for m in pg_info["Mounts"]}
    assert mounts[f"keystone_service_{w.pg.id}_postgres_data"] == "/var/lib/postgresql"
    # The gateway owns 80 on the server; unknown hosts get our catch-all.
    body = _http(w.srv.http_port, "unknown.keystone.test")
    assert body == (404, "Keystone: no route for this host")


def test_driver_image_pulls_leave_no_registry_credentials_on_the_server(world):
    """Issue 13, defect 6: the pull logs in with an operation-private DOCKER_CONFIG and logs out.

    The stand-in images live in the sandbox registry, which needs a password,
    so the deploys above had to log in. Afterwards neither the management
    user's ~/.docker/config.json nor any file under /home/keystone holds the
    password or the ``auth`` Docker would write for it.
    """
    import base64
    from app.models import Operation
    from app.extensions import db
    w = world
    reg = w.reg
    pulls = [s for op in db.session.execute(db.select(Operation).where(
        Operation.target_type == "service", Operation.target_id == w.pg.id)).scalars()
        for s in op.steps if s.name.startswith("Pull ")]
    assert pulls, "the Postgres deploy recorded no pull step"
    logs = "\n".join(s.logs or "" for s in pulls)
    assert f"docker login {reg.url} as {reg.username}" in logs      # it did log in
    assert reg.password not in logs

    home = w.srv.exec("getent", "passwd", w.server.management_user).stdout.split(":")[5]
    config = w.srv.exec("cat", f"{home}/.docker/config.json", check=False)
    if config.returncode == 0:
        auths = json.loads(config.stdout or "{}").get("auths", {})
        assert reg.url not in auths, config.stdout
        assert not any(entry.get("auth") for entry in auths.values()), config.stdout
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    for needle in (reg.password, auth):
        found = w.srv.exec("grep", "-rlsF", "--", needle, "/home/keystone", f"{home}/.docker",
                           check=False)
        assert found.returncode != 0 and found.stdout.strip() == "", found.stdout
    # No operation-private config directory is left behind either.
    left = w.srv.exec("find", "/home/keystone/operations", "-maxdepth", "2", "-name",
                      "docker-pull-*", check=False).stdout.strip()
    assert left == ""


def test_second_gateway_on_the_same_server_is_refused(world):
    from app.drivers.caddy.driver import GatewayConflict, assert_single_gateway
    from app.models import Service
    from app.models.enums import ServiceCategory
    other = Service(organisation=world.org, server=world.server, name="gw2", type="caddy",
                    driver_name="caddy", category=ServiceCategory.GATEWAY)
    with pytest.raises(GatewayConflict, match="exactly one per server"):
        assert_single_gateway(other)


def test_attach_postgres_and_valkey_then_connect_from_the_network(world):
    from app.attachments import (attach_postgres, attach_valkey, effective_environment,
                                 recommendations_for, start_slice_provision)
    from app.extensions import db
    from app.models.enums import SliceStatus, VariableSource
    w = world
    _, pg_slice = attach_postgres(w.env, w.pg)
    _, vk_slice = attach_valkey(w.env, w.vk)
    db.session.commit()
    for s in (pg_slice, vk_slice):
        _run_op(start_slice_provision(s, enqueue=False).id)
        db.session.refresh(s)
        assert s.status == SliceStatus.READY
    db.session.refresh(w.env)
    managed = {v.key: v for v in w.env.variables if v.source == VariableSource.MANAGED_ATTACHMENT}
    assert {"DB_CONNECTION", "DB_HOST", "DB_PORT", "DB_DATABASE", "DB_USERNAME", "DB_PASSWORD",
            "REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD"} <= set(managed)
    assert managed["DB_HOST"].value == f"pg-{w.pg.id}.internal"
    assert managed["DB_PASSWORD"].overridable is False and managed["DB_HOST"].overridable
    assert {r.key for r in recommendations_for(w.env)} == {"CACHE_STORE", "CACHE_DRIVER",
                                                           "SESSION_DRIVER"}

    # A Laravel-runtime container rendered by the driver, with the effective env + tricky values.
    env = {**effective_environment(w.env), **TRICKY}
    _start_probe(w, env)
    script = r"""
$pdo = new PDO('pgsql:host='.getenv('DB_HOST').';port='.getenv('DB_PORT').';dbname='.getenv('DB_DATABASE'),
               getenv('DB_USERNAME'), getenv('DB_PASSWORD'));
$pdo->exec('CREATE TABLE IF NOT EXISTS ks_probe (v text)');
$pdo->exec("INSERT INTO ks_probe VALUES ('kept')");
echo 'pg:', $pdo->query('SELECT count(*) FROM ks_probe')->fetchColumn(), "\n";
$r = new Redis();
$r->connect(getenv('REDIS_HOST'), (int) getenv('REDIS_PORT'));
$r->auth([getenv('REDIS_USERNAME'), getenv('REDIS_PASSWORD')]);
$r->setOption(Redis::OPT_PREFIX, getenv('REDIS_PREFIX'));
$r->set('greeting', 'hello');
echo 'redis:', $r->get('greeting'), "\n";
$r->setOption(Redis::OPT_PREFIX, '');
try { $ok = $r->set('someone-else:key', 'x'); echo 'outside:', $ok ? 'ALLOWED' : 'denied', "\n"; }
catch (RedisException $e) { echo 'outside:denied', "\n"; }
"""
    out = w.srv.exec("docker", "exec", w.probe, "php", "-r", script).stdout
    assert "pg:1" in out
    assert "redis:hello" in out
    assert "outside:denied" in out
    # The key really is under the slice's prefix.
    keys = w.srv.exec("docker", "exec", w.vk.replicas[0].container_name, "valkey-cli", "--scan",
                      "--pattern", "*greeting").stdout.split()
    assert keys == [f"{vk_slice.config['prefix']}greeting"]


def _pull_privately(w, image):
    """Pull from the sandbox registry the way Keystone does: a throw-away DOCKER_CONFIG,
    logout after. (The server's own engine is not logged in: issue 13, defect 6.)"""
    script = ('d=$(mktemp -d) && DOCKER_CONFIG=$d docker login -u "$1" --password-stdin "$2" '
              '>/dev/null && DOCKER_CONFIG=$d docker pull -q "$3"; rc=$?; '
              'DOCKER_CONFIG=$d docker logout "$2" >/dev/null 2>&1; rm -rf "$d"; exit $rc')
    w.srv.exec("sh", "-c", script, "sh", w.reg.username, w.reg.url, image,
               input=w.reg.password + "\n")


def _start_probe(w, env):
    from app.drivers import get_driver
    lv = get_driver("laravel")
    rendered = lv.render_replica(w.web, image=w.php_image, project_name=w.probe,
                                 container_name=w.probe, environment=env, replica_id=1,
                                 directory="/tmp/ks-probe")
    d = rendered.directory
    w.srv.exec("mkdir", "-p", d)
    w.srv.exec("sh", "-c", 'cat > "$1"', "sh", f"{d}/compose.yml", input=rendered.compose_yaml)
    w.srv.exec("sh", "-c", 'cat > "$1"', "sh", f"{d}/.env", input=rendered.env_file)
    w.srv.exec("sh", "-c", 'cat > "$1"', "sh", f"{d}/compose.env", input="")
    base = ["docker", "compose", "--project-name", w.probe, "--project-directory", d, "-f",
            f"{d}/compose.yml", "--env-file", f"{d}/compose.env"]
    w.srv.exec(*base, "config", "-q")
    _pull_privately(w, w.php_image)
    w.srv.exec(*base, "up", "-d")
    w.rendered_probe = rendered
    for _ in range(60):
        if w.srv.exec("docker", "exec", w.probe, "true", check=False).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError("probe container did not start")


def test_env_values_arrive_byte_for_byte(world):
    w = world
    raw = w.srv.exec("docker", "exec", w.probe, "env", "-0").stdout
    got = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
    for key, value in TRICKY.items():
        assert got.get(key) == value, (key, value, got.get(key))
    # Both channels were exercised: some values via .env, others via compose environment:.
    assert "KS_DQ=" in w.rendered_probe.env_file
    assert "KS_BRACED" in w.rendered_probe.compose["services"]["web"]["environment"]


def test_caddy_route_slice_serves_and_reloads_without_restart(world):
    from app.attachments import attach_domain, start_slice_provision
    from app.extensions import db
    from app.models.enums import SliceStatus
    w = world
    w.srv.exec("docker", "exec", w.probe, "sh", "-c",
               "echo '<?php echo \"hello from \".gethostname();' > public/index.php")
    _, route = attach_domain(w.env, w.gw, ["app.keystone.test"], tls="off")
    route.config = {**route.config, "upstreams": [{"host": w.probe, "port": 8080}]}
    db.session.commit()
    gw_container = w.gw.replicas[0].container_name
    started = _started_at(w, gw_container)
    _run_op(start_slice_provision(route, enqueue=False).id)
    db.session.refresh(route)
    assert route.status == SliceStatus.READY
    assert _http(w.srv.http_port, "app.keystone.test") == (200, f"hello from {_hostname(w)}")
    # The file on the server passes `caddy validate`; the last good one is kept.
    w.srv.exec("docker", "exec", gw_container, "caddy", "validate", "--config",
               "/etc/caddy/Caddyfile", "--adapter", "caddyfile")
    assert w.srv.exec("test", "-f", "/home/keystone/gateway/Caddyfile.last-good",
                      check=False).returncode == 0
    assert _started_at(w, gw_container) == started  # reloaded, never restarted
    # Same config again: an explicit no-op.
    op = _run_op(start_slice_provision(route, enqueue=False).id)
    assert [s.status for s in op.steps if s.name == "Install gateway configuration"] == ["skipped"]


def _hostname(w):
    return w.srv.exec("docker", "exec", w.probe, "hostname").stdout.strip()


def _started_at(w, container):
    return w.srv.exec("docker", "inspect", "--format", "{{.State.StartedAt}}", container).stdout


def _http(port: int, host: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_postgres_update_to_a_new_digest_keeps_the_volume_and_data(world, tmp_path):
    from app.services_ops.deploy import start_service_deploy
    from app.services_ops.updates import check_for_update
    from app.extensions import db
    from app.models.enums import UpdateStatus
    from app.operations import StepFailed
    w = world
    old = w.pg.current_image_digest
    # A new image on the same track: the stand-in with one more label, pushed to the same tag.
    src = f"{w.reg.url}/{w.pg_tag}"
    (tmp_path / "Dockerfile").write_text(f"FROM {src}\nLABEL dev.keystone.test-update=\"{time.time()}\"\n")
    subprocess.run(["docker", "build", "-q", "-t", "ks-drivers-pg-next", str(tmp_path)], check=True,
                   capture_output=True)
    push_image(w.reg, "ks-drivers-pg-next", w.pg_tag)
    # Detected, shown, not applied.
    new = check_for_update(w.pg)
    db.session.commit()
    assert new and new != old
    assert w.pg.update_status == UpdateStatus.AVAILABLE and w.pg.current_image_digest == old
    with pytest.raises(StepFailed, match="Confirm the downtime"):
        start_service_deploy(w.pg, enqueue=False)
    vol = f"keystone_service_{w.pg.id}_postgres_data"
    created = w.srv.exec("docker", "volume", "inspect", "--format", "{{.CreatedAt}}", vol).stdout
    op = _run_op(start_service_deploy(w.pg, image_digest=new, confirm_downtime=True,
                                      enqueue=False).id)
    db.session.refresh(w.pg)
    assert w.pg.current_image_digest == new and op.result["updated"] is True
    assert w.pg.update_status == UpdateStatus.CURRENT and w.pg.available_image_digest is None
    assert w.pg.replicas[0].image_digest == new
    assert w.srv.exec("docker", "volume", "inspect", "--format", "{{.CreatedAt}}",
                      vol).stdout == created
    # The row written through the slice's credentials before the update is still there.
    slice_ = next(s for s in w.pg.slices)
    count = w.srv.exec("docker", "exec", w.pg.replicas[0].container_name, "psql", "-X", "-A",
                       "-t", "-U", "postgres", "-d", slice_.config["database"], "-c",
                       "SELECT count(*) FROM ks_probe").stdout.strip()
    assert count == "1"


def test_delete_slice_requires_confirmation_and_keeps_data_by_default(world):
    from app.attachments import AttachmentError, request_slice_delete
    from app.extensions import db
    from app.models.enums import SliceStatus, VariableSource
    w = world
    slice_ = next(s for s in w.pg.slices)
    with pytest.raises(AttachmentError, match="type the slice name"):
        request_slice_delete(slice_, confirm="nope", enqueue=False)
    _run_op(request_slice_delete(slice_, confirm=slice_.name, enqueue=False).id)
    db.session.refresh(slice_)
    assert slice_.status == SliceStatus.DELETED and slice_.config["data_retained"] is True
    container = w.pg.replicas[0].container_name
    dbs = w.srv.exec("docker", "exec", container, "psql", "-X", "-A", "-t", "-U", "postgres",
                     "-c", "SELECT datname FROM pg_database").stdout.split()
    assert slice_.config["database"] in dbs  # never dropped silently
    login = w.srv.exec("docker", "exec", container, "psql", "-X", "-A", "-t", "-U", "postgres",
                       "-c", f"SELECT rolcanlogin FROM pg_roles WHERE rolname = "
                             f"'{slice_.config['username']}'").stdout.strip()
    assert login == "f"
    db.session.refresh(w.env)
    assert not [v for v in w.env.variables if v.key.startswith("DB_")
                and v.source == VariableSource.MANAGED_ATTACHMENT]


def test_valkey_slice_rotate_then_drop_removes_keys_and_user(world):
    from app.attachments import (attach_valkey, request_slice_delete, start_credential_rotation,
                                 start_slice_provision)
    from app.extensions import db
    from app.models import Environment
    from app.models.enums import AttachmentRole, OperationKind, SliceStatus
    w = world
    env2 = Environment(application=w.env.application, name="staging", branch="dev")
    db.session.add(env2)
    db.session.flush()
    _, s = attach_valkey(env2, w.vk, role=AttachmentRole.QUEUE)
    db.session.commit()
    _run_op(start_slice_provision(s, enqueue=False).id)
    container = w.vk.replicas[0].container_name
    user, prefix = s.config["username"], s.config["prefix"]

    def cli(*args, password=None):
        return w.srv.exec("docker", "exec", container, "valkey-cli", "--no-auth-warning",
                          "--user", user, "--pass", password or s.credentials["password"],
                          *args, check=False).stdout.strip()

    assert cli("SET", f"{prefix}job", "1") == "OK"
    old_password = s.credentials["password"]
    op = start_credential_rotation(s, enqueue=False)
    assert op.kind == OperationKind.CREDENTIAL_ROTATION
    _run_op(op.id)
    db.session.refresh(s)
    assert s.credentials["password"] != old_password
    assert _refused(cli("PING", password=old_password))
    assert cli("GET", f"{prefix}job") == "1"
    _run_op(request_slice_delete(s, confirm=s.name, drop_data=True, enqueue=False).id)
    db.session.refresh(s)
    assert s.status == SliceStatus.DELETED and s.config["data_retained"] is False
    keys = w.srv.exec("docker", "exec", container, "valkey-cli", "--scan", "--pattern",
                      f"{prefix}*").stdout.split()
    assert keys == []
    assert _refused(cli("PING"))


def _refused(output: str) -> bool:
    """valkey-cli with a failed AUTH prints the reply of the command it then sends."""
    return any(word in output for word in ("NOAUTH", "WRONGPASS", "NOPERM"))
