import sqlalchemy as sa

from app.models import AuditEvent
from tests.factories import SECRET_SENTINELS, build_org
from tests.conftest import sign_in


def login_as(client, graph):
    sign_in(client, graph.user)


def test_environment_page_shows_services_attachments_and_masks_secrets(app, client, db):
    g = build_org()
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "production" in html and "web" in html and "postgres" in html
    assert "APP_KEY" in html
    assert SECRET_SENTINELS["env_value"] not in html
    assert "Reveal" in html
    assert "Advanced: deploy policies" in html


def test_reveal_returns_the_value_and_is_recorded(app, client, db, auth):
    g = build_org()
    login_as(client, g)
    token = auth.csrf()
    resp = client.post(f"/environments/{g.environment.id}/variables/{g.variable.id}/reveal",
                       headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert resp.status_code == 200
    assert SECRET_SENTINELS["env_value"] in resp.get_data(as_text=True)
    event = db.session.execute(sa.select(AuditEvent).where(
        AuditEvent.action == "variable.reveal")).scalar_one()
    assert event.action == "variable.reveal" and event.user_id == g.user.id
    assert SECRET_SENTINELS["env_value"] not in repr(event.detail)


def test_reveal_without_csrf_is_refused(app, client):
    g = build_org()
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/variables/{g.variable.id}/reveal")
    assert resp.status_code == 400


def test_environment_and_service_pages_list_only_replicas_that_exist(app, client, db):
    """A replica a failed deploy removed (failed) or a cutover stopped (removed) is gone from
    its server: the pages list only replicas whose container exists."""
    from app.models import ServiceReplica
    from app.models.enums import HealthStatus, ReplicaStatus
    g = build_org()
    login_as(client, g)
    web = next(s for s in g.environment.services if "web" in (s.process_roles or []))
    pg = g.environment.attachments[0].service
    rows = {web: ("ks-web-9-green-op9", "ks-web-9-blue-op3", "ks-web-9-green-op12"),
            pg: ("ks-pg-failed-op4", "ks-pg-removed-op2", "ks-pg-running-op5")}
    for svc, (failed, removed, running) in rows.items():
        for name, status in ((failed, ReplicaStatus.FAILED), (removed, ReplicaStatus.REMOVED),
                             (running, ReplicaStatus.RUNNING)):
            db.session.add(ServiceReplica(service=svc, server=g.server, container_name=name,
                                          status=status, health_status=HealthStatus.UNHEALTHY
                                          if status != ReplicaStatus.RUNNING
                                          else HealthStatus.HEALTHY))
    db.session.commit()
    for url, svc in ((f"/environments/{g.environment.id}", web), (f"/services/{pg.id}", pg)):
        html = client.get(url).get_data(as_text=True)
        failed, removed, running = rows[svc]
        assert running in html, url
        assert failed not in html and removed not in html, url


def test_multi_server_environment_says_shared_files_need_an_object_store(app, client, db):
    """Issue 13, defect 3: storage/ is one volume per server; say so before the first
    multi-server deploy (placement, not deployed replicas, decides)."""
    from app.models import Server
    g = build_org()
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "S3 disk" not in html                  # one server: nothing to say
    other = Server(organisation=g.org, name="web-2", public_ip="203.0.113.11",
                   private_ip="10.0.0.3")
    db.session.add(other)
    db.session.flush()
    g.web.config = {"server_ids": [g.server.id, other.id]}
    db.session.commit()
    assert [r.server_id for r in g.web.replicas] == [g.server.id]
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "runs on 2 servers" in html and "its own storage/" in html
    assert "object store" in html and "S3 disk" in html
