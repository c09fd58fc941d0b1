"""The periodic health check (issue 13, defect 9) on a real sandbox server.

After a deploy, one pass of the check (the function the worker's RQ job runs) sees every
replica running with one SSH connection per server; a replica container killed behind
Keystone's back is marked failed after ONE pass and the environment page names it; removed
altogether it is marked gone.
"""
from __future__ import annotations

import pytest

from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hbed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "health",
                         server_count=1) as tb:
        yield tb


def web_replica(bed):
    from app.extensions import db
    from app.models import Service
    db.session.expire_all()
    web = db.session.get(Service, bed.web_id)
    return next(r for r in web.replicas if r.status.value not in ("removed", "stopped"))


def env_page(bed) -> str:
    from flask import current_app

    from app.extensions import db
    from app.models import User
    from tests.conftest import sign_in
    client = current_app.test_client()
    sign_in(client, db.session.get(User, bed.user_id))
    resp = client.get(f"/environments/{bed.env_id}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_a_killed_replica_is_reflected_after_one_check(hbed, sandbox):
    from app.jobs import check_health
    from app.sandbox.sample import push_new_commit
    push_new_commit(sandbox.git)
    hbed.deploy()

    # Docker's own HEALTHCHECK of the new replica (10 s interval, 30 s start period) may
    # still say "starting" right after the deploy on a loaded machine: check until it ran.
    from app.sandbox.testbed import wait_until
    wait_until(lambda: (check_health() and web_replica(hbed).health_status.value == "healthy"),
               timeout=180, interval=5)
    counts = check_health()
    # web, Postgres, Valkey and the gateway: all on one server, one SSH connection.
    assert counts["servers"] == 1 and counts["handshakes"] == 1, counts
    assert counts["replicas"] >= 4 and counts["problems"] == 0, counts
    r = web_replica(hbed)
    assert (r.status.value, r.health_status.value, r.container_state) == \
        ("running", "healthy", "running")
    assert r.restart_count == 0 and r.checked_at is not None
    assert "data-replica-problem" not in env_page(hbed)

    server = hbed.sandbox_servers[0]
    server.exec("docker", "kill", r.container_name)
    counts = check_health()
    assert counts["problems"] == 1, counts
    r = web_replica(hbed)
    assert (r.status.value, r.health_status.value, r.container_state) == \
        ("failed", "unhealthy", "exited")
    assert r.config["health_problem"] == "its container died (exit code 137)"
    html = env_page(hbed)
    assert f"{r.container_name} on deploy-1: its container died (exit code 137)" in html
    assert 'data-replica-problem="exited"' in html

    server.exec("docker", "rm", "-f", r.container_name)
    check_health()
    r = web_replica(hbed)
    assert (r.status.value, r.container_state) == ("failed", "gone")
    assert "its container is gone" in env_page(hbed)


def test_the_check_is_not_an_operation(hbed):
    from app.extensions import db
    from app.jobs import check_health
    from app.models import Operation
    before = db.session.query(Operation).count()
    check_health()
    assert db.session.query(Operation).count() == before


def test_attachment_variables_come_from_the_endpoint_whose_health_follows_the_service(hbed):
    """SPEC 14 (issue 21 item 3): the environment's DB_HOST/DB_PORT are the Postgres
    service's recorded Endpoint, and the periodic check keeps that endpoint's health in line
    with the container: stopped behind Keystone's back, unhealthy after one pass; started
    again, healthy again."""
    from app.attachments import effective_environment
    from app.extensions import db
    from app.jobs import check_health
    from app.models import Environment, Service
    from app.models.enums import EndpointScope
    from app.sandbox.testbed import wait_until

    def pg_endpoint():
        db.session.expire_all()
        pg = db.session.get(Service, hbed.service_ids[0])
        [ep] = [e for e in pg.endpoints if e.scope == EndpointScope.DOCKER_NETWORK]
        return pg, ep

    pg, ep = pg_endpoint()
    replica = next(r for r in pg.replicas if r.status.value == "running")
    assert ep.service_replica_id == replica.id
    values = effective_environment(db.session.get(Environment, hbed.env_id))
    assert (values["DB_HOST"], values["DB_PORT"]) == (ep.hostname, str(ep.port))
    # The address works: the environment's own user connects through it from the replica's
    # network (the sample's migrations ran against it at the deploy too).
    server = hbed.sandbox_servers[0]
    probe = server.exec("docker", "exec", "-e", f"PGPASSWORD={values['DB_PASSWORD']}",
                        replica.container_name, "psql", "-h", values["DB_HOST"], "-p",
                        values["DB_PORT"], "-U", values["DB_USERNAME"], "-d",
                        values["DB_DATABASE"], "-Atc", "select 1", check=False)
    assert probe.stdout.strip() == "1", probe.stderr

    wait_until(lambda: check_health() and pg_endpoint()[1].health_status.value == "healthy",
               timeout=120, interval=3)
    server.exec("docker", "stop", replica.container_name)
    counts = check_health()
    assert counts["endpoints"] >= 1, counts
    _, ep = pg_endpoint()
    assert ep.health_status.value == "unhealthy"
    server.exec("docker", "start", replica.container_name)
    wait_until(lambda: check_health() and pg_endpoint()[1].health_status.value == "healthy",
               timeout=180, interval=3)
    pg, _ = pg_endpoint()
    assert next(r for r in pg.replicas if r.id == replica.id).status.value == "running"
