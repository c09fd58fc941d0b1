"""Issue 13 acceptance: a REAL Laravel application, deployed by Keystone to provisioned servers.

The app is ``laravel.git`` on the sandbox git host (app/sandbox/laravel_app): Laravel 8.83
from Debian's packages, built by the managed Dockerfile (``composer install``, ``storage:link``)
exactly as a user's app. Two servers Keystone provisioned (``keystone`` user, UFW, fail2ban),
the sandbox registry, Postgres and Valkey (cache, session and queue) attached, the scheduler
(single mode, every minute as in production) and a dedicated ``queue:work`` worker.

The first deploy is the variant with no ``/up`` route (Laravel 8 has none: the health checks
fall back to ``/``); every later deploy has it. The deploys under load each add a migration,
so "migrations ran exactly once" is visible in the database, not only in the step list.

The tests run in file order and build on each other (one module-scoped testbed).
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import time
import uuid
from collections import Counter

import pytest

from app.sandbox.testbed import wait_until
from bench.loadgen import LoadGenerator
from tests.integration.testbeds import commit_of, running_testbed

pytestmark = pytest.mark.integration

# Deploys under HTTP load after the first one. Each is a full build on a server, a push to
# the registry and a pull on the other server: 137-160 s each on the shared 2-core VM at load
# average ~29. `make test` runs 2 to keep the suite inside CI's budget; the acceptance's five
# were run with KEYSTONE_REAL_LARAVEL_REDEPLOYS=5 (16.5 min, figures in the README). At least
# 2: the scheduler test needs ticks from at least two minutes (1 left only one).
REDEPLOYS = max(2, int(os.environ.get("KEYSTONE_REAL_LARAVEL_REDEPLOYS", "2")))


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app.sandbox.images import LARAVEL_BASE_IMAGE, ensure_image
    from app.sandbox.sample import LARAVEL_REPO, push_laravel_commit
    ensure_image("php-base")  # the stand-in with Debian's Laravel 8 (cached by recipe hash)
    push_laravel_commit(sandbox.git, "initial")  # the repository must exist for verify_access
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url,
                         "real-laravel", server_count=2, worker=True, repo=LARAVEL_REPO,
                         base_image=LARAVEL_BASE_IMAGE, scheduler_interval=60,
                         # Laravel 8's own names (CACHE_STORE is Laravel 11's).
                         extra_env={"CACHE_DRIVER": "redis", "SESSION_DRIVER": "redis",
                                    "QUEUE_CONNECTION": "redis"}) as tb:
        tb.deploys = 0
        yield tb


def request(bed, method: str, path: str, server_index: int = 0, body: bytes | None = None,
            headers: dict | None = None):
    """One request through a server's gateway: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", bed.http_port(server_index), timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Host": bed.hostname, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def set_cookies(headers) -> dict[str, str]:
    out = {}
    for name, value in headers:
        if name.lower() == "set-cookie":
            k, _, v = value.split(";", 1)[0].partition("=")
            out[k.strip()] = v.strip()
    return out


def get_session(bed, cookies: dict[str, str], server_index: int = 0) -> dict:
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    status, headers, body = request(bed, "GET", "/session", server_index,
                                    headers={"Cookie": cookie} if cookie else None)
    assert status == 200, body
    data = json.loads(body)
    data["set_cookies"] = set_cookies(headers)
    return data


def upload(bed, name: str, content: bytes) -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()
    status, _, answer = request(bed, "POST", "/api/upload", body=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 201, answer
    return status


def stored_on(bed, name: str) -> dict[int, str]:
    """{server index: content} of uploads/<name> in the web replica's storage/ on each server.

    Each server has its own storage volume (shared files across servers need an object
    store), so an upload lives on the server whose replica took it."""
    from app.drivers.laravel.driver import STORAGE_PATH
    found = {}
    for index in (0, 1):
        for container in bed.containers(index):
            proc = bed.sandbox_servers[index].exec("docker", "exec", container, "cat",
                                                   f"{STORAGE_PATH}/app/uploads/{name}",
                                                   check=False)
            if proc.returncode == 0:
                found[index] = proc.stdout
    return found


def served_back(bed, name: str, content: bytes) -> bool:
    """GET /files/<name> through the gateway answers the file (the gateway balances over both
    servers' replicas, so ask until the one holding it answers; bounded)."""
    for _ in range(30):
        status, _, body = request(bed, "GET", f"/files/{name}")
        if status == 200:
            return body == content
        assert status == 404, body
    return False


def job_runs(bed) -> Counter:
    return Counter(line for line in bed.psql("SELECT token FROM job_runs").split() if line)


def migration_steps(op):
    return [s for s in op.steps if s.name.startswith("Run migrations")]


def assert_migrated_once(bed, op, head_mark_expected: bool = True):
    """This deploy ran ``migrate --force`` once, and each migration ran once: Laravel's
    migrations table names every mark migration once, and each wrote exactly one row."""
    assert len(migration_steps(op)) == 1 and op.result["migrations_ran"] == 1, op.result
    applied = bed.psql("SELECT migration FROM migrations").split()
    assert len(applied) == len(set(applied)), applied
    marks = Counter(m.rsplit("_deploy_mark_", 1)[1] for m in applied if "_deploy_mark_" in m)
    rows = Counter(bed.psql("SELECT mark FROM deploy_marks").split())
    assert rows == marks and set(rows.values()) == {1}, (rows, marks)
    # One batch per deploy that brought new migrations (every deploy here does).
    bed.deploys += 1
    assert int(bed.psql("SELECT MAX(batch) FROM migrations").strip()) == bed.deploys
    return marks


def deploy(bed):
    """Deploy the pushed head; remember when it ended (the scheduler test waits past it)."""
    op = bed.deploy()
    bed.last_deployed_at = time.time()
    return op


def push(sandbox, with_up: bool = True) -> str:
    from app.sandbox.sample import LARAVEL_REPO, push_laravel_commit
    return push_laravel_commit(sandbox.git, "update", repo=LARAVEL_REPO, with_up=with_up)


# --------------------------------------------------------------------------- tests

def test_first_deploy_of_the_variant_without_up_serves_laravel(bed, sandbox):
    """Laravel 8 has no /up: the deploy's health checks fall back to / and the deploy succeeds."""
    head = push(sandbox, with_up=False)
    op = deploy(bed)
    assert op.result["commit"] == head
    for index in (0, 1):
        status, _, body = request(bed, "GET", "/", index)
        assert status == 200, body
        data = json.loads(body)
        assert data["app"] == "laravel" and data["laravel"].startswith("8.83"), data
        assert data["commit"] == head
        assert data["database"]["reachable"] is True, data
        # Keys under REDIS_PREFIX as the slice's ACL user: no NOPERM, no AUTH failure.
        assert data["redis"]["reachable"] is True and data["redis"]["hits"] >= 1, data
        assert data["drivers"] == {"session": "redis", "cache": "redis", "queue": "redis"}
        assert request(bed, "GET", "/up", index)[0] == 404  # the variant really has none
    # php artisan migrate --force: Laravel's migrations table, the app's three and the marks.
    assert_migrated_once(bed, op)
    applied = bed.psql("SELECT migration FROM migrations").split()
    assert {"2024_01_01_000000_create_items_table", "2024_01_01_000001_create_job_runs_table",
            "2024_01_01_000002_create_schedule_ticks_table"} <= set(applied)
    # Web on both servers, the worker too, all of them healthy.
    assert len(bed.containers(0)) == 1 and len(bed.containers(1)) == 1
    assert len(bed.containers(0, bed.worker_id)) == 1
    bed.first_commit = head


def test_session_upload_and_job_before_the_redeploys(bed):
    """A session (in Valkey) with an encrypted cookie, an upload under storage/app, a job."""
    first = get_session(bed, {})
    assert first["fresh"] is True and first["visitor"]
    cookies = first["set_cookies"]
    assert "laravel_session" in cookies and "keystone_note" in cookies, cookies
    # Both cookies are encrypted with APP_KEY (Laravel's EncryptCookies): not the plain value.
    assert first["visitor"] not in cookies["keystone_note"]
    again = get_session(bed, cookies)
    assert (again["fresh"], again["visitor"]) == (False, first["visitor"])
    assert again["note"] == f"note-{first['visitor']}"
    bed.cookies, bed.visitor = cookies, first["visitor"]

    bed.upload_name = f"probe-{secrets.token_hex(6)}.bin"
    bed.upload_content = secrets.token_hex(1024).encode()
    upload(bed, bed.upload_name, bed.upload_content)
    found = stored_on(bed, bed.upload_name)
    assert list(found.values()) == [bed.upload_content.decode()], found
    bed.upload_server = next(iter(found))
    assert served_back(bed, bed.upload_name, bed.upload_content)

    token = f"probe-{secrets.token_hex(6)}"
    status, _, body = request(bed, "POST", "/api/jobs", body=f"name={token}".encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 202, body
    assert wait_until(lambda: job_runs(bed)[token] >= 1, timeout=60), "queue:work never ran it"
    assert job_runs(bed)[token] == 1
    bed.probe_tokens = [token]


def test_deploys_under_load_keep_everything(bed, sandbox):
    """REDEPLOYS deploys (with /up now) under GET+POST load on both servers: 0 failed
    requests, migrations once per deploy, the session, the upload, every job exactly once."""
    jobs_load = LoadGenerator(bed.http_port(0), bed.hostname, rps=20, connections=4,
                              post_ratio=0.4, post_path="/api/jobs", body_key=commit_of,
                              max_seconds=1200)
    items_load = LoadGenerator(bed.http_port(1), bed.hostname, rps=20, connections=4,
                               post_ratio=0.3, post_path="/api/items", body_key=commit_of,
                               max_seconds=1200)
    commits = [bed.first_commit]
    timings = []
    with jobs_load, items_load:
        for _ in range(REDEPLOYS):
            head = push(sandbox)
            started = time.monotonic()
            op = deploy(bed)
            timings.append(round(time.monotonic() - started, 1))
            assert op.result["commit"] == head
            commits.append(head)
            assert_migrated_once(bed, op)
            for index in (0, 1):
                status, _, body = request(bed, "GET", "/", index)
                assert status == 200 and json.loads(body)["commit"] == head, body
                assert request(bed, "GET", "/up", index)[0] == 200
    print(f"\nreal Laravel: {REDEPLOYS} deploys under load took {timings} s; "
          f"jobs load {jobs_load.stats.as_dict()}, items load {items_load.stats.as_dict()}")
    for stats in (jobs_load.stats, items_load.stats):
        assert stats.requests > 100
        assert (stats.non_2xx, stats.connection_errors, stats.post_failures) == (0, 0, 0), \
            (stats.as_dict(), stats.samples, stats.errors)
        assert set(stats.bodies) <= set(commits) | {"?"}, stats.bodies
    # Every accepted POST /api/items is one row; every accepted job ran exactly once.
    names = Counter(bed.psql("SELECT name FROM items").split())
    assert all(names[n] == 1 for n in items_load.stats.accepted_posts)
    expected = set(jobs_load.stats.accepted_posts) | set(bed.probe_tokens)
    assert wait_until(lambda: expected <= set(job_runs(bed)), timeout=120), \
        expected - set(job_runs(bed))
    runs = job_runs(bed)
    assert {t: n for t, n in runs.items() if n != 1} == {}
    assert set(runs) == expected
    # The session cookie issued before the first redeploy still works (stable APP_KEY),
    # on both servers, and the uploaded file survived every deploy.
    for index in (0, 1):
        data = get_session(bed, bed.cookies, index)
        assert (data["fresh"], data["visitor"]) == (False, bed.visitor)
        assert data["note"] == f"note-{bed.visitor}"
    # The upload is still in storage/ of the (new) replica on the server that took it.
    assert stored_on(bed, bed.upload_name) == {bed.upload_server: bed.upload_content.decode()}
    assert served_back(bed, bed.upload_name, bed.upload_content)


def ticks(bed) -> list[list[str]]:
    """``[minute, hostname]`` of every keystone:tick, in the order they ran."""
    return [line.split("|") for line in
            bed.psql("SELECT minute, hostname FROM schedule_ticks ORDER BY id").splitlines()
            if line]


def wait_for_a_tick_after_the_last_deploy(bed) -> None:
    """Wait (at most a minute and a bit) until the runner the last deploy chose has ticked:
    every earlier runner has handed over by then, so the table holds the whole history."""
    done = time.strftime("%Y-%m-%d %H:%M", time.gmtime(bed.last_deployed_at))
    assert wait_until(lambda: any(minute > done for minute, _ in ticks(bed)), timeout=90), \
        f"no tick after the deploy that finished in {done}: {ticks(bed)}"


def test_scheduler_ran_every_minute_exactly_once(bed, sandbox):
    """Laravel's scheduler (`schedule:run` every minute, one replica in single mode): one
    keystone:tick per minute across all the deploys, never two, and no minute missed."""
    wait_for_a_tick_after_the_last_deploy(bed)
    if len({host for _, host in ticks(bed)}) < 2:
        # The deploys above all fitted inside one minute (fast builds): hand the scheduler
        # over once more, at a minute where a runner has ticked, and wait for the new one.
        head = push(sandbox)
        op = deploy(bed)
        assert op.result["commit"] == head
        assert_migrated_once(bed, op)
        wait_for_a_tick_after_the_last_deploy(bed)
    rows = ticks(bed)
    assert len(rows) >= 2, rows
    per_minute = Counter(minute for minute, _ in rows)
    assert {m: n for m, n in per_minute.items() if n > 1} == {}
    minutes = sorted(per_minute)
    first = time.mktime(time.strptime(minutes[0], "%Y-%m-%d %H:%M"))
    last = time.mktime(time.strptime(minutes[-1], "%Y-%m-%d %H:%M"))
    expected = int((last - first) // 60) + 1
    assert len(minutes) == expected, f"missed minutes between {minutes[0]} and {minutes[-1]}"
    # The scheduler moved with the deploys: more than one replica ran it.
    assert len({host for _, host in rows}) >= 2
