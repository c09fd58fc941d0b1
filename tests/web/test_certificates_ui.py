"""The gateway's Certificates card (issue 22): stored rows only, a warning when renewal
fails close to expiry, "Check now" enqueues the job (no network in the view), and the
organisation's channels hear ``certificate.expiring`` once a day."""
from __future__ import annotations

import datetime as dt

import pytest

from app.models import GatewayCertificate, NotificationDelivery
from app.models.base import utcnow
from tests.web.test_services_ui import g, make_service, post, token  # noqa: F401


@pytest.fixture()
def gateway(db, g):  # noqa: F811
    svc = make_service(db, g, "caddy", "gateway", running=True)
    svc.config = {"acme_email": "ops@example.com"}
    db.session.commit()
    return svc


def _row(db, svc, host, days, error=None):
    now = utcnow()
    row = GatewayCertificate(service_id=svc.id, hostname=host, issuer="R11",
                             not_before=now - dt.timedelta(days=60),
                             not_after=now + dt.timedelta(days=days),
                             last_attempt_at=now if error else None, last_error=error,
                             checked_at=now)
    db.session.add(row)
    db.session.commit()
    return row


def test_card_shows_issuer_and_expiry_and_warns_only_when_renewal_fails(client, db, gateway):
    ok = _row(db, gateway, "shop.example.com", 60)
    _row(db, gateway, "late.example.com", 10)  # close to expiry, but no failure seen
    bad = _row(db, gateway, "broken.example.com", 5, error="could not get certificate: 403")
    page = client.get(f"/services/{gateway.id}").get_data(as_text=True)
    assert "Certificates" in page and "R11" in page and "ops@example.com" in page
    assert ok.not_after.strftime("%Y-%m-%d %H:%M") in page
    assert page.count("data-cert-warning") == 1
    warn_row = page.split('data-cert-host="broken.example.com"')[1].split("</tr>")[0]
    assert "renewal is failing" in warn_row and "403" in warn_row
    del bad


def test_check_now_enqueues_the_job_and_returns_the_card(client, db, gateway, token):  # noqa: F811
    from rq import Queue

    from app.operations import logstream
    from flask import current_app
    queue = Queue(current_app.config["RQ_QUEUE"], connection=logstream.redis_client())
    before = queue.count
    resp = post(client, f"/services/{gateway.id}/certificates", token, htmx=True)
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert 'id="certificates"' in body and "Checking the certificates" in body
    jobs = [j for j in queue.get_jobs() if j.func_name == "app.jobs.check_certificates"]
    assert queue.count == before + 1 and jobs[-1].args == (gateway.id,)


def test_check_now_refuses_other_services(client, db, g, token):  # noqa: F811
    pg = make_service(db, g, "postgres", "pg", running=True)
    assert post(client, f"/services/{pg.id}/certificates", token).status_code == 400


def test_expiring_with_failing_renewal_notifies_once(db, g, gateway):  # noqa: F811
    from app.certificates import alert_expiring, renewal_failing
    from app.notifications.channels import create_channel
    create_channel(g.org.id, "ops", "slack", ["certificate.expiring"],
                   url="https://hooks.slack.com/services/T000/B000/XXXX")
    db.session.commit()
    row = _row(db, gateway, "broken.example.com", 5, error="renewal failed")
    assert renewal_failing(row)
    assert alert_expiring(gateway, row) == 1
    assert alert_expiring(gateway, row) == 0  # once per day
    rows = db.session.query(NotificationDelivery).all()
    assert [r.event for r in rows] == ["certificate.expiring"]
    assert rows[0].payload["hostname"] == "broken.example.com"
    assert rows[0].payload["error"] == "renewal failed" and rows[0].payload["not_after"]


def test_acme_email_is_validated_saved_and_installed_by_an_operation(client, db, g, gateway,
                                                                      token):  # noqa: F811
    from app.drivers import get_driver
    from app.models import Operation, ServiceSlice
    from app.models.enums import OperationKind, SliceStatus, SliceType
    route = ServiceSlice(service_id=gateway.id, name="shop", type=SliceType.CADDY_ROUTE,
                         status=SliceStatus.READY, config={"hostnames": ["shop.example.com"],
                                                           "tls": "auto", "upstreams": []})
    other = make_service(db, g, "caddy", "gateway-2", running=True)
    db.session.add(route)
    db.session.commit()
    bad = post(client, f"/services/{gateway.id}/acme-email", token,
               {"email": "ops@example.com\n}"}, htmx=True)
    assert bad.status_code == 200 and "control characters" in bad.get_data(as_text=True)
    bad = post(client, f"/services/{gateway.id}/acme-email", token,
               {"email": "ops@example.com {"}, htmx=True)
    assert "not a valid address" in bad.get_data(as_text=True)
    db.session.refresh(gateway)
    assert gateway.config["acme_email"] == "ops@example.com"  # unchanged
    resp = post(client, f"/services/{gateway.id}/acme-email", token,
                {"email": "certs@example.com", "every_gateway": "y"}, htmx=True)
    assert "installing" in resp.get_data(as_text=True)
    db.session.refresh(gateway)
    db.session.refresh(other)
    assert gateway.config["acme_email"] == other.config["acme_email"] == "certs@example.com"
    op = db.session.query(Operation).filter_by(kind=OperationKind.SLICE_CONFIGURE).one()
    assert op.target_id == route.id and op.params["action"] == "update"  # other routes nothing
    assert "\temail certs@example.com\n" in get_driver(gateway).render_gateway_config(gateway)


def test_gateways_sharing_a_name_form_a_challenge_ring(db, g, gateway):  # noqa: F811
    """Two gateways route shop.example.com: each forwards challenges it did not start to
    the other's private address, and provisioning one reinstalls the other (slice_peers)."""
    from app.drivers import get_driver
    from app.models import Server, ServiceSlice
    from app.models.enums import ServerStatus, SliceStatus, SliceType
    g.server.private_ip = "10.0.0.11"
    other_server = Server(organisation=g.org, name="web-2", public_ip="203.0.113.11",
                          private_ip="10.0.0.12", status=ServerStatus.ACTIVE)
    db.session.add(other_server)
    db.session.commit()
    other = make_service(db, g, "caddy", "gateway-2", server=other_server, running=True)
    routes = []
    for svc in (gateway, other):
        routes.append(ServiceSlice(service_id=svc.id, name="shop", type=SliceType.CADDY_ROUTE,
                                   status=SliceStatus.READY,
                                   config={"hostnames": ["shop.example.com"], "tls": "auto",
                                           "upstreams": []}))
    lone = ServiceSlice(service_id=gateway.id, name="lone", type=SliceType.CADDY_ROUTE,
                        status=SliceStatus.READY, config={"hostnames": ["lone.example.com"],
                                                          "tls": "auto", "upstreams": []})
    db.session.add_all([*routes, lone])
    db.session.commit()
    driver = get_driver(gateway)
    first, second = (driver.render_gateway_config(s) for s in (gateway, other))
    assert "reverse_proxy @hop0 10.0.0.12:80" in first and "http://shop.example.com {" in first
    assert "reverse_proxy @hop0 10.0.0.11:80" in second
    assert "http://lone.example.com" not in first  # one gateway: Caddy's defaults
    assert [p.id for p in driver.slice_peers(gateway, routes[0])] == [other.id]
    assert driver.slice_peers(gateway, lone) == []
