"""Several domains per environment, routed by their own attach operation (issue 13, defect 8).

On a real sandbox server: the environment is deployed once with its first domain; then a
second domain (with the www-to-apex redirect) and a third are attached through the same code
as the form and routed by their slice_provision operation alone -- no deploy in between --
and answer through the real Caddy gateway; detaching one removes its route.
"""
from __future__ import annotations

import http.client
import json
import uuid

import pytest

from app.sandbox.testbed import wait_until
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dbed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "domains",
                         server_count=1) as tb:
        yield tb


def request(bed, host: str, path: str = "/"):
    conn = http.client.HTTPConnection("127.0.0.1", bed.http_port(0), timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Location"), resp.read()
    finally:
        conn.close()


def attach(bed, host: str, redirect_from=None):
    from app.attachments import attach_domain, start_slice_provision
    from app.extensions import db
    from app.models import Service
    gateway = db.session.get(Service, bed.gateway_ids[0])
    _, route = attach_domain(bed.env, gateway, [host], tls="off", redirect_from=redirect_from)
    db.session.commit()
    op = bed.run(start_slice_provision(route, enqueue=False).id)
    return route, op


def serves(bed, host: str, commit: str):
    def check():
        status, _, body = request(bed, host)
        return status == 200 and json.loads(body).get("commit") == commit
    return wait_until(check, timeout=20, interval=0.25)


def test_domains_attached_after_the_first_deploy_answer_at_once(dbed, sandbox):
    from app.attachments import request_slice_delete
    from app.extensions import db
    from app.models import Operation
    from app.sandbox.sample import push_new_commit
    head = push_new_commit(sandbox.git)
    dbed.deploy()
    assert serves(dbed, dbed.hostname, head)
    deploys_before = db.session.query(Operation).filter_by(kind="environment_deploy").count()

    apex = f"apex-{uuid.uuid4().hex[:6]}.keystone.test"
    route, op = attach(dbed, apex, redirect_from=[f"www.{apex}"])
    assert op.status.value == "succeeded"
    assert route.config["upstreams"], route.config  # the slots, listed by the attach itself
    assert serves(dbed, apex, head), request(dbed, apex)
    status, location, _ = request(dbed, f"www.{apex}", "/some/page?x=1")
    assert status == 301 and location == f"http://{apex}/some/page?x=1"

    other = f"other-{uuid.uuid4().hex[:6]}.keystone.test"
    route2, _ = attach(dbed, other)  # a third domain on the same gateway and environment
    assert serves(dbed, other, head)
    assert serves(dbed, dbed.hostname, head) and serves(dbed, apex, head)
    # No deploy ran for any of it.
    assert db.session.query(Operation).filter_by(kind="environment_deploy").count() == \
        deploys_before

    # Detaching removes the route (the catch-all answers 404), the others keep serving.
    dbed.run(request_slice_delete(route2, confirm=route2.name, enqueue=False).id)
    status, _, body = request(dbed, other)
    assert status == 404 and b"no route for this host" in body
    assert serves(dbed, apex, head)

    # A later deploy keeps every domain: the routes already list the slots.
    head2 = push_new_commit(sandbox.git)
    op = dbed.deploy()
    assert "slice_configure" not in [c.kind.value for c in op.children]
    assert serves(dbed, apex, head2) and serves(dbed, dbed.hostname, head2)
    status, location, _ = request(dbed, f"www.{apex}")
    assert status == 301 and location == f"http://{apex}/"
