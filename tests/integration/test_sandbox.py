"""Acceptance tests of the sandbox (issue 3): real SSH, real Docker, real registry and git host."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import paramiko
import pytest
from click.testing import CliRunner

from app.sandbox import (
    BUSYBOX_IMAGE, Sandbox, SandboxInfo, Server, ensure_image, push_broken_commit, push_image, push_new_commit,
    remote_head, ssh_command,
)
from app.sandbox.cli import sandbox as sandbox_cli

pytestmark = pytest.mark.integration


def _fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def connect(server: Server, password: str | None = None) -> paramiko.SSHClient:
    """Connect with the host key pinned to what the sandbox reported (no AutoAddPolicy)."""
    client = paramiko.SSHClient()
    key_type, key_b64 = server.host_key.split()[:2]
    client.get_host_keys().add(f"[{server.host}]:{server.ssh_port}", key_type,
                               paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kwargs = dict(hostname=server.host, port=server.ssh_port, username=server.user, timeout=15,
                  allow_agent=False, look_for_keys=False)
    if password is None:
        kwargs["key_filename"] = str(server.root_key_path)
    else:
        kwargs["password"] = password
    client.connect(**kwargs)
    presented = client.get_transport().get_remote_server_key()
    assert _fingerprint(presented) == server.host_key_fingerprint
    return client


def run(client: paramiko.SSHClient, command: str, stdin: str | None = None, timeout: float = 180) -> tuple[int, str, str]:
    chan_in, out, err = client.exec_command(command, timeout=timeout)
    if stdin is not None:
        chan_in.write(stdin)
        chan_in.channel.shutdown_write()
    status = out.channel.recv_exit_status()
    return status, out.read().decode(), err.read().decode()


def test_each_server_answers_ssh_by_key_and_runs_docker_and_compose(sandbox: SandboxInfo):
    assert len(sandbox.servers) == 2
    for server in sandbox.servers:
        assert server.host == "127.0.0.1"
        assert server.host_key_fingerprint.startswith("SHA256:")
        assert oct(server.root_key_path.stat().st_mode & 0o777) == "0o600"
        client = connect(server)
        try:
            status, out, err = run(client, "docker info --format '{{.ServerVersion}} {{.Driver}}'")
            assert status == 0, err
            assert out.strip()
            status, out, err = run(client, "docker compose version")
            assert status == 0, err
            assert "version" in out.lower()
        finally:
            client.close()


def test_a_wrong_host_key_is_refused(sandbox: SandboxInfo):
    """Pinning works: the second server's key is not accepted for the first server."""
    first, second = sandbox.servers[:2]
    impostor = Server(**{**first.__dict__, "host_key": second.host_key,
                         "host_key_fingerprint": second.host_key_fingerprint})
    with pytest.raises(paramiko.SSHException):
        connect(impostor)


def test_host_keys_differ_between_servers(sandbox: SandboxInfo):
    keys = [s.host_key for s in sandbox.servers] + [sandbox.bare.host_key, sandbox.git.host_key]
    assert all(keys)
    assert len(set(keys)) == len(keys)
    fps = [s.host_key_fingerprint for s in sandbox.servers] + [sandbox.bare.host_key_fingerprint]
    assert len(set(fps)) == len(fps)


def test_password_login_is_refused_on_docker_servers(sandbox: SandboxInfo):
    server = sandbox.servers[0]
    with pytest.raises(paramiko.AuthenticationException):
        connect(server, password="anything")


def test_image_pushed_from_host_is_pulled_by_digest_on_two_servers(sandbox: SandboxInfo):
    ensure_image("busybox")
    repo = f"keystone-test/busybox-{uuid.uuid4().hex[:8]}"
    ref = push_image(sandbox.registry, BUSYBOX_IMAGE, f"{repo}:v1")
    assert ref.startswith(f"{sandbox.registry.url}/{repo}@sha256:")
    reg = sandbox.registry
    for i, server in enumerate(sandbox.servers[:2]):
        client = connect(server)
        try:
            status, out, err = run(client, f"docker login --username {shlex.quote(reg.username)} "
                                           f"--password-stdin {reg.url}", stdin=reg.password)
            assert status == 0, err
            status, out, err = run(client, f"docker pull {shlex.quote(ref)}")
            assert status == 0, err
            status, out, err = run(client, f"docker run --rm {shlex.quote(ref)} echo hello-from-{i}")
            assert status == 0, err
            assert out.strip() == f"hello-from-{i}"
        finally:
            client.close()


def test_servers_reach_each_other_over_the_private_network(sandbox: SandboxInfo, sandbox_manager: Sandbox):
    """A container published on server 2 is reached from server 1 at server 2's private IP."""
    from app.sandbox import load_images

    first, second = sandbox.servers[:2]
    load_images([second], [BUSYBOX_IMAGE])
    name = f"web-{uuid.uuid4().hex[:6]}"
    c2 = connect(second)
    c1 = connect(first)
    try:
        status, _, err = run(c2, f"docker run -d --name {name} -p 18080:80 {BUSYBOX_IMAGE}")
        assert status == 0, err
        deadline = time.monotonic() + 20
        while True:
            status, out, err = run(c1, f"curl -fsS http://{second.private_ip}:18080/")
            if status == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 0, err
        assert "keystone-sandbox busybox" in out
    finally:
        run(c2, f"docker rm -f {name}")
        c1.close()
        c2.close()


def _keypair(directory: Path, name: str) -> tuple[Path, str]:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return path, (directory / f"{name}.pub").read_text().strip()


def _ls_remote(url: str, key: Path, known_hosts: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_SSH_COMMAND": ssh_command(key, known_hosts)}
    return subprocess.run(["git", "ls-remote", url], env=env, capture_output=True, text=True, timeout=60)


def test_git_ls_remote_needs_the_authorised_deploy_key(sandbox: SandboxInfo, tmp_path: Path):
    deploy_key, deploy_pub = _keypair(tmp_path, "deploy")
    other_key, _ = _keypair(tmp_path, "other")
    sandbox.git.authorize_key(deploy_pub, "sample.git")
    url = sandbox.git.sample_repo_url
    assert url == f"ssh://git@127.0.0.1:{sandbox.git.port}/sample.git"

    ok = _ls_remote(url, deploy_key, sandbox.known_hosts_path)
    assert ok.returncode == 0, ok.stderr
    assert "refs/heads/main" in ok.stdout
    assert remote_head(sandbox.git) in ok.stdout

    denied = _ls_remote(url, other_key, sandbox.known_hosts_path)
    assert denied.returncode != 0
    assert "refs/heads/main" not in denied.stdout

    # The key is scoped to one repository and is read-only.
    sandbox.git.create_repo("other.git")
    assert _ls_remote(sandbox.git.repo_url("other.git"), deploy_key, sandbox.known_hosts_path).returncode != 0
    env = {**os.environ, "GIT_SSH_COMMAND": ssh_command(deploy_key, sandbox.known_hosts_path)}
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", url, str(clone)], env=env, check=True, timeout=60)
    (clone / "extra.txt").write_text("x\n")
    subprocess.run(["git", "-C", str(clone), "add", "extra.txt"], check=True)
    subprocess.run(["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)
    push = subprocess.run(["git", "-C", str(clone), "push", "origin", "HEAD:main"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert push.returncode != 0

    sandbox.git.revoke_key(deploy_pub)
    assert _ls_remote(url, deploy_key, sandbox.known_hosts_path).returncode != 0


def test_the_same_repository_url_works_from_inside_a_server(sandbox: SandboxInfo, tmp_path: Path):
    deploy_key, deploy_pub = _keypair(tmp_path, "deploy-in-server")
    sandbox.git.authorize_key(deploy_pub, "sample.git")
    server = sandbox.servers[0]
    client = connect(server)
    try:
        sftp = client.open_sftp()
        with sftp.file("/tmp/deploy_key", "w") as f:
            f.write(deploy_key.read_text())
        sftp.chmod("/tmp/deploy_key", 0o600)
        with sftp.file("/tmp/known_hosts", "w") as f:
            f.write(sandbox.known_hosts_path.read_text())
        sftp.close()
        cmd = (f"GIT_SSH_COMMAND={shlex.quote(ssh_command(Path('/tmp/deploy_key'), Path('/tmp/known_hosts')))} "
               f"git ls-remote {shlex.quote(sandbox.git.sample_repo_url)}; rc=$?; rm -f /tmp/deploy_key; exit $rc")
        status, out, err = run(client, cmd)
        assert status == 0, err
        assert remote_head(sandbox.git) in out
    finally:
        client.close()
        sandbox.git.revoke_key(deploy_pub)


def test_sample_commits_change_the_head(sandbox: SandboxInfo):
    before = remote_head(sandbox.git)
    new = push_new_commit(sandbox.git)
    assert new != before and remote_head(sandbox.git) == new
    broken = push_broken_commit(sandbox.git)
    assert broken != new and remote_head(sandbox.git) == broken


def test_bare_server_has_root_password_login_and_no_docker(sandbox: SandboxInfo):
    bare = sandbox.bare
    assert bare is not None and not bare.has_docker and bare.root_password
    client = connect(bare, password=bare.root_password)
    try:
        status, _, _ = run(client, "command -v docker")
        assert status != 0
        status, out, err = run(client, "apt-get update -qq && apt-cache policy docker.io | head -3", timeout=300)
        assert status == 0, err
        assert "Candidate" in out
    finally:
        client.close()
    connect(bare).close()  # and by key


def test_up_is_idempotent_and_status_reports_the_same(sandbox_manager: Sandbox, sandbox: SandboxInfo):
    started = time.monotonic()
    again = sandbox_manager.up(servers=2, bare=True, stand_ins=True)
    assert time.monotonic() - started < 60
    assert [(s.name, s.ssh_port, s.host_key_fingerprint) for s in again.servers] == \
        [(s.name, s.ssh_port, s.host_key_fingerprint) for s in sandbox.servers]
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=keystone.sandbox={sandbox.name}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(out) == sorted([s.name for s in sandbox.servers] +
                                 [sandbox.bare.name, sandbox.registry.container, sandbox.git.container,
                                  sandbox.acme.container])


def test_cli_status_prints_what_onboarding_needs(sandbox: SandboxInfo):
    result = CliRunner().invoke(sandbox_cli, ["--name", sandbox.name, "--state-dir", str(sandbox.state_dir),
                                              "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["registry"]["url"] == sandbox.registry.url
    assert data["git"]["sample_repo_url"] == sandbox.git.sample_repo_url
    assert [s["host_key_fingerprint"] for s in data["servers"]] == [s.host_key_fingerprint for s in sandbox.servers]
    text = CliRunner().invoke(sandbox_cli, ["--name", sandbox.name, "--state-dir", str(sandbox.state_dir), "status"])
    assert text.exit_code == 0
    for s in sandbox.servers:
        assert str(s.ssh_port) in text.output and s.host_key_fingerprint in text.output
    assert sandbox.registry.password in text.output and sandbox.git.sample_repo_url in text.output


SMOKE_DOCKERFILE = """\
FROM {php}
COPY --chown=www-data:www-data . /var/www/html
RUN composer install --no-dev --no-interaction --no-progress && echo {sha} > REVISION
"""
SMOKE_COMPOSE = """\
services:
  db:
    image: {postgres}
    environment:
      POSTGRES_USER: sample
      POSTGRES_PASSWORD: "s3cret pw"
      POSTGRES_DB: sample
    volumes: [dbdata:/var/lib/postgresql/data]
  cache:
    image: {valkey}
    command: ["valkey-server", "--appendonly", "yes"]
  web:
    build: ./app
    image: smoke-web
    ports: ["18081:8080"]
    environment: &env
      APP_ENV: production
      DB_CONNECTION: pgsql
      DB_HOST: db
      DB_PORT: "5432"
      DB_DATABASE: sample
      DB_USERNAME: sample
      DB_PASSWORD: "s3cret pw"
      REDIS_HOST: cache
      REDIS_PORT: "6379"
  worker:
    image: smoke-web
    command: ["php", "artisan", "queue:work"]
    stop_grace_period: 20s
    environment: *env
volumes:
  dbdata: {{}}
"""


def test_stand_in_images_run_the_sample_app_inside_a_server(sandbox: SandboxInfo, tmp_path: Path):
    """php-base + postgres + valkey stand-ins, composed inside a server's own engine, serve the sample app."""
    from app.sandbox import PHP_BASE_IMAGE, POSTGRES_IMAGE, VALKEY_IMAGE, load_images
    from app.sandbox.docker import pipe
    from app.sandbox.sample import SAMPLE_APP_DIR

    server = sandbox.servers[0]
    load_images([server], [POSTGRES_IMAGE, VALKEY_IMAGE, PHP_BASE_IMAGE])
    work = tmp_path / "smoke"
    (work / "app").mkdir(parents=True)
    (work / "docker-compose.yml").write_text(SMOKE_COMPOSE.format(postgres=POSTGRES_IMAGE, valkey=VALKEY_IMAGE))
    (work / "Dockerfile").write_text(SMOKE_DOCKERFILE.format(php=PHP_BASE_IMAGE, sha="smoke-sha-123"))
    server.exec("sh", "-c", "rm -rf /tmp/smoke && mkdir -p /tmp/smoke/app")
    pipe(["tar", "-C", str(work), "-c", "docker-compose.yml"], ["docker", "exec", "-i", server.name, "tar", "-C", "/tmp/smoke", "-x"])
    pipe(["tar", "-C", str(SAMPLE_APP_DIR), "-c", "."], ["docker", "exec", "-i", server.name, "tar", "-C", "/tmp/smoke/app", "-x"])
    pipe(["tar", "-C", str(work), "-c", "Dockerfile"], ["docker", "exec", "-i", server.name, "tar", "-C", "/tmp/smoke/app", "-x"])

    client = connect(server)
    try:
        def sh(cmd: str, timeout: float = 300) -> str:
            status, out, err = run(client, f"cd /tmp/smoke && {cmd}", timeout=timeout)
            assert status == 0, f"{cmd}\n{out}\n{err}"
            return out

        sh("docker compose up -d --build db cache web")
        deadline = time.monotonic() + 60
        while run(client, "curl -fsS localhost:18081/up")[0] != 0:
            assert time.monotonic() < deadline, "sample app /up never answered"
            time.sleep(0.5)
        # Postgres takes a moment to initialise on first start: migrate retries until it connects.
        deadline = time.monotonic() + 60
        while True:
            status, out, err = run(client, "cd /tmp/smoke && docker compose exec -T web php artisan migrate --force")
            if status == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status == 0, out + err
        assert "create_sample_items_table" in out
        assert "Nothing to migrate" in sh("docker compose exec -T web php artisan migrate --force")
        status, _, _ = run(client, "cd /tmp/smoke && docker compose exec -T web php artisan migrate")
        assert status != 0  # production refuses without --force, as Laravel does
        sh("docker compose exec -T web php artisan schedule:run")
        runs = sh("docker compose exec -T db psql -U sample -d sample -Atc 'select count(*) from schedule_runs'")
        assert runs.strip() == "1"

        home = json.loads(sh("curl -fsS localhost:18081/"))
        assert home["commit"] == "smoke-sha-123"
        assert home["database"]["reachable"] is True and home["database"]["migrations"] == 2
        assert home["redis"]["reachable"] is True

        sh("docker compose up -d worker")
        time.sleep(2)
        sh("docker compose exec -T cache valkey-cli rpush queues:default job-1")
        deadline = time.monotonic() + 15
        while "Processed job: job-1" not in sh("docker compose logs worker"):
            assert time.monotonic() < deadline, "worker never processed the job"
            time.sleep(0.5)
        started = time.monotonic()
        sh("docker compose stop -t 60 worker")
        # Exits on SIGTERM (code 0 below; a SIGKILL after the grace period would be 137).
        assert time.monotonic() - started < 50
        cid = sh("docker compose ps -q worker").strip()
        assert sh(f"docker inspect -f '{{{{.State.ExitCode}}}}' {cid}").strip() == "0"
    finally:
        run(client, "cd /tmp/smoke && docker compose down -v --rmi local; rm -rf /tmp/smoke")
        client.close()


def test_caddy_stand_in_serves_reloads_and_has_a_shell(sandbox: SandboxInfo):
    from app.sandbox import CADDY_IMAGE, load_images

    server = sandbox.servers[1]
    load_images([server], [CADDY_IMAGE])
    name = f"caddy-{uuid.uuid4().hex[:6]}"
    client = connect(server)
    try:
        def sh(cmd: str) -> str:
            status, out, err = run(client, cmd)
            assert status == 0, f"{cmd}\n{out}\n{err}"
            return out

        sh(f"docker run -d --name {name} -p 18082:80 {CADDY_IMAGE}")
        deadline = time.monotonic() + 20
        while run(client, "curl -fsS localhost:18082/")[0] != 0:
            assert time.monotonic() < deadline, "caddy never answered"
            time.sleep(0.3)
        assert "keystone-sandbox caddy" in sh("curl -fsS localhost:18082/")
        assert sh(f"docker exec {name} caddy version").startswith("v2.")
        sh(f"docker exec {name} sh -c 'printf \":80 {{\\n\\trespond \\\"reloaded\\\" 200\\n}}\\n\" > /etc/caddy/Caddyfile'")
        sh(f"docker exec {name} caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile")
        assert "reloaded" in sh("curl -fsS localhost:18082/")
        assert "reloaded" in sh(f"docker exec {name} wget -qO- http://127.0.0.1:80/")
    finally:
        run(client, f"docker rm -f {name}")
        client.close()


def test_apt_sources_are_parsed_in_both_formats():
    from app.sandbox.images import _parse_sources

    deb822 = ("Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n")
    assert _parse_sources(deb822, deb822=True) == [("http://mirror.example/debian", ["bookworm", "bookworm-updates"])]
    one_line = "# x\ndeb [signed-by=/k.gpg arch=amd64] http://m.example/debian bookworm main\ndeb-src http://s bookworm main\n"
    assert _parse_sources(one_line, deb822=False) == [("http://m.example/debian", ["bookworm"])]


def test_deploy_key_authorisation_rejects_injection(sandbox: SandboxInfo, tmp_path: Path):
    from app.sandbox import SandboxError

    _, pub = _keypair(tmp_path, "inject")
    for bad_repo in ("../etc", "a b", "x;rm", "$(id)", ".hidden"):
        with pytest.raises(SandboxError):
            sandbox.git.authorize_key(pub, bad_repo)
    with pytest.raises(SandboxError):
        sandbox.git.authorize_key('command="/bin/sh" ' + pub, "sample.git")
    with pytest.raises(SandboxError):
        sandbox.git.authorize_key("ssh-ed25519 AAAA\"bad", "sample.git")
    keys = subprocess.run(["docker", "exec", sandbox.git.container, "cat", "/srv/git/.ssh/authorized_keys"],
                          capture_output=True, text=True, check=True).stdout
    assert "/bin/sh" not in keys and "bad" not in keys
    assert all(line.startswith("restrict,command=") for line in keys.splitlines() if line.strip())


def test_the_acme_ca_serves_its_directory_to_servers_and_answers_dns(sandbox: SandboxInfo):
    """Pebble's directory is reachable from inside a server (where gateways run) over HTTPS
    that verifies with the CA root the sandbox reports; challtestsrv takes A records."""
    acme = sandbox.acme
    assert acme is not None and acme.private_ip.endswith(".4")
    server = sandbox.servers[0]
    server.exec("sh", "-c", 'cat > /tmp/acme-root.pem', input=acme.server_root_pem)
    out = server.exec("curl", "-sS", "--cacert", "/tmp/acme-root.pem", acme.directory_url,
                      check=False)
    assert out.returncode == 0 and "newOrder" in out.stdout, out.stderr
    acme.set_a("probe.test", [server.private_ip])
    acme.clear_a("probe.test")
    assert acme.issuing_root().startswith("-----BEGIN CERTIFICATE-----")


def test_down_drops_the_host_tags_of_what_it_pushed_and_keeps_the_image(tmp_path: Path):
    """Each session's pushes left `127.0.0.1:PORT/...` tags on the host for good; `down`
    removes the ones of its own registry port, and only those."""
    ensure_image("busybox")
    sb = Sandbox(name=f"ks-untag-{uuid.uuid4().hex[:6]}", state_dir=tmp_path / "state")
    sb._save_state({"name": sb.name, "registry": {"port": 1}})
    ours, theirs = "127.0.0.1:1/keystone-untag-test/box:1", "127.0.0.1:10/keystone-untag-test/box:1"

    def tags() -> set[str]:
        out = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                             capture_output=True, text=True, check=True).stdout
        return set(out.split())

    try:
        for ref in (ours, theirs):
            subprocess.run(["docker", "tag", BUSYBOX_IMAGE, ref], check=True)
        removed = sb.down()
        assert f"image tag {ours}" in removed
        after = tags()
        assert ours not in after
        assert theirs in after and BUSYBOX_IMAGE in after
    finally:
        subprocess.run(["docker", "image", "rm", ours, theirs], capture_output=True)
