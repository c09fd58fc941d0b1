"""A real environment on sandbox servers: what the deploy tests and ``bench.cutover`` deploy.

Built through Keystone's own code paths, no shortcuts: an organisation, the
sandbox servers (SSH, pinned host keys), an application from the sandbox git
host with its deploy key authorised and verified, Postgres, Valkey and a
Caddy gateway deployed as services (stand-in images from the sandbox
registry), Postgres and Valkey attached (slices, DB_*/REDIS_* variables), a
domain routed on each server's gateway, and the web service placed on the
chosen servers (with ``websocket=True`` also a websocket service, ``php artisan
reverb:start``, added with the "Add websocket" action's code). Deploys go through ``start_deploy`` and the operations
engine's runner, in-process (``execute_operation``), exactly as the worker
runs them.

Ids are random so concurrent runs on one sandbox never share a container,
volume or directory; :meth:`Testbed.cleanup` removes what it created.
"""
from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from dataclasses import dataclass, field

from app.accounts import create_account
from app.applications import create_application
from app.attachments import (attach_domain, attach_postgres, attach_valkey, effective_environment,
                             start_slice_provision)
from app.deploys.service import add_role_service, start_deploy
from app.extensions import db
from app.models import Environment, EnvironmentVariable, Operation, Registry, Server, Service
from app.models.enums import (DeployPolicy, OperationKind, ServerStatus, ServiceCategory,
                              VariableSource)
from app.operations import start_operation
from app.operations.runner import execute_operation
from app.remote.keys import fingerprint_of_public_key, public_key_of_private
from app.repositories import verify_access
from app.sandbox import load_images
from app.services_ops.deploy import start_service_deploy

PHP_BASE = "keystone-sandbox/php-base:8.3-fpm"
MANAGEMENT_USER = "keystone"


def provision_sandbox_servers(sandbox, count: int | None = None) -> list[dict]:
    """Provision the sandbox servers with Keystone's own provisioning, as a user's would be.

    The sandbox hands servers over like a cloud does (root, by key). This runs the
    real ``server_provision`` operation on each (the ``keystone`` user with the narrow
    sudo rules, UFW active with default deny, fail2ban, key-only sshd), with the
    sandbox's root key as the organisation's management key, so every testbed after it
    logs in as ``keystone`` with that key. Provisioning is idempotent: on servers a
    previous run provisioned it changes nothing. Must run in an app context; returns
    one summary per server and raises with the operation's log if one fails.
    """
    chosen = sandbox.servers[:count] if count else list(sandbox.servers)
    tag = uuid.uuid4().hex[:6]
    user = create_account(organisation=f"Provisioning {tag}", email=f"provision-{tag}@example.com",
                          password="correct horse battery")
    org = user.organisation
    private = chosen[0].root_key_path.read_text()
    org.management_key_private = private
    org.management_key_public = public_key_of_private(private, comment=f"keystone-test-{tag}")
    org.management_key_fingerprint = fingerprint_of_public_key(org.management_key_public)
    summaries = []
    for i, s in enumerate(chosen, start=1):
        server = Server(organisation_id=org.id, name=f"provision-{i}", public_ip=s.host,
                        ssh_port=s.ssh_port, private_ip=s.private_ip,
                        host_key_fingerprint=s.host_key_fingerprint, bootstrap_user=s.user,
                        bootstrap_private_key=private, management_user=MANAGEMENT_USER,
                        status=ServerStatus.NEW)
        db.session.add(server)
        db.session.commit()
        op = start_operation(OperationKind.SERVER_PROVISION, target_type="server",
                             target_id=server.id, organisation_id=org.id,
                             lock_keys=[f"server:{server.id}"], enqueue=False)
        started = time.monotonic()
        status = execute_operation(op.id)
        db.session.expire_all()
        if status != "succeeded":
            raise RuntimeError(f"provisioning {s.name} failed:\n"
                               + describe(db.session.get(Operation, op.id)))
        summaries.append({"server": s.name, "seconds": round(time.monotonic() - started, 1),
                          "summary": (db.session.get(Operation, op.id).result or {}).get("summary")})
    return summaries


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class

    sandbox: object  # app.sandbox.SandboxInfo
    server_count: int = 1
    hostname: str = ""
    scheduler_interval: int = 5
    health: dict = field(default_factory=lambda: {"interval": 0.5, "retries": 20,
                                                   "timeout": 3})
    extra_env: dict = field(default_factory=dict)
    websocket: bool = False  # also a websocket (Reverb) service, deployed with the environment
    ws_id: int | None = None
    worker: bool = False  # also a dedicated queue worker service ("Add worker")
    worker_id: int | None = None
    # The sandbox git host's repository the application deploys: ``sample.git`` (the
    # Laravel-shaped sample) or ``laravel.git`` (the real Laravel 8 sample, app.sandbox.sample).
    repo: str = "sample.git"
    # The build's base image: the php-base stand-in (app.sandbox.images.LARAVEL_BASE_IMAGE is
    # the same image under the name the real Laravel sample asks for).
    base_image: str = PHP_BASE
    # Who deploys log in as: the provisioned servers' ``keystone`` (provision_sandbox_servers
    # first), the way every real server is run.
    management_user: str = MANAGEMENT_USER
    # Extra gateway config for every gateway (e.g. the sandbox's ACME CA:
    # app.drivers.caddy.tls.gateway_acme_config(acme.directory_url, acme.server_root_pem)).
    gateway_config: dict = field(default_factory=dict)
    # The domain route's TLS mode: "off" (plain HTTP, the default) or "auto" (a certificate
    # from the gateway's ACME CA: point gateway_config at the sandbox's Pebble).
    tls: str = "off"

    def __post_init__(self):
        self.tag = uuid.uuid4().hex[:6]
        self.hostname = self.hostname or f"deploy-{self.tag}.keystone.test"
        self.base_id = random.randint(100_000, 900_000)

    # ------------------------------------------------------------------ set-up
    def setup(self) -> "Testbed":

        sb = self.sandbox
        chosen = sb.servers[:self.server_count]
        load_images(chosen, [self.base_image])
        user = create_account(organisation=f"Deploys {self.tag}",
                              email=f"deploys-{self.tag}@example.com",
                              password="correct horse battery")
        org = user.organisation
        org.management_key_private = chosen[0].root_key_path.read_text()
        servers = []
        for i, s in enumerate(chosen, start=1):
            servers.append(Server(organisation_id=org.id, name=f"deploy-{i}", public_ip=s.host,
                                  ssh_port=s.ssh_port, private_ip=s.private_ip,
                                  host_key_fingerprint=s.host_key_fingerprint,
                                  management_user=self.management_user,
                                  status=ServerStatus.ACTIVE))
        reg = sb.registry
        registry = Registry(organisation_id=org.id, name="sandbox", url=reg.url,
                            username=reg.username, password=reg.password)
        db.session.add_all([*servers, registry])
        db.session.commit()
        application = create_application(org.id, f"sample-{self.tag}", sb.git.repo_url(self.repo),
                                         "main")
        db.session.commit()
        env = application.environments[0]
        env.build_config = {"base_image": self.base_image}
        if len(servers) > 1:
            env.registry_id = registry.id
        sb.git.authorize_key(application.deploy_key_public, repo=self.repo)
        result = verify_access(application)
        db.session.commit()
        if not result.ok:
            raise RuntimeError(f"deploy key not accepted: {result.message}")
        web = next(s for s in env.services if "web" in (s.process_roles or []))
        web.server_id = servers[0].id
        web.config = {"server_ids": [s.id for s in servers], "health": dict(self.health),
                      "scheduler_interval": self.scheduler_interval, "drain_seconds": 1.5,
                      "stop_grace_seconds": 10}
        if self.websocket:
            ws = add_role_service(env, "websocket")  # placed like the web (its server_ids)
            ws.config = {**(ws.config or {}), "health": dict(self.health),
                         "stop_grace_seconds": 10}
            db.session.commit()
            self.ws_id = ws.id
        if self.worker:
            wk = add_role_service(env, "worker")
            wk.config = {**(wk.config or {}), "stop_grace_seconds": 10}
            db.session.commit()
            self.worker_id = wk.id
        images = sb.images
        b = self.base_id
        pg = Service(id=b, organisation_id=org.id, server_id=servers[0].id, name="pg",
                     type="postgres", driver_name="postgres", category=ServiceCategory.DATABASE,
                     version_track="18", deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                     config={"image": images.get("postgres", f"{reg.url}/keystone-sandbox/postgres:18"),
                             "expose_private": len(servers) > 1})
        vk = Service(id=b + 1, organisation_id=org.id, server_id=servers[0].id, name="cache",
                     type="valkey", driver_name="valkey", category=ServiceCategory.CACHE,
                     version_track="8", deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                     config={"image": images.get("valkey", f"{reg.url}/keystone-sandbox/valkey:8"),
                             "expose_private": len(servers) > 1})
        gateways = []
        for i, server in enumerate(servers):
            gateways.append(Service(
                id=b + 2 + i, organisation_id=org.id, server_id=server.id, name=f"gateway-{i + 1}",
                type="caddy", driver_name="caddy", category=ServiceCategory.GATEWAY,
                version_track="2", deploy_policy=DeployPolicy.MANUAL_OR_ON_ROUTE_CHANGE,
                config={"image": images.get("caddy", f"{reg.url}/keystone-sandbox/caddy:2"),
                        **self.gateway_config}))
        db.session.add_all([pg, vk, *gateways])
        db.session.commit()
        self.org_id, self.user_id = org.id, user.id
        self.env_id, self.web_id = env.id, web.id
        self.server_ids = [s.id for s in servers]
        self.service_ids = [pg.id, vk.id, *(g.id for g in gateways)]
        self.gateway_ids = [g.id for g in gateways]
        self.sandbox_servers = chosen
        for svc in (pg, vk, *gateways):
            self.run(start_service_deploy(svc, enqueue=False).id)
        _, pg_slice = attach_postgres(env, pg)
        _, vk_slice = attach_valkey(env, vk)
        db.session.commit()
        for s in (pg_slice, vk_slice):
            self.run(start_slice_provision(s, enqueue=False).id)
        routes = []
        for gw in gateways:  # every route exists before any is installed: gateways know peers
            _, route = attach_domain(env, gw, [self.hostname], tls=self.tls)
            db.session.commit()
            routes.append(route)
        for route in routes:
            self.run(start_slice_provision(route, enqueue=False).id)
        # PHP workers of the sandbox stand-in's php-fpm pool (FrankenPHP sizes its own).
        for key, value in {"PHP_FPM_PM_MAX_CHILDREN": "8", **self.extra_env}.items():
            db.session.add(EnvironmentVariable(environment_id=env.id, key=key, value=value,
                                               source=VariableSource.USER))
        db.session.commit()
        return self

    # ------------------------------------------------------------------ running
    def run(self, operation_id: int, expect: str | None = "succeeded"):
        status = execute_operation(operation_id)
        db.session.expire_all()
        op = db.session.get(Operation, operation_id)
        if expect is not None and status != expect:
            raise AssertionError(describe(op))
        return op

    @property
    def env(self):
        return db.session.get(Environment, self.env_id)

    def start_deploy(self, **kw):
        return start_deploy(self.env, None, enqueue=False, **kw)

    def deploy(self, expect: str | None = "succeeded", **kw):
        op = self.start_deploy(**kw)
        return self.run(op.id, expect=expect)

    def get(self, path: str = "/", server_index: int = 0, timeout: float = 10):
        """GET through a server's gateway (its published port 80 on 127.0.0.1)."""
        port = self.sandbox_servers[server_index].http_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": self.hostname})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def commit_served(self, server_index: int = 0) -> str | None:
        status, body = self.get("/", server_index)
        if status != 200:
            return None
        try:
            return json.loads(body)["commit"]
        except (ValueError, KeyError):
            return None

    def http_port(self, server_index: int = 0) -> int:
        return self.sandbox_servers[server_index].http_port

    def psql(self, sql: str) -> str:
        """Run SQL as the environment's database user (from its managed variables)."""
        values = effective_environment(self.env)
        pg = db.session.get(Service, self.service_ids[0])
        container = next(r.container_name for r in pg.replicas if r.status.value == "running")
        server = self.sandbox_servers[0]
        proc = server.exec("docker", "exec", "-e", f"PGPASSWORD={values['DB_PASSWORD']}",
                           container, "psql", "-h", "127.0.0.1", "-U", values["DB_USERNAME"],
                           "-d", values["DB_DATABASE"], "-At", "-F", "|", "-c", sql, check=False)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout

    def gateway_container(self, server_index: int = 0) -> str:
        gw = db.session.get(Service, self.gateway_ids[server_index])
        return next(r.container_name for r in gw.replicas if r.status.value == "running")

    def gateway_log(self, server_index: int = 0, since: float | None = None) -> str:
        """The gateway container's log (Caddy's JSON lines), optionally since an epoch time."""
        args = ["docker", "logs"]
        if since is not None:
            args += ["--since", f"{since:.3f}"]
        proc = self.sandbox_servers[server_index].exec(*args, self.gateway_container(server_index),
                                                       check=False)
        return (proc.stdout or "") + (proc.stderr or "")

    def containers(self, server_index: int = 0, service_id: int | None = None) -> list[str]:
        """Running containers of the web service (or of ``service_id``) on one server."""
        out = self.sandbox_servers[server_index].exec(
            "docker", "ps", "--filter",
            f"label=dev.keystone.service={service_id or self.web_id}",
            "--format", "{{.Names}}", check=False).stdout
        return sorted(out.split())

    # ------------------------------------------------------------------ clean-up
    def _environment_service_ids(self) -> list[int]:
        if getattr(self, "env_id", None) is None:
            return []
        try:
            from app.extensions import db
            db.session.rollback()
            env = self.env
            return [svc.id for svc in env.services] if env is not None else []
        except Exception:  # cleanup must go on whatever state the test left
            return []

    def cleanup(self) -> None:
        ids = {str(i) for i in [*getattr(self, "service_ids", []), getattr(self, "web_id", -1),
                                *([self.ws_id] if self.ws_id else []),
                                *([self.worker_id] if self.worker_id else [])]}
        # Services a test added itself (e.g. a worker for the scheduler-mode test): every
        # service of the environment, so nothing keeps running into the next module.
        ids |= {str(i) for i in self._environment_service_ids()}
        for s in getattr(self, "sandbox_servers", []):
            remove_service_containers(s, ids)
            vols = s.exec("docker", "volume", "ls", "-q", check=False).stdout.split()
            mine = [v for v in vols if any(v.startswith(f"keystone_service_{i}_") for i in ids)]
            if getattr(self, "env_id", None) is not None:
                # The environment's storage/ volume (app.drivers.laravel.storage_volume_name).
                mine += [v for v in vols if v == f"keystone_env_{self.env_id}_storage"]
            if mine:
                s.exec("docker", "volume", "rm", "-f", *mine, check=False)
            s.exec("rm", "-rf", *[f"/home/keystone/services/{i}" for i in ids], check=False)
            s.exec("rm", "-f", "/home/keystone/gateway/Caddyfile",
                   "/home/keystone/gateway/Caddyfile.next",
                   "/home/keystone/gateway/Caddyfile.last-good", check=False)


def remove_service_containers(sandbox_server, service_ids) -> list[str]:
    """Force-remove every Keystone-managed container of ``service_ids`` on a sandbox server
    (a test's or a benchmark's clean-up, as root through ``docker exec``)."""
    ids = {str(i) for i in service_ids}
    out = sandbox_server.exec("docker", "ps", "-aq", "--filter", "label=dev.keystone.managed=true",
                              "--format", "{{.ID}} {{.Label \"dev.keystone.service\"}}",
                              check=False).stdout
    doomed = [ln.split()[0] for ln in out.splitlines()
              if len(ln.split()) > 1 and ln.split()[1] in ids]
    if doomed:
        sandbox_server.exec("docker", "rm", "-f", *doomed, check=False)
    return doomed


def describe(op) -> str:
    """Everything about an operation tree that explains a failure."""
    lines = [f"operation {op.id} {op.kind.value} {op.status.value}: {op.error}"]
    for step in op.steps:
        lines.append(f"--- {step.name} [{step.status.value}]\n{(step.logs or '')[-2500:]}\n"
                     f"{step.error_logs or ''}")
    for child in op.children:
        lines.append(describe(child))
    return "\n".join(lines)


def wait_until(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
