"""What the periodic health check found is on the environment and service pages; the worker
enqueues the check once per interval (real Redis)."""
import datetime as dt

from app.models import ServiceReplica
from app.models.enums import HealthStatus, ReplicaStatus
from tests.factories import build_org
from tests.conftest import sign_in


def login_as(client, graph):
    sign_in(client, graph.user)


def test_a_dead_or_crash_looping_replica_is_shown_on_both_pages(app, client, db):
    g = build_org()
    r = g.replica
    r.status, r.health_status = ReplicaStatus.RUNNING, HealthStatus.UNHEALTHY
    r.container_state, r.restart_count = "crash_loop", 6
    r.checked_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    r.config = {"health_problem": "it restarts in a loop (6 restarts, last exit code 1)"}
    db.session.commit()
    login_as(client, g)
    env_html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "web: ks-web-1 on web-1: it restarts in a loop (6 restarts, last exit code 1)." \
        in env_html
    assert 'data-replica-problem="crash_loop"' in env_html and "6 restarts" in env_html
    # An application service's page is its environment's; a managed service (Postgres,
    # Valkey, the gateway) has its own page with its replicas.
    pg = ServiceReplica(service=g.postgres, server=g.server, container_name="ks-postgres-9",
                        status=ReplicaStatus.FAILED, health_status=HealthStatus.UNHEALTHY,
                        container_state="exited", restart_count=0,
                        config={"health_problem": "its container died (exit code 137)"})
    db.session.add(pg)
    db.session.commit()
    svc_html = client.get(f"/services/{g.postgres.id}").get_data(as_text=True)
    assert 'data-replica-problem="exited"' in svc_html
    assert "its container died (exit code 137)" in svc_html
    # Once the check sees them healthy again the problem is gone from both pages.
    for row in (r, pg):
        row.container_state, row.config = "running", {"health_problem": None}
        row.status, row.health_status = ReplicaStatus.RUNNING, HealthStatus.HEALTHY
    db.session.commit()
    for url in (f"/environments/{g.environment.id}", f"/services/{g.postgres.id}"):
        html = client.get(url).get_data(as_text=True)
        assert "data-replica-problem" not in html and "restarts in a loop" not in html


def test_a_gone_container_is_shown(app, client, db):
    g = build_org()
    r = g.replica
    r.status, r.health_status, r.container_state = (ReplicaStatus.FAILED,
                                                    HealthStatus.UNHEALTHY, "gone")
    r.config = {"health_problem": "its container is gone (removed outside Keystone?)"}
    db.session.commit()
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "its container is gone" in html and 'data-replica-problem="gone"' in html


def test_the_worker_enqueues_the_health_check_once_per_interval(app):
    import redis
    from rq import Queue

    from app.health import schedule_key
    from app.jobs.worker import schedule_health_check
    conn = redis.Redis.from_url(app.config["REDIS_URL"])
    conn.delete(schedule_key(app.config))
    queue = Queue(f"health-test-{id(app)}", connection=conn)
    try:
        assert schedule_health_check(app, conn, queue) is True
        assert schedule_health_check(app, conn, queue) is False  # a second worker, same minute
        jobs = queue.get_jobs()
        assert [j.func_name for j in jobs] == ["app.jobs.check_health"]
        assert jobs[0].args == ()  # nothing in the job data
        assert conn.ttl(schedule_key(app.config)) > 0
    finally:
        queue.empty()
        conn.delete(schedule_key(app.config))
