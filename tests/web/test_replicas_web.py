"""Replicas per server (a service_scale) and resource limits on the environment page
(issue 20.2, issue 21.7): the forms' allowlists, the permissions, and what they start."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.accounts import new_user
from app.models import Membership, Operation, Service
from app.models.enums import MembershipRole, OperationKind, OperationStatus, ReplicaStatus
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    graph.operation.status = OperationStatus.SUCCEEDED
    graph.replica.status = ReplicaStatus.RUNNING
    graph.replica.config = {"slot": "blue", "index": 0}
    db.session.commit()
    sign_in(client, graph.user)
    return graph


def _scale_url(g):
    return f"/environments/{g.environment.id}/services/{g.web.id}/replicas"


def _resources_url(g):
    return f"/environments/{g.environment.id}/services/{g.web.id}/resources"


def _scales(db, service_id):
    return db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.SERVICE_SCALE,
        Operation.target_id == service_id)).scalars().all()


def test_the_environment_page_has_a_replicas_form_and_a_resources_link(client, g):
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert f'action="{_scale_url(g)}"' in html and 'name="replicas"' in html
    assert f'href="{_resources_url(g)}"' in html


def test_scaling_a_running_service_starts_one_scale_under_the_environment_lock(client, db, g,
                                                                               auth):
    resp = client.post(_scale_url(g), data={"csrf_token": auth.csrf(), "replicas": "3"})
    assert resp.status_code == 302
    ops = _scales(db, g.web.id)
    assert len(ops) == 1
    op = ops[0]
    assert op.lock_keys == [f"environment:{g.environment.id}"]
    assert op.params == {"replicas": 3} and op.target_type == "service"
    assert resp.headers["Location"].endswith(f"/operations/{op.id}")
    assert db.session.get(Service, g.web.id).desired_replicas == 3


def test_a_service_with_nothing_running_keeps_the_count_for_its_next_deploy(client, db, g, auth):
    g.replica.status = ReplicaStatus.REMOVED
    db.session.commit()
    resp = client.post(_scale_url(g), data={"csrf_token": auth.csrf(), "replicas": "2"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(
        f"/environments/{g.environment.id}")
    assert _scales(db, g.web.id) == []
    assert db.session.get(Service, g.web.id).desired_replicas == 2


@pytest.mark.parametrize("value", ["0", "9", "12", "-1", "2.5", " 3x", "1;reboot", "",
                                   "٣", "0x2", "2\n3"])
def test_replicas_outside_the_allowlist_are_refused_and_nothing_starts(client, db, g, auth,
                                                                       value):
    resp = client.post(_scale_url(g), data={"csrf_token": auth.csrf(), "replicas": value},
                       follow_redirects=True)
    assert resp.status_code == 200
    assert "web.replicas:" in resp.get_data(as_text=True)
    assert _scales(db, g.web.id) == []
    assert db.session.get(Service, g.web.id).desired_replicas == 1


def test_a_websocket_service_keeps_one_replica(client, db, g, auth):
    g.web.process_roles = ["websocket"]
    db.session.commit()
    resp = client.post(_scale_url(g), data={"csrf_token": auth.csrf(), "replicas": "2"},
                       follow_redirects=True)
    assert "runs one replica per server" in resp.get_data(as_text=True)
    assert _scales(db, g.web.id) == []


def _member(app, db, g, role):
    user = new_user(email=f"{role.value}@example.com", password="correct horse battery")
    db.session.add(Membership(organisation_id=g.org.id, user=user, role=role))
    db.session.commit()
    other = app.test_client()
    sign_in(other, user)
    token = csrf_token_from(other.get(f"/environments/{g.environment.id}").get_data(as_text=True))
    return other, token


def test_a_viewer_can_neither_scale_nor_set_limits(app, db, g):
    viewer, token = _member(app, db, g, MembershipRole.VIEWER)
    html = viewer.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert 'name="replicas"' not in html
    assert viewer.post(_scale_url(g), data={"csrf_token": token, "replicas": "2"}) \
        .status_code == 403
    assert viewer.get(_resources_url(g)).status_code == 403
    assert viewer.post(_resources_url(g), data={"csrf_token": token, "cpus": "1"}) \
        .status_code == 403
    assert _scales(db, g.web.id) == []


def test_a_deployer_scales_but_cannot_set_limits(app, db, g):
    deployer, token = _member(app, db, g, MembershipRole.DEPLOYER)
    assert deployer.post(_scale_url(g), data={"csrf_token": token, "replicas": "2"}) \
        .status_code == 302
    assert len(_scales(db, g.web.id)) == 1
    assert deployer.post(_resources_url(g), data={"csrf_token": token, "cpus": "1"}) \
        .status_code == 403


def test_limits_are_saved_on_the_service_and_shown_against_the_server_capacity(client, db, g,
                                                                               auth):
    g.server.facts = {"capacity": {"cores": 2, "mem_total_mb": 2048}}
    g.web.desired_replicas = 3
    db.session.commit()
    resp = client.post(_resources_url(g), data={"csrf_token": auth.csrf(), "cpus": "0.75",
                                                "mem_limit": "1g"})
    assert resp.status_code == 302
    web = db.session.get(Service, g.web.id)
    assert (web.default_cpu_limit, web.default_memory_limit_mb) == (0.75, 1024)
    page = client.get(_resources_url(g)).get_data(as_text=True)
    assert "2 cores, 2048 MiB" in page
    # 3 replicas x 0.75 = 2.25 CPUs on 2 cores; 3 x 1024 MiB on 2048: both over-committed.
    assert "2.25 CPUs" in page and "3072 MiB" in page
    assert page.count("data-overcommit") == 2
    assert "CPU limits add up to 2.25 of 2 cores" in page
    # Empty fields take the limits away again.
    client.post(_resources_url(g), data={"csrf_token": auth.csrf(), "cpus": "", "mem_limit": ""})
    db.session.expire_all()
    web = db.session.get(Service, g.web.id)
    assert (web.default_cpu_limit, web.default_memory_limit_mb) == (None, None)


@pytest.mark.parametrize("field,value,message", [
    ("cpus", "0", "more than 0"), ("cpus", "1e3", "a number of CPUs"),
    ("cpus", "0.555", "a number of CPUs"), ("cpus", "1;rm -rf /", "a number of CPUs"),
    ("cpus", "999", "at most 256"), ("mem_limit", "5", "from 6 MiB"),
    ("mem_limit", "512k", "MiB such as 512"), ("mem_limit", "$(id)", "MiB such as 512"),
    ("mem_limit", "1t", "MiB such as 512"), ("mem_limit", "0", "MiB such as 512"),
])
def test_limits_outside_the_allowlist_are_refused_on_their_field(client, db, g, auth, field,
                                                                 value, message):
    data = {"csrf_token": auth.csrf(), "cpus": "", "mem_limit": "", field: value}
    resp = client.post(_resources_url(g), data=data)
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert f"web.{field}: " in html and message in html
    web = db.session.get(Service, g.web.id)
    assert (web.default_cpu_limit, web.default_memory_limit_mb) == (None, None)
