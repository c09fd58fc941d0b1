"""Faults injected into real deploys on the sandbox, under HTTP load (issue 15, section 3).

    python -m bench.faults            # every scenario; prints ONE JSON line
    python -m bench.faults --only 7,1 # some of them

The scenarios (run in this order; each under GET and POST load on the bed's gateway):

7. two deploys of one environment at once (the second waits, never interleaves) while
   a deploy of another environment runs in parallel;
1. the ``keystone worker`` running the deploy is SIGKILLed (a supervisor restarts it;
   its start-up recovery, the reaper, ends the operation ``interrupted``);
3. the SSH connection is cut mid-step (the keystone user's sshd session processes on
   the server are killed);
4. the gateway is given an invalid Caddyfile (the file it is given to validate is
   corrupted on the server, during a deploy that re-routes the environment);
2. Redis restarts mid-deploy;
5. the server container of another environment restarts mid-deploy (its replicas and
   gateway come back by restart policy; the next health check shows them);
6. the server disk fills during a build (a small, full filesystem where builds write).

Each fault scenario shows: the operation ends in a clear state (failed or interrupted)
with the reason on a step; its lock is released; the previous version keeps serving
(0 failed requests, 0 lost POSTs); a retry then succeeds. The scenario code lives here
and is imported by tests/integration/test_faults.py, so the test and the benchmark run
the same thing. Deploys run in real ``keystone worker`` processes (two of them).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.procs import owner_of

from bench.loadgen import LoadGenerator

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("7", "1", "3", "4", "2", "5", "6")
FAULT_DEPLOY_TIMEOUT = 600  # bound of every wait for a deploy to end


# --------------------------------------------------------------------------- small helpers

def wait_for(predicate, timeout: float, interval: float = 0.3, what: str = "condition"):
    from app.extensions import db
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.expire_all()
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    db.session.expire_all()
    value = predicate()
    if not value:
        raise TimeoutError(f"{what}: not within {timeout:g}s")
    return value


def op_row(op_id: int):
    from app.extensions import db
    from app.models import Operation
    db.session.expire_all()
    return db.session.get(Operation, op_id)


def tree(op) -> list:
    """The operation and all its descendants."""
    out, frontier = [], [op]
    while frontier:
        cur = frontier.pop(0)
        out.append(cur)
        frontier.extend(cur.children)
    return out


def running_step(op_id: int, pattern: str, any_status: bool = False) -> str | None:
    """The name of a running (or, with ``any_status``, any) step of the tree whose name
    matches ``pattern``."""
    op = op_row(op_id)
    if op is None:
        return None
    for o in tree(op):
        for s in o.steps:
            if (any_status or s.status.value == "running") and re.search(pattern, s.name):
                return s.name
    return None


def step_reason(op) -> str | None:
    """The reason a step of the tree carries: the first step, in the order they ran, that
    failed or was interrupted with one (the cause, not a clean-up that failed after it)."""
    steps = sorted((s for o in tree(op) for s in o.steps), key=lambda s: s.id)
    for s in steps:
        if s.status.value in ("failed", "interrupted") and (s.error_logs or "").strip():
            return f"{s.name}: {s.error_logs.strip()}"
    return None


def held_locks(op) -> list[str]:
    from app.extensions import db
    from app.models import OperationLock
    ids = [o.id for o in tree(op)]
    return list(db.session.execute(sa.select(OperationLock.key).where(
        OperationLock.operation_id.in_(ids))).scalars())


def wait_end(op_id: int, timeout: float = FAULT_DEPLOY_TIMEOUT):
    return wait_for(lambda: (op := op_row(op_id)) is not None and op.is_terminal and op,
                    timeout, 0.5, f"operation #{op_id} to end")


def commit_of(body: bytes):
    try:
        return json.loads(body)["commit"]
    except (ValueError, KeyError, TypeError):
        return "?"


# --------------------------------------------------------------------------- workers

class Workers:
    """`keystone worker` processes on the bed's database, Redis and queue (ours to kill)."""

    def __init__(self, app, log_dir: Path):
        self.app = app
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        cfg = app.config
        self.env = {**os.environ,
                    "DATABASE_URL": cfg["SQLALCHEMY_DATABASE_URI"],
                    "REDIS_URL": cfg["REDIS_URL"],
                    "KEYSTONE_ENCRYPTION_KEYS": ",".join(cfg["ENCRYPTION_KEYS"]),
                    "KEYSTONE_SECRET_KEY": cfg["SECRET_KEY"],
                    "KEYSTONE_QUEUE": cfg["RQ_QUEUE"],
                    "KEYSTONE_REDIS_PREFIX": cfg.get("REDIS_PREFIX") or "keystone",
                    "KEYSTONE_INSTANCE_PATH": str(log_dir / "worker-instance"),
                    "PYTHONPATH": str(ROOT)}

    def start(self) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "keystone"), "worker"],
                                env=self.env, cwd=str(ROOT), stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def owner_of(self, horse_pid: int) -> subprocess.Popen | None:
        """Our worker whose work horse is ``horse_pid``."""
        return owner_of(horse_pid, self.alive())

    def stop(self) -> None:
        for p in self.alive():
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


# --------------------------------------------------------------------------- redis

def restart_redis(redis_url: str, down_seconds: float = 3.0):
    """SHUTDOWN (it saves, like a service restart) the Redis at ``redis_url``, then start
    a new one on the same socket and data directory. Returns the new process."""
    import redis as redis_lib

    from app import embedded_redis
    sock = Path(redis_url.removeprefix("unix://"))
    conn = redis_lib.Redis(unix_socket_path=str(sock))
    data_dir = Path(conn.config_get("dir")["dir"])
    try:
        conn.shutdown(save=True)
    except redis_lib.exceptions.ConnectionError:
        pass  # it closes the connection as it goes
    time.sleep(down_seconds)
    return embedded_redis.start(sock, data_dir)


# --------------------------------------------------------------------------- the bed

@dataclass
class Outcome:
    scenario: str
    status: str = ""           # the faulted operation's end state
    reason: str | None = None  # the reason on its step
    locks_left: list = field(default_factory=list)
    failed_requests: int = 0
    lost_posts: int = 0
    requests: int = 0
    served: dict = field(default_factory=dict)  # commit -> GETs answered with it
    previous_commit: str | None = None
    retry_status: str = ""
    notes: list = field(default_factory=list)

    @property
    def survived(self) -> bool:
        if self.scenario == "7":
            clear = self.status == "succeeded"
        else:
            clear = self.status in ("failed", "interrupted") and bool(self.reason)
        return (clear and not self.locks_left and self.failed_requests == 0
                and self.lost_posts == 0 and self.retry_status == "succeeded"
                and set(self.served) <= {self.previous_commit, *self.notes_commits()})

    def notes_commits(self) -> set:
        return {n.split("=", 1)[1] for n in self.notes if n.startswith("also_served=")}

    def as_dict(self) -> dict:
        return {"scenario": self.scenario, "status": self.status, "reason": self.reason,
                "locks_left": self.locks_left, "failed_requests": self.failed_requests,
                "lost_posts": self.lost_posts, "requests": self.requests,
                "retry": self.retry_status, "survived": self.survived,
                "served": self.served, "notes": self.notes}


class FaultBed:
    """A set-up Testbed (env A on sandbox server 1), a second environment (env B, with its
    own gateway on server 2), two workers, and the scenarios. Must run in an app context."""

    def __init__(self, bed, sandbox, app, work: Path):
        self.bed, self.sandbox, self.app, self.work = bed, sandbox, app, work
        self.restarted_redis = None  # the Redis started after a restart (ours to stop)
        self.workers = Workers(app, work)
        self.env_b_id: int | None = None
        self.web_b_id: int | None = None
        self.hostname_b = f"faults-b-{bed.tag}.keystone.test"
        self.b_ids: list[int] = []

    # ---------------------------------------------------------------- set-up
    def setup(self) -> "FaultBed":
        from app.sandbox.sample import push_new_commit
        push_new_commit(self.sandbox.git)
        self.bed.deploy()
        self._setup_env_b()
        for _ in range(2):
            self.workers.start()
        return self

    def _setup_env_b(self) -> None:
        """Another application's environment on sandbox server 2: web + its own gateway."""
        from app.attachments import attach_domain, start_slice_provision
        from app.blueprints.applications import create_application
        from app.services_ops.deploy import start_service_deploy
        from app.extensions import db
        from app.models import Organisation, Server, Service
        from app.models.enums import DeployPolicy, ServerStatus, ServiceCategory
        from app.repositories import verify_access
        from app.sandbox import load_images
        from app.sandbox.testbed import PHP_BASE
        bed, sb = self.bed, self.sandbox
        s2 = sb.servers[1]
        load_images([s2], [PHP_BASE])
        org = db.session.get(Organisation, bed.org_id)
        server = Server(organisation_id=org.id, name="faults-2", public_ip=s2.host,
                        ssh_port=s2.ssh_port, private_ip=s2.private_ip,
                        host_key_fingerprint=s2.host_key_fingerprint,
                        management_user=bed.management_user, status=ServerStatus.ACTIVE)
        db.session.add(server)
        db.session.commit()
        application = create_application(org.id, f"other-{bed.tag}", sb.git.sample_repo_url,
                                         "main")
        db.session.commit()
        env = application.environments[0]
        env.build_config = {"base_image": "keystone-sandbox/php-base:8.3-fpm"}
        sb.git.authorize_key(application.deploy_key_public)
        if not verify_access(application).ok:
            raise RuntimeError("env B: deploy key not accepted")
        web = next(s for s in env.services if "web" in (s.process_roles or []))
        web.server_id = server.id
        web.config = {"server_ids": [server.id], "health": dict(bed.health),
                      "drain_seconds": 1.5, "stop_grace_seconds": 10,
                      "migration_mode": "disabled"}
        gw = Service(id=bed.base_id + 50, organisation_id=org.id, server_id=server.id,
                     name="gateway-b", type="caddy", driver_name="caddy",
                     category=ServiceCategory.GATEWAY, version_track="2",
                     deploy_policy=DeployPolicy.MANUAL_OR_ON_ROUTE_CHANGE,
                     config={"image": sb.images.get(
                         "caddy", f"{sb.registry.url}/keystone-sandbox/caddy:2")})
        db.session.add(gw)
        db.session.commit()
        self.env_b_id, self.web_b_id, self.server_b_id = env.id, web.id, server.id
        self.b_ids = [gw.id, web.id]
        bed.run(start_service_deploy(gw, enqueue=False).id)
        _, route = attach_domain(env, gw, [self.hostname_b], tls="off")
        db.session.commit()
        bed.run(start_slice_provision(route, enqueue=False).id)
        from app.deploys.service import start_deploy
        bed.run(start_deploy(env, None, enqueue=False).id)

    def env_b(self):
        from app.extensions import db
        from app.models import Environment
        return db.session.get(Environment, self.env_b_id)

    def close(self) -> None:
        self.workers.stop()
        if self.restarted_redis is not None and self.restarted_redis.poll() is None:
            self.restarted_redis.terminate()
            self.restarted_redis.wait(timeout=10)
        s2 = self.sandbox.servers[1]
        self._umount_full_disk()
        ids = {str(i) for i in self.b_ids}
        out = s2.exec("docker", "ps", "-aq", "--filter", "label=dev.keystone.managed=true",
                      "--format", "{{.ID}} {{.Label \"dev.keystone.service\"}}",
                      check=False).stdout
        doomed = [ln.split()[0] for ln in out.splitlines()
                  if len(ln.split()) > 1 and ln.split()[1] in ids]
        if doomed:
            s2.exec("docker", "rm", "-f", *doomed, check=False)
        s2.exec("rm", "-rf", *[f"/home/keystone/services/{i}" for i in ids],
                "/home/keystone/gateway/Caddyfile", "/home/keystone/gateway/Caddyfile.next",
                "/home/keystone/gateway/Caddyfile.last-good", check=False)

    # ---------------------------------------------------------------- deploys & load
    def start_deploy(self, env=None, **kw):
        from app.deploys.service import start_deploy
        return start_deploy(env if env is not None else self.bed.env, None, **kw)

    def load(self) -> tuple[LoadGenerator, LoadGenerator]:
        bed = self.bed
        gets = LoadGenerator(bed.http_port(), bed.hostname, rps=16, connections=4, path="/",
                             post_ratio=0.0, body_key=commit_of, max_seconds=900, timeout=30)
        posts = LoadGenerator(bed.http_port(), bed.hostname, rps=6, connections=2, path="/",
                              post_path="/items", post_ratio=1.0, max_seconds=900, timeout=30)
        return gets, posts

    def account(self, out: Outcome, gets, posts) -> None:
        g, p = gets.stats, posts.stats
        out.requests += g.requests + p.requests
        out.failed_requests += (g.non_2xx + g.connection_errors + p.non_2xx
                                + p.connection_errors)
        for k, v in g.bodies.items():
            out.served[k] = out.served.get(k, 0) + v
        if p.accepted_posts:
            stored = self.bed.psql("SELECT name FROM sample_items WHERE name LIKE 'w%'")
            have = set(stored.split())
            out.lost_posts += sum(1 for n in p.accepted_posts if n not in have)
        if g.samples or p.samples:
            out.notes.append(f"samples={(g.samples + p.samples)[:3]!r}")
        if g.errors or p.errors:
            out.notes.append(f"errors={dict(g.errors + p.errors)}")

    def _finish_fault(self, out: Outcome, op_id: int) -> None:
        op = wait_end(op_id)
        out.status = op.status.value
        out.reason = step_reason(op) or (f"(operation only) {op.error}" if op.error else None)
        if out.reason and out.reason.startswith("(operation only)"):
            out.notes.append("the reason is on the operation, not on a step")
            out.reason = None
        out.locks_left = held_locks(op)

    def retry(self, out: Outcome, env=None) -> None:
        op = self.start_deploy(env)
        done = wait_end(op.id)
        out.retry_status = done.status.value
        if done.status.value != "succeeded":
            from app.sandbox.testbed import describe
            out.notes.append("retry: " + describe(done)[-1500:])

    def _fault_run(self, name: str, trigger: str, inject, *, new_commit: bool = True,
                   before=None, after=None, env=None, any_status=False) -> Outcome:
        """The common shape: load on, (commit), deploy, wait for ``trigger`` step, inject,
        wait for the end, load off, account; then ``after()`` and the retry."""
        from app.sandbox.sample import push_new_commit
        out = Outcome(name, previous_commit=self.bed.commit_served())
        if before:
            before()
        gets, posts = self.load()
        try:
            with gets, posts:
                time.sleep(1)
                if new_commit:
                    push_new_commit(self.sandbox.git)
                op = self.start_deploy(env)
                wait_for(lambda: running_step(op.id, trigger, any_status), 400, 0.2,
                         f"scenario {name}: step /{trigger}/")
                inject(op)
                self._finish_fault(out, op.id)
                time.sleep(2)
        finally:
            if after:
                after()
        self.account(out, gets, posts)
        self.retry(out, env)
        return out

    # ---------------------------------------------------------------- scenario 7
    def scenario_7(self) -> Outcome:
        """Two deploys of env A at once (the second waits), env B deployed in parallel."""
        from app.operations.errors import OperationLocked
        from app.sandbox.sample import push_new_commit
        out = Outcome("7", previous_commit=self.bed.commit_served())
        gets, posts = self.load()
        with gets, posts:
            time.sleep(1)
            new = push_new_commit(self.sandbox.git)
            first = self.start_deploy()
            second = self.start_deploy()
            other = self.start_deploy(self.env_b())
            was_queued = op_row(second.id).status.value == "queued"
            try:
                self.start_deploy(on_conflict="refuse")
                refused = "not refused"
            except OperationLocked as exc:
                refused = str(exc)
            ops = [wait_end(o.id) for o in (first, second, other)]
            time.sleep(2)
        self.account(out, gets, posts)
        out.notes.append(f"also_served={new}")
        a1, a2, b = ops
        statuses = [o.status.value for o in ops]
        out.status = "succeeded" if statuses == ["succeeded"] * 3 else ",".join(statuses)
        serial = a2.started_at is not None and a2.started_at >= a1.finished_at
        parallel = b.started_at < a1.finished_at and a1.started_at < b.finished_at
        out.locks_left = held_locks(a1) + held_locks(a2) + held_locks(b)
        out.reason = (f"second deploy queued={was_queued}, started after the first ended="
                      f"{serial}; other environment overlapped={parallel}; a refused start "
                      f"said: {refused}")
        if not (was_queued and serial and parallel and "busy" in refused):
            out.status = "interleaved-or-serial"
        out.retry_status = "succeeded"  # nothing to retry: all three succeeded
        return out

    # ---------------------------------------------------------------- scenario 1
    def scenario_1(self) -> Outcome:
        """SIGKILL the worker while the new replica is health-checked."""
        def inject(op):
            horse = int(op_row(op.id).worker_name.rsplit("/", 1)[1])
            worker = self.workers.owner_of(horse)
            if worker is None:
                raise RuntimeError(f"no worker of ours runs work horse {horse}")
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
            self.workers.start()  # the supervisor; its start-up recovery reaps
        return self._fault_run("1", r"^Health check|^Start .* slot on", inject)

    # ---------------------------------------------------------------- scenario 3
    def scenario_3(self) -> Outcome:
        """Cut the SSH connection (kill the keystone user's sshd sessions) during the build."""
        server = self.bed.sandbox_servers[0]

        def inject(op):
            time.sleep(1.0)
            script = ("ps -eo pid,args | awk '$2==\"sshd:\" && $3 ~ /^keystone/ {print $1}' "
                      "| xargs -r kill -9")
            server.exec("sh", "-c", script)
        return self._fault_run("3", r"^Build image", inject)

    # ---------------------------------------------------------------- scenario 4
    def scenario_4(self) -> Outcome:
        """A deploy that re-routes the environment; the Caddyfile the gateway is given to
        validate is corrupted on the server the moment it lands."""
        from app.extensions import db
        server = self.bed.sandbox_servers[0]
        marker = "ks-faults-corrupt-caddyfile"
        corrupt = (f': {marker}; rm -f /home/keystone/gateway/Caddyfile.next; '
                   'while [ ! -e /home/keystone/gateway/Caddyfile.next ]; do :; done; '
                   'printf "\\nthis is not { a caddyfile\\n" >> /home/keystone/gateway/Caddyfile.next')
        watcher: list[subprocess.Popen] = []

        def before():
            # A stale route (as an older Keystone left it): the deploy installs the gateway
            # configuration again before it starts the new replicas.
            from app.deploys.handlers import EnvironmentDeploy
            route = EnvironmentDeploy(None, self.bed.env)._route_slices()[0]
            route.config = {**(route.config or {}), "dial_timeout": "2s"}
            db.session.commit()
            # ...and the gateway runs what was rendered from it (valid, reloaded gracefully).
            server.exec("sh", "-c", "sed -i 's/dial_timeout 1s/dial_timeout 2s/' "
                        "/home/keystone/gateway/Caddyfile && docker exec -w /etc/caddy \"$1\" "
                        "caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile",
                        "sh", self.bed.gateway_container())
            watcher.append(subprocess.Popen(
                ["docker", "exec", server.name, "timeout", "300", "sh", "-c", corrupt],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def after():
            # The loop runs inside the server container: stopping `docker exec` here does
            # not stop it, so it is ended there, by its marker.
            # (The pattern is given in two halves, so this shell's own command line,
            # which pgrep also sees, does not match it.)
            server.exec("sh", "-c", 'for p in $(pgrep -f "$1$2"); do kill "$p"; done', "sh",
                        marker[:9], marker[9:], check=False)
            for w in watcher:
                if w.poll() is None:
                    w.kill()
                w.wait(timeout=10)

        out = self._fault_run("4", r"^Install gateway configuration", lambda op: None,
                              before=before, after=after)
        # The retry installed what the route says now.
        live = server.exec("cat", "/home/keystone/gateway/Caddyfile").stdout
        if "dial_timeout 1s" not in live or "dial_timeout 2s" in live:
            out.retry_status += " (but the gateway still runs the stale configuration)"
        return out

    # ---------------------------------------------------------------- scenario 2
    def scenario_2(self) -> Outcome:
        def inject(op):
            time.sleep(1.0)
            self.restarted_redis = restart_redis(self.app.config["REDIS_URL"])
            # A supervisor restarts whatever died with Redis (RQ workers exit on a lost
            # connection); the start-up recovery of the new one ends what died with them.
            time.sleep(3)
            while len(self.workers.alive()) < 2:
                self.workers.start()
        return self._fault_run("2", r"^Build image", inject)

    # ---------------------------------------------------------------- scenario 5
    def scenario_5(self) -> Outcome:
        """Restart env B's server container while env B deploys; env A keeps serving."""
        s2 = self.sandbox.servers[1]

        def inject(op):
            subprocess.run(["docker", "restart", "-t", "5", s2.name], check=True,
                           capture_output=True, timeout=180)

        seen: list[str] = []

        def after():
            # On return: env B's old replica and its gateway come back by restart policy,
            # and the next health check (app.health, what the worker runs periodically)
            # sees them running.
            from app.health import check_health
            from bench.loadgen import wait_http
            status, _ = wait_http(s2.http_port, self.hostname_b, timeout=180)
            seen.append(f"env B answers HTTP {status} after the restart")
            from app.extensions import db
            from app.models import Service

            def checked():
                # One pass of the periodic check; its view of env B's web and gateway.
                counts = check_health()
                db.session.expire_all()
                rows = [(r.container_name, r.status.value, r.health_status.value)
                        for sid in self.b_ids for r in db.session.get(Service, sid).replicas
                        if r.status.value not in ("removed", "stopped")
                        and (r.config or {}).get("slot") != "green"]
                seen.append(f"health check: {counts}: {rows}")
                return rows and all(st == "running" and h == "healthy" for _, st, h in rows)

            try:
                wait_for(checked, 150, 5, "env B's replicas healthy in the health check")
                ok = True
            except TimeoutError:
                ok = False
            self.b_serving_after_restart = status == 200 and ok

        out = self._fault_run("5", r"^Health check|^Start .* slot on", inject,
                              env=self.env_b(), after=after)
        out.notes.extend(seen)
        if not getattr(self, "b_serving_after_restart", False):
            out.retry_status += " (but env B did not serve after the restart)"
        return out

    # ---------------------------------------------------------------- scenario 6
    def scenario_6(self) -> Outcome:
        """A 4 MiB filesystem at /home/keystone/operations fills up when the build starts."""
        server = self.bed.sandbox_servers[0]
        ops_dir = "/home/keystone/operations"

        def before():
            # Nearly full before the deploy (16 KiB left: less than the source archive)...
            server.exec("sh", "-c", f"mkdir -p {ops_dir} && mount -t tmpfs -o size=4m,mode=0755 "
                        f"tmpfs {ops_dir} && chown keystone:keystone {ops_dir} && "
                        f"dd if=/dev/zero of={ops_dir}/.fill bs=4k count=1020 2>/dev/null")

        def inject(op):
            # ...and full as soon as the build starts.
            server.exec("sh", "-c", f"dd if=/dev/zero of={ops_dir}/.fill2 bs=4k 2>/dev/null; "
                        f"df -k {ops_dir} | tail -1", check=False)

        out = self._fault_run("6", r"^(Resolve|Fetch source|Upload source)", inject,
                              before=before, after=self._umount_full_disk, any_status=True)
        return out

    def _umount_full_disk(self) -> None:
        server = self.bed.sandbox_servers[0]
        server.exec("sh", "-c", "if mountpoint -q /home/keystone/operations; then "
                    "umount /home/keystone/operations; fi", check=False)

    def run(self, only=ORDER) -> list[Outcome]:
        outcomes = []
        for name in ORDER:
            if name in only:
                outcome = getattr(self, f"scenario_{name}")()
                print(f"scenario {name}: {json.dumps(outcome.as_dict())}", file=sys.stderr)
                outcomes.append(outcome)
        return outcomes


def summary(outcomes: list[Outcome]) -> dict:
    return {"scenarios": len(outcomes), "survived": sum(o.survived for o in outcomes),
            "failed_requests": sum(o.failed_requests for o in outcomes),
            "lost_data": sum(o.lost_posts for o in outcomes),
            "requests": sum(o.requests for o in outcomes),
            "not_survived": [o.as_dict() for o in outcomes if not o.survived]}


def main(argv: list[str] | None = None) -> int:
    from bench.cutover import _testbed
    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    parser.add_argument("--sandbox", default="keystone-bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument("--only", default=",".join(ORDER))
    args = parser.parse_args(argv)
    args.servers = 2
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    if not set(only) <= set(ORDER):
        parser.error(f"--only takes scenario numbers among {','.join(ORDER)}")
    result: dict = {}
    with _testbed(args, "bench-faults", server_count=1) as (bed, info):
        from flask import current_app
        work = Path(current_app.instance_path).parent
        faults = FaultBed(bed, info, current_app._get_current_object(), work)
        try:
            faults.setup()
            result = summary(faults.run(only))
        finally:
            faults.close()
            from app.sandbox.sample import push_new_commit
            push_new_commit(info.git)
    print(json.dumps(result))
    return 0 if result and result["survived"] == result["scenarios"] else 1


if __name__ == "__main__":
    sys.exit(main())
