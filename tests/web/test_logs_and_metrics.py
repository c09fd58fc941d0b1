"""Issue 17 sections 1 and 4 through the web app (real Redis, the test database, no SSH):
the server page's charts, the dashboard's warnings, the roll-up in the database, and the
live-log view's session and lease."""
import datetime as dt

from rq import Queue

from app import logtail, metrics
from app.models import ServerMetric
from app.models.enums import ReplicaStatus, ServerStatus
from app.operations import logstream
from tests.conftest import sign_in
from tests.factories import build_org


def sample(cpu=12.0, disk_used=10.0, mem_used=500.0):
    return metrics.Sample(cpu_percent=cpu, mem_used_mb=mem_used, mem_total_mb=1000.0,
                          disk_used_gb=disk_used, disk_total_gb=100.0, load1=0.5, load5=0.4,
                          load15=0.3, containers={"ks-web-1": {"cpu": 1.5, "mem_mb": 64.0}})


def test_store_rolls_up_per_hour_and_prunes_past_retention(app, db):
    g = build_org()
    now = dt.datetime(2026, 12, 2, 14, 0)
    for minute, cpu in ((0, 10.0), (1, 20.0), (2, 60.0)):
        metrics.store(db.session, g.server.id, sample(cpu), now + dt.timedelta(minutes=minute))
    db.session.commit()
    minutes = metrics.series(db.session, g.server.id, "minute", now + dt.timedelta(minutes=3))
    hours = metrics.series(db.session, g.server.id, "hour", now + dt.timedelta(minutes=3))
    assert [m.cpu_percent for m in minutes] == [10.0, 20.0, 60.0]
    assert len(hours) == 1 and hours[0].samples == 3 and hours[0].cpu_percent == 30.0
    # A day later the minutes are gone, the hour stays; after 30 days the hour goes too.
    metrics.store(db.session, g.server.id, sample(), now + dt.timedelta(hours=24, minutes=5))
    db.session.commit()
    rows = db.session.query(ServerMetric).filter_by(server_id=g.server.id).all()
    assert sorted((r.resolution, r.taken_at.hour, r.taken_at.day) for r in rows) == \
        [("hour", 14, 2), ("hour", 14, 3), ("minute", 14, 3)]
    metrics.prune_old(db.session, now + dt.timedelta(days=32))
    db.session.commit()
    assert db.session.query(ServerMetric).filter_by(server_id=g.server.id).count() == 0


def test_server_page_draws_charts_and_the_container_table(app, client, db):
    g = build_org()
    metrics.store(db.session, g.server.id, sample(cpu=40.0), metrics.minute_of(
        dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)))
    db.session.commit()
    sign_in(client, g.user)
    html = client.get(f"/servers/{g.server.id}").get_data(as_text=True)
    for label in ("CPU", "Memory", "Disk", "Load"):
        assert f'data-chart="{label}"' in html
    assert 'aria-label="CPU: 40.0%"' in html and "<code>ks-web-1</code>" in html
    assert "data-metrics-warning" not in html
    hourly = client.get(f"/servers/{g.server.id}?range=30d").get_data(as_text=True)
    assert "hourly averages, last 30 days" in hourly and 'data-chart="CPU"' in hourly


def test_server_page_without_samples(app, client, db):
    g = build_org()
    sign_in(client, g.user)
    html = client.get(f"/servers/{g.server.id}").get_data(as_text=True)
    assert "No samples yet" in html


def test_dashboard_warns_about_a_full_disk_or_memory(app, client, db):
    g = build_org()
    now = metrics.minute_of(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    metrics.store(db.session, g.server.id, sample(disk_used=80.0), now - dt.timedelta(minutes=1))
    db.session.commit()
    sign_in(client, g.user)
    assert "data-metrics-warning" not in client.get("/").get_data(as_text=True)
    metrics.store(db.session, g.server.id, sample(disk_used=95.5, mem_used=960.0), now)
    db.session.commit()
    html = client.get("/").get_data(as_text=True)
    assert "web-1: disk 96% full (95.5 of 100.0 GiB)" in html
    assert "web-1: memory 96% used (960 of 1000 MiB)" in html


def test_collect_metrics_skips_servers_it_cannot_reach_safely(app, db):
    g = build_org()
    g.server.status = ServerStatus.ACTIVE  # no pinned host key: never contacted
    db.session.commit()
    assert metrics.collect_metrics() == {"servers": 0, "failed": 0, "handshakes": 0}


def test_the_worker_enqueues_one_metrics_pass_per_interval(app):
    from app.jobs.worker import redis_connection, schedule_metrics
    conn = redis_connection(app)
    conn.delete(metrics.schedule_key(app.config))
    queue = Queue(app.config["RQ_QUEUE"], connection=conn)
    queue.empty()
    assert schedule_metrics(app, conn, queue) is True
    assert schedule_metrics(app, conn, queue) is False
    assert [j.func_name for j in queue.jobs] == ["app.jobs.collect_metrics"]
    queue.empty()


def running_replica(db, g):
    g.replica.status = ReplicaStatus.RUNNING
    db.session.commit()


def test_logs_page_offers_since_filter_and_pause(app, client, db):
    g = build_org()
    running_replica(db, g)
    sign_in(client, g.user)
    html = client.get(f"/services/{g.replica.service_id}/logs?since=1h").get_data(as_text=True)
    assert f'sse-connect="/services/{g.replica.service_id}/logs/events?since=1h&amp;tail=200"' \
        in html
    assert "data-log-filter" in html and "data-log-pause" in html
    assert '<option value="1h" selected>' in html and "<code>ks-web-1</code>" in html
    # A value outside the allowlist is ignored, never passed on.
    html = client.get(f"/services/{g.replica.service_id}/logs?since=1h;id").get_data(as_text=True)
    assert "since=1h;id" not in html and "events?tail=200" in html


def test_logs_of_another_organisation_are_not_found(app, client, db):
    g = build_org()
    other = build_org(email="other@example.com", organisation="Other")
    sign_in(client, other.user)
    assert client.get(f"/services/{g.replica.service_id}/logs").status_code == 404
    assert client.get(f"/services/{g.replica.service_id}/logs/events").status_code == 404


def test_the_sse_view_holds_a_lease_while_open_and_drops_it_when_closed(app, client, db):
    g = build_org()
    running_replica(db, g)
    sign_in(client, g.user)
    redis = logstream.redis_client()
    redis.delete(logtail.tailer_key())
    jobs = Queue(logtail.queue_name(app.config), connection=redis)
    jobs.empty()
    resp = client.get(f"/services/{g.replica.service_id}/logs/events?since=5m",
                      buffered=False)
    assert resp.mimetype == "text/event-stream"
    first = next(resp.response)
    sid = first.decode().split(": live logs ")[1].split()[0]
    assert redis.exists(logtail.lease_key(sid))
    assert redis.hgetall(logtail.session_key(sid)) == {
        b"service_id": str(g.replica.service_id).encode(), b"since": b"5m", b"tail": b"200"}
    assert [j.func_name for j in jobs.jobs] == ["app.jobs.tail_logs"]
    # A second viewer while the tailer runs enqueues nothing more.
    second = client.get(f"/services/{g.replica.service_id}/logs/events", buffered=False)
    next(second.response)
    assert len(jobs.jobs) == 1
    # A line written to the session's stream reaches the browser, tagged with its replica.
    redis.xadd(logtail.stream_key(sid), {"k": "line", "r": "ks-web-1", "t": "GET / 200"})
    event = next(resp.response).decode()
    assert event.startswith("id: ") and "event: line" in event and "[ks-web-1]" in event
    resp.close()
    second.close()
    assert not redis.exists(logtail.lease_key(sid))
    jobs.empty()


def test_the_tailer_ends_sessions_without_a_lease_and_says_when_nothing_runs(app, db):
    g = build_org()  # its replica is pending: nothing to follow
    redis = logstream.redis_client()
    tailer = logtail.Tailer(redis, idle_exit=0.0, poll=0.01)
    sid = logtail.open_session(redis, g.replica.service_id, since=None, tail=10)
    assert tailer.pass_once() == 1
    entries = redis.xrange(logtail.stream_key(sid))
    assert entries and entries[0][1][b"t"] == b"-- no running replica to follow"
    # Replica threads have no app context: they still write under the installation's prefix.
    import threading
    th = threading.Thread(target=tailer._note, args=(sid, "ks-web-1", "from a thread"))
    th.start()
    th.join()
    assert redis.xrange(logtail.stream_key(sid))[-1][1][b"t"] == b"from a thread"
    logtail.close_session(redis, sid)
    assert tailer.pass_once() == 0
    assert not redis.sismember(logtail.sessions_key(), sid)
    assert tailer.serve() == {"sessions": 0}  # nothing left: it returns at once
    assert not redis.exists(logtail.tailer_key())


def test_follow_names_its_keys_in_the_views_app_context(app):
    """The SSE generator runs after the view returned (no app context): its keys must still
    carry the installation's prefix, or the browser follows an empty stream."""
    import threading
    import uuid
    assert app.config["REDIS_PREFIX"] != "keystone"
    redis = logstream.redis_client()
    sid = uuid.uuid4().hex[:16]
    redis.xadd(logtail.stream_key(sid), {"k": "line", "r": "ks-web-1", "t": "hello"})
    gen = logtail.follow(redis, sid, heartbeat=0.1)
    out: list[str] = []
    th = threading.Thread(target=lambda: out.extend([next(gen), next(gen)]))
    th.start()
    th.join()
    assert "hello" in out[1] and redis.exists(logtail.lease_key(sid))
    gen.close()
    assert not redis.exists(logtail.lease_key(sid))


def test_the_tailer_job_returns_when_no_pane_is_open(app, monkeypatch):
    from app.jobs import tail_logs
    monkeypatch.setattr(logtail, "IDLE_EXIT", 0.0)
    redis = logstream.redis_client()
    redis.delete(logtail.sessions_key())
    assert tail_logs() == {"sessions": 0}
    assert not redis.exists(logtail.tailer_key())
