"""Issue 17 sections 1 and 4 on a real sandbox server: live logs of running containers and
server metrics. One deployed bed for the module; the tailer (app.logtail.Tailer, what the
``keystone worker --logs`` job runs) serves the module's log panes from a thread over real
SSH; the panes are the real SSE view read through Flask's test client (and, last, through
chromium).

* A request made after a tail started shows up in the web service's pane (the web
  container's own access log) and in the gateway's pane as an access-log table row.
* 20 open/close cycles of a pane leave no SSH channel open on the tailer's pooled connection,
  no process of the ``keystone`` login but sshd itself and no ``docker logs`` on the server.
* One metrics pass records a sample (minute and hour rows) for the bed's server with one SSH
  connection, and the server page draws it.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from app.sandbox.testbed import wait_until
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "daytwo",
                         server_count=1) as tb:
        tb.deploy()
        yield tb


@pytest.fixture(scope="module")
def tailer(bed):
    from flask import current_app

    from app import logtail
    from app.operations import logstream
    app = current_app._get_current_object()
    redis = logstream.redis_client(blocking=True)
    t = logtail.Tailer(redis, idle_exit=3600)

    def run():
        with app.app_context():
            t.serve()

    thread = threading.Thread(target=run, name="test-tailer", daemon=True)
    thread.start()
    wait_until(lambda: redis.get(logtail.tailer_key()) == b"running", timeout=10, interval=0.05)
    yield t
    t.stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def client_for(bed):
    from flask import current_app

    from app.extensions import db
    from app.models import User
    from tests.conftest import sign_in
    client = current_app.test_client()
    sign_in(client, db.session.get(User, bed.user_id))
    return client


class Pane:
    """A browser's side of the live-log SSE: the events read so far."""

    def __init__(self, client, service_id: int, query: str = ""):
        self.resp = client.get(f"/services/{service_id}/logs/events{query}", buffered=False)
        assert self.resp.status_code == 200 and self.resp.mimetype == "text/event-stream"
        self.events = self.resp.response
        self.text = next(self.events).decode()
        self.sid = self.text.split(": live logs ")[1].split()[0]

    def read_until(self, needle: str, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"{needle!r} not in the pane:\n{self.text[-3000:]}"
            self.text += next(self.events).decode()
        return self.text

    def close(self):
        self.resp.close()


def gateway_id(bed) -> int:
    return bed.gateway_ids[0]


def web_container(bed) -> str:
    return bed.containers(0)[0]


def test_a_request_after_the_tail_started_shows_up_in_web_and_gateway_panes(bed, tailer):
    client = client_for(bed)
    web = Pane(client, bed.web_id)
    gw = Pane(client, gateway_id(bed))
    try:
        # Both tails are running on the server (a channel each) before the request is made.
        wait_until(lambda: web.sid in tailer.tails and gw.sid in tailer.tails
                   and tailer.open_channels() >= 2, timeout=20, interval=0.05)
        token = uuid.uuid4().hex[:12]
        status, _ = bed.get(f"/?tail-probe={token}")
        assert status == 200
        text = web.read_until(token)
        line = next(ln for ln in text.split("data: ") if token in ln)
        assert f'data-replica="{web_container(bed)}"' in line and f"[{web_container(bed)}]" in line
        rows = gw.read_until(token)
        row = next(ln for ln in rows.split("data: ") if token in ln)
        assert 'role="row"' in row and 'data-status="200"' in row
        assert f'data-col="path">/?tail-probe={token}</span>' in row and " ms</span>" in row
    finally:
        web.close()
        gw.close()


def keystone_processes(server) -> list[str]:
    """Processes of the ``keystone`` login other than sshd itself: what SSH channels run."""
    out = server.exec("ps", "-u", "keystone", "-o", "pid=,args=", check=False).stdout
    return [ln.strip() for ln in out.splitlines() if ln.strip() and "sshd" not in ln]


def docker_logs_processes(server) -> int:
    out = server.exec("pgrep", "-c", "-f", "docker logs", check=False).stdout.strip()
    return int(out or "0")


def test_twenty_open_close_cycles_leave_no_channel_and_no_docker_logs(bed, tailer):
    server = bed.sandbox_servers[0]
    client = client_for(bed)
    wait_until(lambda: not tailer.tails and tailer.open_channels() == 0, timeout=20,
               interval=0.1)
    assert keystone_processes(server) == [] and docker_logs_processes(server) == 0
    for _ in range(20):
        pane = Pane(client, bed.web_id)
        # The remote tail really started (a channel, a docker logs on the server)...
        wait_until(lambda: pane.sid in tailer.tails and tailer.open_channels() >= 1,
                   timeout=20, interval=0.02)
        pane.close()  # ...and the browser went away.
    wait_until(lambda: not tailer.tails and tailer.open_channels() == 0
               and docker_logs_processes(server) == 0, timeout=30, interval=0.2)
    assert tailer.open_channels() == 0
    assert docker_logs_processes(server) == 0
    assert keystone_processes(server) == []
    # One pooled SSH connection served all 20 (and the first test's) tails.
    assert tailer.pool.handshakes == 1


def test_metrics_are_recorded_for_the_bed_servers(bed):
    from app.extensions import db
    from app.jobs import collect_metrics
    from app.models import ServerMetric
    counts = collect_metrics()
    assert counts == {"servers": len(bed.server_ids), "failed": 0,
                      "handshakes": len(bed.server_ids)}, counts
    for server_id in bed.server_ids:
        rows = {r.resolution: r for r in db.session.query(ServerMetric).filter_by(
            server_id=server_id)}
        assert set(rows) == {"minute", "hour"}
        m = rows["minute"]
        assert 0 <= m.cpu_percent <= 100 and m.mem_total_mb > 0 and m.disk_total_gb > 0
        assert 0 < m.mem_percent < 100 and 0 < m.disk_percent <= 100 and m.load1 >= 0
        assert web_container(bed) in m.containers, m.containers
        assert m.containers[web_container(bed)]["mem_mb"] > 0
        html = client_for(bed).get(f"/servers/{server_id}").get_data(as_text=True)
        assert 'data-chart="CPU"' in html and f"<code>{web_container(bed)}</code>" in html


# --------------------------------------------------------------------------- in chromium
# The browser check shares this module's deployed bed: a bed of its own in tests/browser
# (provisioning, a build and a deploy) would cost ~2 minutes of the CI budget for one
# assertion. The module's app is served on a real port by werkzeug (threaded, streaming).


@pytest.fixture()
def served(bed):
    from flask import current_app
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, current_app._get_current_object(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.browser
def test_the_log_pane_shows_a_request_made_after_the_page_opened(bed, tailer, served, browser):
    from playwright.sync_api import expect

    from app.extensions import db
    from app.models import User
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20000)
    try:
        page.goto(served + "/login")
        page.get_by_label("Email").fill(db.session.get(User, bed.user_id).email)
        page.get_by_label("Password").fill("correct horse battery")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        page.goto(f"{served}/services/{bed.web_id}/logs")
        wait_until(lambda: len(tailer.tails) == 1 and tailer.open_channels() >= 1,
                   timeout=20, interval=0.05)
        token = uuid.uuid4().hex[:12]
        assert bed.get(f"/?browser-probe={token}")[0] == 200
        pane = page.locator("#live-log")
        expect(pane).to_contain_text(token, timeout=30000)
        expect(pane).to_contain_text(f"[{web_container(bed)}]")
        # The text filter hides every line without the text.
        page.get_by_label("Filter").fill(token)
        expect(pane.locator(".ln:visible")).to_have_count(
            pane.locator(".ln", has_text=token).count())
    finally:
        context.close()
    # Closing the tab ended the remote tail.
    wait_until(lambda: not tailer.tails and tailer.open_channels() == 0, timeout=30,
               interval=0.1)
