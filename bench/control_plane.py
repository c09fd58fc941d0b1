"""Issue 20.3: the control plane scales out (N gunicorn web processes, M RQ workers, one
Redis, one database), and what 4 workers buy over 1 for 10 concurrent deploys.

The processes are the real ones, started the way production starts them: each web is
``gunicorn`` with the argv ``make run`` uses (:func:`app.cli.gunicorn_argv`, its own port,
as on its own machine); each worker is ``keystone worker`` (the Procfile's line) with an
environment of ``DATABASE_URL``, ``REDIS_URL`` and ``KEYSTONE_ENCRYPTION_KEYS`` only (plus
the queue name and Redis prefix this run uses), its own empty instance folder and
working directory: what a worker on another machine has.

The environments are cheap on purpose: one application, its first environment builds the
sample app once and pushes it to the sandbox registry; the deployed environments run that
pushed image (the ``external_registry`` build strategy: "deploy an image built by CI"), one
web replica each, no gateway, no migrations. So a deploy is the control plane's own work
(resolve the branch, pull/verify the image, plan, start, health-check, record) and not a
build, which would measure the build server, not the control plane.

Deploys are requested over HTTP through the web processes' own deploy form (signed in
over HTTP), alternating between the web processes. Checks (used by
tests/integration/test_control_plane.py):

- every deploy ends ``succeeded`` (a deploy whose worker was SIGKILLed ends
  ``interrupted`` by the reaper, and its retry succeeds);
- no lock is taken twice: a sampler reads ``operation_locks`` joined to ``operations``
  every 0.2 s (one statement, so one snapshot) and every holder it sees is ``running``;
  afterwards, per lock key, the running intervals of the operations that held it do
  not overlap; no lock row is left; each deploy ran its steps once;
- the operations list page of each web process shows every deploy with its database
  status, and the live-log endpoint of each web process replays every deploy's lines,
  the same lines the database recorded, ending with the database's status; one deploy
  is followed live (from another web process than the one that started it) while it
  runs.

``python -m bench.control_plane`` prints one JSON line: 10 concurrent deploys with 1
worker and with 4 (fresh environments each round, Postgres, 2 web processes), the wall
times and their ratio.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
import sqlalchemy as sa

from bench.procs import owner_of

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"
DEPLOY_TIMEOUT = 900.0
HEALTH = {"interval": 0.5, "retries": 40, "timeout": 3}


def log(msg: str) -> None:
    print(f"[control_plane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- databases

def postgres_admin_url() -> str:
    """Debian's PostgreSQL (scripts/ensure-postgres.sh starts it; installs it when missing)."""
    url = os.environ.get("KEYSTONE_TEST_POSTGRES_URL")
    if url:
        return url
    proc = subprocess.run([str(ROOT / "scripts/ensure-postgres.sh")], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("scripts/ensure-postgres.sh failed:\n" + proc.stderr)
    return proc.stdout.strip().splitlines()[-1]


class PostgresDatabase:
    """A fresh database on the local PostgreSQL, dropped by :meth:`drop`."""

    def __init__(self):
        admin = postgres_admin_url()
        self.name = f"keystone_cp_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = admin.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControlPlane:
    """``web`` gunicorn processes and ``workers`` ``keystone worker`` processes on one
    database and one Redis. Ours to start, SIGKILL and stop (by pid)."""

    def __init__(self, *, database_url: str, redis_url: str, keys: list[str],
                 secret_key: str, queue: str, prefix: str, work: Path):
        self.database_url, self.redis_url = database_url, redis_url
        self.keys, self.secret_key, self.queue, self.prefix = keys, secret_key, queue, prefix
        self.work = work
        self.webs: list[tuple[subprocess.Popen, int]] = []
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    # The environment of a process on its own machine: nothing from ours but PATH.
    def _env(self, name: str, **extra) -> dict:
        home = self.work / name
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8", "KEYSTONE_INSTANCE_PATH": str(home / "instance"),
                "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "KEYSTONE_ENCRYPTION_KEYS": ",".join(self.keys),
                # Only because this run shares a Redis with other runs (README: two
                # Keystones on one Redis need different prefixes and queues).
                "KEYSTONE_QUEUE": self.queue, "KEYSTONE_REDIS_PREFIX": self.prefix, **extra}

    def _log(self, name: str):
        fh = open(self.work / f"{name}.log", "ab")
        self._logs.append(fh)
        return fh

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for _, port in self.webs]

    def start_web(self) -> str:
        from app.cli import gunicorn_argv
        port = free_port()
        name = f"web-{len(self.webs)}"
        # The web signs sessions: it (and only it) needs KEYSTONE_SECRET_KEY, the same in
        # every web process.
        proc = subprocess.Popen(gunicorn_argv("127.0.0.1", port),
                                env=self._env(name, KEYSTONE_SECRET_KEY=self.secret_key),
                                cwd=str(ROOT), stdout=self._log(name), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.webs.append((proc, port))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail(name)}")
            try:
                if requests.get(url + "/login", timeout=5).status_code == 200:
                    return url
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} did not answer on {url}: {self.tail(name)}")

    def start_worker(self) -> subprocess.Popen:
        name = f"worker-{len(self.workers)}"
        # The Procfile's `worker: keystone worker`, from a directory that is not the checkout.
        proc = subprocess.Popen([str(Path(sys.executable).parent / "keystone"), "worker"],
                                env=self._env(name), cwd=str(self.work / name),
                                stdout=self._log(name), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers.append(proc)
        return proc

    def wait_workers(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` of our workers are registered with RQ on the queue."""
        import redis
        from rq import Queue, Worker
        conn = redis.Redis.from_url(self.redis_url)
        queue = Queue(self.queue, connection=conn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [i for i, p in enumerate(self.workers) if p.poll() is not None]
            if dead:
                raise RuntimeError("workers exited: " + " | ".join(
                    self.tail(f"worker-{i}") for i in dead))
            alive = {p.pid for p in self.alive_workers()}
            registered = {w.pid for w in Worker.all(queue=queue)}
            if len(alive & registered) >= count:
                return
            time.sleep(0.3)
        raise RuntimeError(f"only {len(alive & registered)} of {count} workers registered")

    def alive_workers(self) -> list[subprocess.Popen]:
        return [p for p in self.workers if p.poll() is None]

    def owner_of(self, horse_pid: int) -> subprocess.Popen | None:
        """Our worker whose work horse is ``horse_pid``."""
        return owner_of(horse_pid, self.alive_workers())

    def tail(self, name: str, n: int = 3000) -> str:
        try:
            return (self.work / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        procs = [p for p, _ in self.webs] + self.workers
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p in [w for w, _ in self.webs] else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for fh in self._logs:
            fh.close()


# --------------------------------------------------------------------------- the fleet

@dataclass
class Fleet:
    """One organisation, the sandbox servers, one application and ``count`` environments
    that run one prebuilt image. Built in the caller's app context."""

    sandbox: object
    count: int = 10
    image: str | None = None      # a pushed image to run; None: build the sample app once
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    env_ids: list[int] = field(default_factory=list)
    service_ids: list[int] = field(default_factory=list)
    web_of: dict = field(default_factory=dict)      # environment id -> its web service id

    def setup(self) -> "Fleet":
        from app.accounts import create_account
        from app.applications import create_application, create_environment
        from app.extensions import db
        from app.models import Registry, Server
        from app.models.enums import ServerStatus
        from app.repositories import verify_access
        from app.sandbox.testbed import MANAGEMENT_USER
        sb = self.sandbox
        self.email = f"cp-{self.tag}@example.com"
        user = create_account(organisation=f"Control plane {self.tag}", email=self.email,
                              password=PASSWORD)
        org = user.organisation
        org.management_key_private = sb.servers[0].root_key_path.read_text()
        servers = [Server(organisation_id=org.id, name=f"cp-{i + 1}", public_ip=s.host,
                          ssh_port=s.ssh_port, private_ip=s.private_ip,
                          host_key_fingerprint=s.host_key_fingerprint,
                          management_user=MANAGEMENT_USER, status=ServerStatus.ACTIVE)
                   for i, s in enumerate(sb.servers[:2])]
        reg = sb.registry
        registry = Registry(organisation_id=org.id, name="sandbox", url=reg.url,
                            username=reg.username, password=reg.password)
        db.session.add_all([*servers, registry])
        db.session.commit()
        application = create_application(org.id, f"cp-{self.tag}", sb.git.repo_url("sample.git"),
                                         "main")
        db.session.commit()
        sb.git.authorize_key(application.deploy_key_public, repo="sample.git")
        if not verify_access(application).ok:
            raise RuntimeError("the deploy key was not accepted by the sandbox git host")
        db.session.commit()
        self.org_id, self.user_id = org.id, user.id
        self.server_ids = [s.id for s in servers]
        if self.image is None:
            self.image = self._build_once(application.environments[0], servers[0], registry)
        for i in range(self.count):
            env = create_environment(application, f"cp-{i + 1}", "main")
            env.build_config = {"strategy": "external_registry", "image": self.image}
            env.registry_id = registry.id
            env.scheduler_enabled = False
            server = servers[i % len(servers)]
            db.session.flush()
            web = next(s for s in env.services if "web" in (s.process_roles or []))
            web.server_id = server.id
            web.config = {"server_ids": [server.id], "health": dict(HEALTH),
                          "drain_seconds": 1.5, "stop_grace_seconds": 10,
                          "migration_mode": "disabled"}
            db.session.commit()
            self.env_ids.append(env.id)
            self.service_ids.append(web.id)
            self.web_of[env.id] = web.id
        return self

    def _build_once(self, env, server, registry) -> str:
        """The sample app built by the first environment and pushed: the image CI would push."""
        from app.deploys.service import start_deploy
        from app.extensions import db
        from app.models import BuildArtifact, Operation
        from app.operations.runner import execute_operation
        from app.sandbox import load_images
        from app.sandbox.testbed import PHP_BASE, describe
        load_images([s for s in self.sandbox.servers[:1]], [PHP_BASE])
        env.build_config = {"base_image": PHP_BASE}
        env.registry_id = registry.id
        env.scheduler_enabled = False
        web = next(s for s in env.services if "web" in (s.process_roles or []))
        web.server_id = server.id
        web.config = {"server_ids": [server.id], "health": dict(HEALTH), "drain_seconds": 1.5,
                      "stop_grace_seconds": 10, "migration_mode": "disabled"}
        db.session.commit()
        self.service_ids.append(web.id)
        started = time.monotonic()
        op = start_deploy(env, None, enqueue=False)
        status = execute_operation(op.id)
        db.session.expire_all()
        if status != "succeeded":
            raise RuntimeError("the one build failed:\n" + describe(db.session.get(Operation, op.id)))
        artifact = db.session.get(BuildArtifact, db.session.get(Operation, op.id).result["artifact_id"])
        log(f"built and pushed the sample app once in {time.monotonic() - started:.0f}s: "
            f"{artifact.registry_ref}")
        return artifact.registry_ref

    def cleanup(self) -> None:
        from app.sandbox.testbed import remove_service_containers
        ids = {str(i) for i in self.service_ids}
        for s in self.sandbox.servers[:2]:
            remove_service_containers(s, ids)
            s.exec("rm", "-rf", *[f"/home/keystone/services/{i}" for i in ids], check=False)

    def running_containers(self) -> dict[str, int]:
        """service id -> running containers of it on the sandbox servers."""
        ids = {str(i) for i in self.service_ids}
        counts: dict[str, int] = {}
        for s in self.sandbox.servers[:2]:
            out = s.exec("docker", "ps", "--filter", "label=dev.keystone.managed=true",
                         "--format", "{{.Label \"dev.keystone.service\"}}", check=False).stdout
            for sid in out.split():
                if sid in ids:
                    counts[sid] = counts.get(sid, 0) + 1
        return counts


# --------------------------------------------------------------------------- HTTP

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


class Browser:
    """A signed-in session over HTTP (cookie + CSRF token), usable against every web."""

    def __init__(self, urls: list[str], email: str):
        self.urls = urls
        self.session = requests.Session()
        page = self.session.get(urls[0] + "/login", timeout=30)
        token = CSRF.search(page.text).group(1)
        resp = self.session.post(urls[0] + "/login", data={"csrf_token": token, "email": email,
                                                          "password": PASSWORD},
                                 timeout=60, allow_redirects=False)
        if resp.status_code != 302:
            raise RuntimeError(f"sign-in answered {resp.status_code}")
        # Signed in on the first web; the token comes from the second (one session, any web).
        self.csrf = CSRF.search(self.session.get(urls[-1] + "/", timeout=30).text).group(1)

    def deploy(self, env_id: int, web: int) -> int:
        """POST the environment page's deploy form; the answer redirects back to the page."""
        resp = self.session.post(f"{self.urls[web]}/environments/{env_id}/deploy",
                                 data={"csrf_token": self.csrf}, timeout=120,
                                 allow_redirects=False)
        if resp.status_code != 302:
            raise RuntimeError(f"deploy of environment {env_id} via web {web} answered "
                               f"{resp.status_code}: {resp.text[:500]}")
        return resp.status_code

    def get(self, web: int, path: str, **kw) -> requests.Response:
        return self.session.get(self.urls[web] + path, timeout=kw.pop("timeout", 60), **kw)


ROW = re.compile(r'<tr id="op-row-(\d+)".*?<span class="badge status-([a-z_]+)">', re.S)
LINE = re.compile(r"<div class=\"[^\"]*\"[^>]*>(.*?)</div>", re.S)


def list_page_statuses(browser: Browser, web: int) -> dict[int, str]:
    """Operation id -> status as the operations list page of one web shows them."""
    page = browser.get(web, "/operations?kind=environment_deploy")
    page.raise_for_status()
    return {int(i): s for i, s in ROW.findall(page.text)}


def parse_events(text: str) -> tuple[list[str], str | None, str | None]:
    """(line texts, end status, last event id) of a text/event-stream body."""
    lines, end, last_id = [], None, None
    for block in text.split("\n\n"):
        event, data = None, []
        for raw in block.split("\n"):
            if raw.startswith("event: "):
                event = raw[7:]
            elif raw.startswith("data: "):
                data.append(raw[6:])
            elif raw.startswith("id: "):
                last_id = raw[4:]
        if event == "line":
            m = LINE.search("\n".join(data))
            lines.append(html.unescape(m.group(1)) if m else "")
        elif event == "end":
            end = "\n".join(data)
    return lines, end, last_id


def live_log(browser: Browser, web: int, op_id: int, timeout: float = DEPLOY_TIMEOUT):
    """(lines, end status) of an operation's live log, as a browser follows it: reconnecting
    with Last-Event-ID whenever a response ends before the operation's end event."""
    lines: list[str] = []
    end = None
    last_id = None
    deadline = time.monotonic() + timeout
    while end is None and time.monotonic() < deadline:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        resp = browser.get(web, f"/operations/{op_id}/events", timeout=120, stream=True,
                           headers=headers)
        resp.raise_for_status()
        resp.encoding = "utf-8"
        buf = ""
        for chunk in resp.iter_content(chunk_size=None, decode_unicode=True):
            buf += chunk
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                got, status, event_id = parse_events(block + "\n\n")
                lines.extend(got)
                last_id = event_id or last_id
                if status is not None:
                    end = status
                    break
            if end is not None:
                break
        resp.close()
    return lines, end


# --------------------------------------------------------------------------- checks

class LockSampler(threading.Thread):
    """Reads every lock row with its holder's status in one statement, every 0.2 s."""

    def __init__(self, database_url: str):
        super().__init__(daemon=True, name="lock-sampler")
        self.engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        self.stop_event = threading.Event()
        self.samples = 0
        self.bad: list[tuple] = []
        self.max_running_deploys = 0
        self.max_locks = 0

    def run(self) -> None:
        q = sa.text("SELECT l.key, o.id, o.status FROM operation_locks l "
                    "JOIN operations o ON o.id = l.operation_id")
        running = sa.text("SELECT count(*) FROM operations WHERE status = 'running' "
                          "AND kind = 'environment_deploy' AND parent_id IS NULL")
        while not self.stop_event.wait(0.2):
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(q).all()
                    n = conn.execute(running).scalar()
            except sa.exc.OperationalError:  # SQLite busy: try again next tick
                continue
            self.samples += 1
            self.max_locks = max(self.max_locks, len(rows))
            self.max_running_deploys = max(self.max_running_deploys, n)
            self.bad.extend(r for r in rows if r[2] != "running")

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        self.engine.dispose()


def overlapping_locks() -> list[str]:
    """Per lock key, the operations that held it (the key not already held by an ancestor)
    must have run one after another."""
    from app.extensions import db
    from app.models import Operation
    ops = db.session.execute(sa.select(Operation).where(Operation.started_at.isnot(None))
                             ).scalars().all()
    by_id = {op.id: op for op in ops}

    def ancestor_holds(op, key) -> bool:
        parent = by_id.get(op.parent_id) if op.parent_id else None
        while parent is not None:
            if key in (parent.lock_keys or []):
                return True
            parent = by_id.get(parent.parent_id) if parent.parent_id else None
        return False

    intervals: dict[str, list] = {}
    for op in ops:
        for key in op.lock_keys or []:
            if not ancestor_holds(op, key):
                intervals.setdefault(key, []).append((op.started_at, op.finished_at, op.id))
    problems = []
    for key, spans in intervals.items():
        spans.sort(key=lambda s: s[0])
        for (s1, f1, a), (s2, _f2, b) in zip(spans, spans[1:]):
            if f1 is None or s2 < f1:
                problems.append(f"{key}: #{a} ran {s1}..{f1}, #{b} started {s2}")
    return problems


def db_lines(op_id: int) -> list[str]:
    from app.extensions import db
    from app.models import Operation
    from app.operations.sse import replay_lines
    db.session.expire_all()
    return [line for _, line in replay_lines(db.session.get(Operation, op_id))]


# --------------------------------------------------------------------------- a round

@dataclass
class RoundResult:
    web: int
    workers: int
    deploys: int
    wall_seconds: float = 0.0
    op_ids: dict = field(default_factory=dict)          # env id -> [op ids]
    statuses: dict = field(default_factory=dict)        # op id -> status
    killed: dict | None = None                          # the SIGKILLed deploy
    lock_samples: int = 0
    lock_violations: list = field(default_factory=list)
    overlaps: list = field(default_factory=list)
    locks_left: list = field(default_factory=list)
    max_running_deploys: int = 0
    max_locks: int = 0
    step_repeats: list = field(default_factory=list)
    list_mismatches: list = field(default_factory=list)
    log_mismatches: list = field(default_factory=list)
    followed: dict | None = None
    containers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(vars(self))


def _latest_deploys(env_ids: list[int]) -> dict[int, list]:
    from app.extensions import db
    from app.models import Operation
    db.session.expire_all()
    rows = db.session.execute(
        sa.select(Operation).where(Operation.kind == "environment_deploy",
                                   Operation.target_type == "environment",
                                   Operation.target_id.in_(env_ids),
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id)).scalars().all()
    out: dict[int, list] = {e: [] for e in env_ids}
    for op in rows:
        out[op.target_id].append(op)
    return out


def _wait_all_ended(env_ids, expected: int, timeout: float) -> dict[int, list]:
    deadline = time.monotonic() + timeout
    while True:
        ops = _latest_deploys(env_ids)
        flat = [op for v in ops.values() for op in v]
        if len(flat) >= expected and all(op.is_terminal for op in flat):
            return ops
        if time.monotonic() > deadline:
            raise AssertionError("deploys did not end: " + ", ".join(
                f"#{op.id} {op.status.value}" for op in flat if not op.is_terminal))
        time.sleep(0.5)


def _wait_idle(timeout: float) -> None:
    from app.extensions import db
    from app.models import Operation
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        active = db.session.execute(sa.select(Operation.id, Operation.kind).where(
            Operation.status.in_(["pending", "queued", "running"]))).all()
        if not active:
            return
        time.sleep(0.5)
    raise AssertionError(f"operations still active: {active}")


def run_round(fleet: Fleet, plane: ControlPlane, *, env_ids: list[int], kill: bool = False,
              check: bool = True, twice: int | None = None) -> RoundResult:
    """Deploy ``env_ids`` at once over HTTP (alternating webs) and wait until all end.

    ``twice``: an environment deployed twice at once (the second waits for its lock).
    ``kill``: SIGKILL the worker running one deploy while it is health-checked, start a
    replacement (what a supervisor does), and retry that deploy once the reaper ended it.
    """
    from app.extensions import db
    from app.models import Operation, OperationLock
    nweb = len(plane.webs)
    result = RoundResult(web=nweb, workers=len(plane.alive_workers()), deploys=len(env_ids))
    browser = Browser(plane.urls, fleet.email)
    sampler = LockSampler(plane.database_url)
    sampler.start()
    requests_ = [(env_id, i % nweb) for i, env_id in enumerate(env_ids)]
    if twice is not None:
        requests_.append((twice, 1 % nweb))
    followed: dict = {}

    from flask import current_app
    app = current_app._get_current_object()

    def follow():
        with app.app_context():
            try:
                _follow()
            finally:
                db.session.remove()

    def _follow():
        # The first deploy followed live from the moment it exists, through another web
        # process than the one that started it (the browser's EventSource does the same).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ops = _latest_deploys(env_ids[:1])[env_ids[0]]
            if ops:
                seen = ops[0].status.value
                lines, end = live_log(browser, 1 % nweb, ops[0].id)
                followed.update(op_id=ops[0].id, lines=lines, end=end, started_as=seen)
                return
            time.sleep(0.1)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(requests_)) as pool:
        list(pool.map(lambda r: browser.deploy(*r), requests_))
    log(f"{len(requests_)} deploys requested over HTTP in {time.monotonic() - started:.1f}s "
        f"({nweb} web, {result.workers} workers)")
    if kill:
        # Not the deploy followed live (it must end succeeded to compare its lines).
        result.killed = _kill_one(plane, env_ids[1:])
    ops = _wait_all_ended(env_ids, len(requests_), DEPLOY_TIMEOUT)
    result.wall_seconds = round(time.monotonic() - started, 1)
    if kill and result.killed:
        env_id = result.killed["environment_id"]
        browser.deploy(env_id, 0)
        ops = _wait_all_ended(env_ids, len(requests_) + 1, DEPLOY_TIMEOUT)
        result.killed["retry"] = ops[env_id][-1].status.value
        result.killed["retry_id"] = ops[env_id][-1].id
        result.killed["retry_steps"] = [s.name for s in ops[env_id][-1].steps]
        result.killed["retry_plan"] = next((s.log_text[-1500:] for s in ops[env_id][-1].steps
                                            if s.name == "Plan the deploy"), None)
    # Housekeeping runs after each deploy (an end listener): everything ends before checks.
    _wait_idle(DEPLOY_TIMEOUT)
    follower.join(timeout=DEPLOY_TIMEOUT)
    sampler.stop()
    result.lock_samples, result.lock_violations = sampler.samples, sampler.bad[:20]
    result.max_running_deploys, result.max_locks = sampler.max_running_deploys, sampler.max_locks
    result.op_ids = {e: [op.id for op in v] for e, v in ops.items()}
    result.statuses = {op.id: op.status.value for v in ops.values() for op in v}
    if not check:
        return result
    db.session.expire_all()
    result.locks_left = [k for k in db.session.execute(sa.select(OperationLock.key)).scalars()]
    result.overlaps = overlapping_locks()
    # Each deploy ran once: one "Resolve" step per top-level deploy that started.
    for v in ops.values():
        for op in v:
            op = db.session.get(Operation, op.id)
            names = [s.name for s in op.steps]
            if op.started_at is not None and sum(n.startswith("Resolve ") for n in names) != 1:
                result.step_repeats.append({"op": op.id, "steps": names})
    # The operations list page of every web shows the database's statuses.
    for web in range(nweb):
        shown = list_page_statuses(browser, web)
        for op_id, status in result.statuses.items():
            if shown.get(op_id) != status:
                result.list_mismatches.append({"web": web, "op": op_id, "db": status,
                                               "page": shown.get(op_id)})
    # The live-log endpoint of every web replays each deploy's lines as recorded.
    for i, (op_id, status) in enumerate(sorted(result.statuses.items())):
        web = i % nweb
        lines, end = live_log(browser, web, op_id, timeout=120)
        want = db_lines(op_id)
        # An interrupted deploy's last lines may never have reached one side (its worker
        # was SIGKILLed mid-line): only its end is compared.
        if end != status or (status == "succeeded" and sorted(lines) != sorted(want)):
            result.log_mismatches.append({"web": web, "op": op_id, "end": end, "db": status,
                                          "lines": len(lines), "db_lines": len(want),
                                          "missing": sorted(set(want) - set(lines))[:5],
                                          "extra": sorted(set(lines) - set(want))[:5]})
    if followed:
        want = db_lines(followed["op_id"])
        result.followed = {"op": followed["op_id"], "seen_as": followed["started_as"],
                           "end": followed["end"], "lines": len(followed["lines"]),
                           "db_lines": len(want),
                           "same": sorted(followed["lines"]) == sorted(want),
                           "db_status": result.statuses.get(followed["op_id"])}
    result.containers = fleet.running_containers()
    if result.killed:
        sid = fleet.web_of[result.killed["environment_id"]]
        result.killed["all_containers"] = [s.exec(
            "docker", "ps", "-a", "--filter", f"label=dev.keystone.service={sid}",
            "--format", "{{.Names}} {{.Status}}", check=False).stdout
            for s in fleet.sandbox.servers[:2]]
    return result


def _kill_one(plane: ControlPlane, env_ids: list[int]) -> dict | None:
    """SIGKILL the worker whose work horse runs a deploy's health check; start another."""
    from app.extensions import db
    from app.models import Operation, OperationStep
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ops = [op for v in _latest_deploys(env_ids).values() for op in v]
        if ops and all(op.is_terminal for op in ops):
            return None  # every deploy ended before one could be caught mid-health-check
        row = db.session.execute(
            sa.select(Operation.id, Operation.target_id, Operation.worker_name)
            .join(OperationStep, OperationStep.operation_id == Operation.id)
            .where(Operation.status == "running", Operation.parent_id.isnot(None),
                   OperationStep.status == "running",
                   sa.or_(OperationStep.name.like("Health check%"),
                          OperationStep.name.like("Start %")))).first()
        if row is not None:
            child_id, _, horse_name = row
            child = db.session.get(Operation, child_id)
            root = child
            while root.parent_id is not None:
                root = db.session.get(Operation, root.parent_id)
            horse = int((root.worker_name or horse_name).rsplit("/", 1)[1])
            worker = plane.owner_of(horse)
            if worker is not None and root.target_id in env_ids:
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
                killed_at = time.monotonic()
                plane.start_worker()  # the supervisor's restart
                log(f"SIGKILLed worker {worker.pid} (work horse {horse}) running deploy "
                    f"#{root.id}; started a replacement")
                # Until the reaper has ended it.
                while time.monotonic() - killed_at < 300:
                    db.session.expire_all()
                    op = db.session.get(Operation, root.id)
                    if op.is_terminal:
                        return {"op": root.id, "environment_id": root.target_id,
                                "worker_pid": worker.pid, "horse_pid": horse,
                                "status": op.status.value, "error": op.error,
                                "seconds_to_reaped": round(time.monotonic() - killed_at, 1)}
                    time.sleep(0.3)
                return {"op": root.id, "environment_id": root.target_id, "status": "not ended"}
        time.sleep(0.2)
    return None


# --------------------------------------------------------------------------- world

class World:
    """App context on a database (Postgres or an SQLite file) + one Redis + a fleet."""

    def __init__(self, sandbox, work: Path, redis_url: str, *, backend: str = "postgres",
                 count: int = 10, image: str | None = None, provision: bool = False,
                 sqlite_template: Path | None = None):
        from cryptography.fernet import Fernet
        self.provision = provision
        # An SQLite file already migrated (the test session's template): a copy saves
        # running the whole migration chain again.
        self.sqlite_template = sqlite_template if backend == "sqlite" else None
        self.sandbox, self.work, self.redis_url = sandbox, work, redis_url
        self.backend = backend
        self.pg = PostgresDatabase() if backend == "postgres" else None
        self.database_url = self.pg.url if self.pg else f"sqlite:///{work / 'keystone.db'}"
        self.keys = [Fernet.generate_key().decode()]
        self.secret = uuid.uuid4().hex
        self.queue = f"cp-{uuid.uuid4().hex[:8]}"
        self.prefix = f"cp-{uuid.uuid4().hex[:8]}"
        self.count, self.image = count, image
        self.ctx = None
        self.fleet: Fleet | None = None

    def __enter__(self) -> "World":
        from flask_migrate import upgrade
        from app import create_app
        if self.sqlite_template is not None:
            import shutil
            shutil.copy(self.sqlite_template, self.work / "keystone.db")
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": self.database_url,
                               "ENCRYPTION_KEYS": self.keys, "SECRET_KEY": self.secret,
                               "REDIS_URL": self.redis_url, "RQ_QUEUE": self.queue,
                               "REDIS_PREFIX": self.prefix},
                              instance_path=str(self.work / "instance"))
        self.ctx = self.app.app_context()
        self.ctx.push()
        try:
            if self.sqlite_template is None:
                upgrade()
            if self.provision:
                # The servers as Keystone provisions a user's (the keystone user, UFW).
                from app.sandbox.testbed import provision_sandbox_servers
                provision_sandbox_servers(self.sandbox, 2)
            self.fleet = Fleet(self.sandbox, count=self.count, image=self.image).setup()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def plane(self, web: int, workers: int) -> ControlPlane:
        plane = ControlPlane(database_url=self.database_url, redis_url=self.redis_url,
                             keys=self.keys, secret_key=self.secret, queue=self.queue,
                             prefix=self.prefix, work=self.work / f"plane-{uuid.uuid4().hex[:6]}")
        plane.work.mkdir(parents=True)
        try:
            for _ in range(web):
                plane.start_web()
            for _ in range(workers):
                plane.start_worker()
            plane.wait_workers(workers)
        except BaseException:
            plane.stop()
            raise
        return plane

    def __exit__(self, *exc) -> None:
        from app.extensions import db
        try:
            if self.fleet is not None:
                self.fleet.cleanup()
        finally:
            db.session.remove()
            db.engine.dispose()
            if self.ctx is not None:
                self.ctx.pop()
            if self.pg is not None:
                self.pg.drop()


def main(argv: list[str] | None = None) -> int:
    from app import embedded_redis
    from app.sandbox import Sandbox
    parser = argparse.ArgumentParser(prog="python -m bench.control_plane")
    parser.add_argument("--sandbox", default="keystone-bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--web", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="keystone-control-plane-"))
    redis_proc = embedded_redis.start(work / "redis.sock", work / "redis")
    sb = Sandbox(name=args.sandbox, state_dir=ROOT / "instance" / "sandbox" / args.sandbox)
    info = sb.up(servers=2, bare=False, stand_ins=True)
    out: dict = {}
    try:
        rounds = {}
        with World(info, work / "bench", f"unix://{work / 'redis.sock'}",
                   count=2 * args.deploys, provision=True) as world:
            ids = world.fleet.env_ids
            for workers, envs in ((1, ids[:args.deploys]), (4, ids[args.deploys:])):
                plane = world.plane(args.web, workers)
                try:
                    r = run_round(world.fleet, plane, env_ids=envs, check=False)
                finally:
                    plane.stop()
                bad = {k: v for k, v in r.statuses.items() if v != "succeeded"}
                if bad:
                    raise RuntimeError(f"deploys did not succeed with {workers} worker(s): {bad}")
                rounds[workers] = r.wall_seconds
                log(f"{workers} worker(s): {r.wall_seconds}s, at most {r.max_running_deploys} "
                    "deploys running at once")
        out = {"deploys": args.deploys, "web_processes": args.web, "database": "postgresql",
               "one_worker_seconds": rounds[1], "four_workers_seconds": rounds[4],
               "ratio": round(rounds[1] / rounds[4], 2),
               "load_average": [round(x, 1) for x in os.getloadavg()],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
        if not args.keep:
            sb.down()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
