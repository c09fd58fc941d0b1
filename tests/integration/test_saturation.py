"""Issue 12 on real sandbox servers: zero downtime with the app saturated.

The bed: the sample app with Postgres and Valkey attached, a queue worker and the
scheduler, builds on the same server. The load: 32 keep-alive connections in a
closed loop (no rate limit) on ``/`` (a Postgres connection and a Redis INCR per
request) plus 4 closed-loop connections POSTing ``/items`` (a row per request).
Across a deploy of a new commit and a deploy of a commit whose ``/up`` fails:

* no request fails in any way (non-2xx, reset, socket error), no POST answered 2xx
  is lost or stored twice, and the gateway's own log never says "no upstreams
  available" (the gateway is never left without a healthy replica);
* the replica of the failing commit, which Keystone declared failed, receives 0
  requests: its own access log (the image's web server logs every request) is read
  until the container is gone;
* a worker that crash-loops fails the deploy with the reason, and the old version
  keeps serving.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from app.deploys.gateway_health import no_upstream_lines
from tests.integration.testbeds import commit_of, running_testbed
from bench.loadgen import LoadGenerator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app.sandbox.sample import push_new_commit
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "saturation", server_count=1, worker=True) as tb:
        push_new_commit(sandbox.git)
        tb.deploy()
        yield tb


class ReplicaLogWatch:
    """Reads the log of every NEW container of a service until it is gone.

    A failed replica is removed by the deploy that declared it failed, so its log
    must be read while it exists: every 0.5 s, keeping the longest read per name.
    """

    def __init__(self, server, service_id: int, ignore: list[str]):
        self.server, self.service_id, self.ignore = server, service_id, set(ignore)
        self.logs: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        script = ('for c in $(docker ps -a --filter "label=dev.keystone.service=$1" '
                  '--format "{{.Names}}"); do echo "=== $c"; docker logs "$c" 2>&1; done')
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            out = self.server.exec("sh", "-c", script, "sh", str(self.service_id),
                                   check=False, timeout=60).stdout
            name, chunks = None, {}
            for line in out.splitlines():
                if line.startswith("=== "):
                    name = line[4:].strip()
                    chunks[name] = []
                elif name:
                    chunks[name].append(line)
            for name, lines in chunks.items():
                if name in self.ignore:
                    continue
                text = "\n".join(lines)
                if len(text) >= len(self.logs.get(name, "")):
                    self.logs[name] = text
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=90)


def access_lines(log_text: str) -> list[dict]:
    """The web server's access-log entries (Caddy JSON lines with a request)."""
    out = []
    for line in log_text.splitlines():
        if not line.startswith("{") or '"request"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry.get("request"), dict):
            out.append(entry)
    return out


def test_deploys_under_saturating_load_fail_no_request(bed, sandbox):
    from app.sandbox.sample import push_broken_commit, push_new_commit
    old_containers = bed.containers()
    since = time.time()
    gets = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/", connections=32,
                         post_ratio=0.0, body_key=commit_of, max_seconds=900, timeout=30)
    posts = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/", post_path="/items",
                          connections=4, post_ratio=1.0, max_seconds=900, timeout=30)
    with gets, posts:
        time.sleep(3)
        new_commit = push_new_commit(sandbox.git)
        good = bed.deploy(expect=None)
        assert good.status.value == "succeeded", good.error
        serving = bed.containers()
        push_broken_commit(sandbox.git)
        with ReplicaLogWatch(bed.sandbox_servers[0], bed.web_id,
                             ignore=old_containers + serving) as watch:
            broken = bed.deploy(expect=None)
        time.sleep(3)
    push_new_commit(sandbox.git)  # leave a good head for later modules

    g, p = gets.stats, posts.stats
    assert g.requests > 200 and p.requests > 20, (g.requests, p.requests)
    assert (g.non_2xx, g.connection_errors, g.raw_resets) == (0, 0, 0), \
        (dict(g.statuses), dict(g.errors), g.samples)
    assert (p.non_2xx, p.post_failures, p.raw_resets) == (0, 0, 0), \
        (dict(p.statuses), dict(p.errors), p.samples)
    # Every POST answered 2xx is stored, once.
    rows = bed.psql("SELECT name, count(*) FROM sample_items WHERE name LIKE 'w%' GROUP BY name")
    counts = {ln.split("|")[0]: int(ln.split("|")[1]) for ln in rows.splitlines() if "|" in ln}
    lost = [n for n in p.accepted_posts if counts.get(n, 0) == 0]
    twice = [n for n, c in counts.items() if c > 1]
    assert not lost and not twice, (lost[:5], twice[:5])
    # The gateway always had a healthy upstream.
    gateway_log = bed.gateway_log(0, since)
    assert not no_upstream_lines(gateway_log), no_upstream_lines(gateway_log)[:3]

    # The broken commit failed, the good one kept serving, its replica never got a request.
    assert broken.status.value == "failed"
    assert "never became healthy" in (broken.error or "") + "".join(
        c.error or "" for c in broken.children), broken.error
    assert bed.commit_served() == new_commit
    assert bed.containers() == serving
    failed = {name: log for name, log in watch.logs.items() if f"-op{broken.id}" in name}
    web_failed = {n: log for n, log in failed.items() if "web" in n}
    assert web_failed, f"the failed web replica's log was never read: {list(watch.logs)}"
    for name, log in web_failed.items():
        entries = access_lines(log)
        # Keystone's own health probes run inside the container (from 127.0.0.1); anything
        # else came through a gateway. The gateways' ready checks are not requests served.
        probes = [e for e in entries if e["request"].get("uri") == "/up"]
        assert probes, f"{name}: Keystone's own /up probes are missing from its access log"
        served = [e["request"].get("uri") for e in entries
                  if e["request"].get("remote_ip") not in ("127.0.0.1", "::1")
                  and e["request"].get("uri") != "/.keystone/ready"]
        assert served == [], f"{name} served production requests: {served[:5]}"


def test_crash_looping_worker_fails_the_deploy(bed, sandbox):
    from app.extensions import db
    from app.models import Service
    from app.sandbox.sample import push_new_commit
    before = bed.commit_served()
    serving = bed.containers()
    worker = db.session.get(Service, bed.worker_id)
    saved = dict(worker.config or {})
    worker.config = {**saved, "command": ["php", "-r", "usleep(300000); exit(255);"]}
    db.session.commit()
    try:
        push_new_commit(sandbox.git)
        op = bed.deploy(expect=None)
    finally:
        worker = db.session.get(Service, bed.worker_id)
        worker.config = saved
        db.session.commit()
    assert op.status.value == "failed"
    reasons = " ".join(filter(None, [op.error, *(c.error for c in op.children),
                                     *(g.error for c in op.children for g in c.children)]))
    assert "crash-looping" in reasons or "exited with code 255" in reasons, reasons
    # The old version keeps serving; the new web replica was taken away again.
    assert bed.commit_served() == before
    assert bed.containers() == serving
    env = bed.env
    assert all(r.status.value in ("running",) for s in env.services
               for r in s.present_replicas), "a removed replica is still listed"
