"""Services pages and the environment's attachment and variable components (issue 9, SPEC 9-13).

The back end runs for real: rows are created by app.attachments / app.drivers, operations
are enqueued to the embedded Redis, and the tests assert on the operation rows. Only the
registry's HTTP answer is replaced (check_for_update), never Keystone's own logic.
"""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from app.models import (EnvironmentAttachment, EnvironmentVariable, Operation, Server, Service,
                        ServiceReplica, ServiceSlice)
from app.models.enums import (DeployPolicy, EnvironmentStatus, OperationKind, OperationStatus,
                              ReplicaStatus, ServerStatus,
                              ServiceCategory, ServiceStatus, SliceStatus, SliceType,
                              UpdateStatus, VariableSource)
from tests.factories import SECRET_SENTINELS, build_org
from tests.conftest import sign_in

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def login_as(client, graph):
    sign_in(client, graph.user)


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    graph.server.status = ServerStatus.ACTIVE  # provisioned: services can be placed on it
    db.session.commit()
    login_as(client, graph)
    return graph


@pytest.fixture()
def token(g, auth):
    return auth.csrf()


# With HX-Request, a form with errors answers 200 with the component (htmx 2 swaps only 2xx
# answers); without it, the whole page answers 400.
def post(client, url, token, data=None, htmx=False):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(url, data={"csrf_token": token, **(data or {})}, headers=headers)


def ops(db, kind=None):
    # build_org's own operation (an environment deploy) is not counted.
    stmt = sa.select(Operation).where(Operation.kind != OperationKind.ENVIRONMENT_DEPLOY) \
        .order_by(Operation.id)
    if kind:
        stmt = stmt.where(Operation.kind == kind)
    return db.session.execute(stmt).scalars().all()


def make_service(db, g, type_, name, server=None, running=False, digest=None):
    cat = {"postgres": ServiceCategory.DATABASE, "valkey": ServiceCategory.CACHE,
           "caddy": ServiceCategory.GATEWAY}[type_]
    svc = Service(organisation=g.org, server=server or g.server, name=name, category=cat,
                  type=type_, driver_name=type_, deploy_policy=DeployPolicy.DEPENDENCY_ONLY,
                  version_track={"postgres": "18", "valkey": "8", "caddy": "2"}[type_],
                  current_image_digest=digest)
    db.session.add(svc)
    if running:
        svc.status = ServiceStatus.RUNNING
        db.session.add(ServiceReplica(service=svc, server=server or g.server,
                                      container_name=f"ks-{name}", status=ReplicaStatus.RUNNING,
                                      image_digest=digest))
    db.session.commit()
    return svc


# --------------------------------------------------------------------------- services list / new

def test_services_index_and_new_form(client, g):
    html = client.get("/services/").get_data(as_text=True)
    assert "postgres" in html and "New service" in html
    html = client.get("/services/new").get_data(as_text=True)
    assert "Postgres 18" in html and "Valkey 8" in html and "Caddy 2 gateway" in html
    assert "<details class=\"advanced\"" in html and "Image override" in html
    assert 'for="server_id"' in html


def test_create_postgres_starts_a_service_deploy_and_redirects_to_its_log(client, db, g, token):
    resp = post(client, "/services/new", token, {"type": "postgres", "name": "main-db",
                                                 "server_id": str(g.server.id)})
    assert resp.status_code == 302
    svc = db.session.execute(sa.select(Service).where(Service.name == "main-db")).scalar_one()
    assert svc.type == "postgres" and svc.server_id == g.server.id and svc.version_track == "18"
    op = ops(db, OperationKind.SERVICE_DEPLOY)[-1]
    assert op.target_type == "service" and op.target_id == svc.id
    assert op.status.value in ("pending", "queued") and op.rq_job_id
    assert resp.headers["Location"].endswith(f"/operations/{op.id}")


def test_create_service_with_image_override_and_htmx_redirect(client, db, g, token):
    resp = post(client, "/services/new", token, {
        "type": "valkey", "name": "cache", "server_id": str(g.server.id),
        "image": "registry.example.com:5000/mirror/valkey:8"}, htmx=True)
    assert resp.status_code == 204 and resp.headers["HX-Redirect"].startswith("/operations/")
    svc = db.session.execute(sa.select(Service).where(Service.name == "cache")).scalar_one()
    assert svc.config["image"] == "registry.example.com:5000/mirror/valkey:8"


@pytest.mark.parametrize("data, message", [
    ({"name": "Bad Name"}, "lower-case letters"),
    ({"image": "postgres:18 ; rm -rf /"}, "must be a reference"),
    ({"image": "postgres:17"}, "not on version track 18"),
    ({"image": "mysql:18"}, "is not a postgres image"),
    ({"server_id": "999999"}, "Not a valid choice"),
    ({"name": "postgres"}, "exists already"),
])
def test_create_service_bad_input_is_shown_inline(client, db, g, token, data, message):
    form = {"type": "postgres", "name": "db2", "server_id": str(g.server.id), **data}
    resp = post(client, "/services/new", token, form)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)
    assert not ops(db, OperationKind.SERVICE_DEPLOY)


def test_second_gateway_on_a_server_is_refused_with_the_back_ends_message(client, db, g, token):
    make_service(db, g, "caddy", "gateway")
    resp = post(client, "/services/new", token, {"type": "caddy", "name": "gateway-2",
                                                 "server_id": str(g.server.id)})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "already has a gateway" in html and "exactly one per server" in html
    assert db.session.execute(sa.select(sa.func.count(Service.id)).where(
        Service.type == "caddy")).scalar_one() == 1


def test_server_of_another_organisation_cannot_be_chosen(client, db, g, token):
    other = build_org(email="x@example.com", organisation="Other")
    resp = post(client, "/services/new", token, {"type": "postgres", "name": "db2",
                                                 "server_id": str(other.server.id)})
    assert resp.status_code == 400
    assert not ops(db)


# --------------------------------------------------------------------------- service page

def test_service_page_shows_replicas_digests_update_badge_and_slices(client, db, g):
    pg = g.postgres
    pg.current_image_digest, pg.available_image_digest = DIGEST_A, DIGEST_B
    pg.update_status = UpdateStatus.AVAILABLE
    db.session.add(ServiceReplica(service=pg, server=g.server, container_name="ks-postgres-9",
                                  status=ReplicaStatus.RUNNING, image_digest=DIGEST_A))
    db.session.commit()
    html = client.get(f"/services/{pg.id}").get_data(as_text=True)
    assert "ks-postgres-9" in html and "update available" in html
    assert "shop_production" in html and "Check for updates" in html
    assert "Update / redeploy" in html and "stops the container" in html  # the SPEC 11 warning
    assert 'name="confirm_downtime"' in html
    assert 'id="backups"' in html            # the Backups section of a Postgres service (17.3)
    assert SECRET_SENTINELS["slice_password"] not in html
    assert SECRET_SENTINELS["service_secret"] not in html


def test_laravel_service_page_redirects_to_its_environment(client, g):
    resp = client.get(f"/services/{g.web.id}")
    assert resp.status_code == 302 and f"/environments/{g.environment.id}" in resp.headers["Location"]


def test_check_for_updates_records_the_available_digest(client, db, g, token, monkeypatch):
    """The view starts an image_check operation (ids only); the registry is asked in the
    worker (in-process here), and the component shows the outcome."""
    from app.jobs import run_operation
    from tests.opsupport import started_operation
    pg = g.postgres
    pg.current_image_digest = DIGEST_A
    db.session.commit()
    seen = []

    def registry(ref, creds=None, **kw):  # the registry's HTTP answer, nothing else
        seen.append(str(ref))
        return DIGEST_B
    monkeypatch.setattr("app.services_ops.updates.resolve_digest", registry)
    resp = post(client, f"/services/{pg.id}/check-updates", token, htmx=True)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    op = started_operation(OperationKind.IMAGE_CHECK, "service", pg.id)
    assert 'id="service-image"' in html and f'hx-get="/services/{pg.id}/image"' in html
    assert f"/operations/{op.id}" in html and seen == []      # nothing asked in the request
    assert run_operation(op.id) == "succeeded"
    html = client.get(f"/services/{pg.id}/image").get_data(as_text=True)
    assert "update available" in html and "A newer image is available" in html
    assert "hx-trigger" not in html
    assert seen == ["postgres:18"]
    db.session.refresh(pg)
    assert pg.available_image_digest == DIGEST_B and pg.update_status == UpdateStatus.AVAILABLE
    assert ops(db) == [op]  # checking never deploys


def test_check_for_updates_error_is_shown(client, db, g, token, monkeypatch):
    from app.registries.images import ImageError
    from app.jobs import run_operation
    from tests.opsupport import started_operation

    def registry(ref, creds=None, **kw):
        raise ImageError("image postgres:18: registry docker.io unreachable: ConnectTimeout")
    monkeypatch.setattr("app.services_ops.updates.resolve_digest", registry)
    post(client, f"/services/{g.postgres.id}/check-updates", token, htmx=True)
    op = started_operation(OperationKind.IMAGE_CHECK, "service", g.postgres.id)
    assert run_operation(op.id) == "failed"
    html = client.get(f"/services/{g.postgres.id}/image").get_data(as_text=True)
    assert "Could not check for updates" in html and "unreachable" in html
    resp = post(client, f"/services/{g.postgres.id}/check-updates", token)
    assert resp.status_code == 302


def test_update_of_a_running_stateful_service_needs_the_confirmation(client, db, g, token):
    pg = make_service(db, g, "postgres", "pg2", running=True, digest=DIGEST_A)
    pg.available_image_digest = DIGEST_B
    db.session.commit()
    resp = post(client, f"/services/{pg.id}/deploy", token, {"use_available": "y"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "Tick this box" in html and "downtime-warning" in html
    assert not ops(db)
    resp = post(client, f"/services/{pg.id}/deploy", token,
                {"use_available": "y", "confirm_downtime": "y"})
    assert resp.status_code == 302
    op = ops(db, OperationKind.SERVICE_DEPLOY)[-1]
    assert op.params == {"confirm_downtime": True, "image_digest": DIGEST_B}
    assert resp.headers["Location"].endswith(f"/operations/{op.id}")


def test_first_deploy_needs_no_confirmation(client, db, g, token):
    vk = make_service(db, g, "valkey", "vk2")
    html = client.get(f"/services/{vk.id}").get_data(as_text=True)
    assert 'name="confirm_downtime"' not in html
    resp = post(client, f"/services/{vk.id}/deploy", token)
    assert resp.status_code == 302
    assert ops(db, OperationKind.SERVICE_DEPLOY)[-1].params == {"confirm_downtime": False}


def test_create_slice_by_hand(client, db, g, token):
    resp = post(client, f"/services/{g.postgres.id}/slices", token, {"name": "bad name;"})
    assert resp.status_code == 400
    assert "bad name;" not in re.sub(r'value="[^"]*"', "", resp.get_data(as_text=True)) or \
        "errors" in resp.get_data(as_text=True)
    assert 'class="errors"' in resp.get_data(as_text=True)
    resp = post(client, f"/services/{g.postgres.id}/slices", token, {"name": "reporting"})
    assert resp.status_code == 302
    sl = db.session.execute(sa.select(ServiceSlice).where(ServiceSlice.name == "reporting")
                            ).scalar_one()
    assert sl.type == SliceType.POSTGRES_DATABASE and sl.credentials["password"]
    op = ops(db, OperationKind.SLICE_PROVISION)[-1]
    assert op.target_type == "service_slice" and op.target_id == sl.id
    resp = post(client, f"/services/{g.postgres.id}/slices", token, {"name": "reporting"})
    assert resp.status_code == 400 and "already has a slice" in resp.get_data(as_text=True)


def test_delete_slice_needs_the_typed_name_and_keeps_data_by_default(client, db, g, token):
    url = f"/services/{g.postgres.id}/slices/{g.slice.id}/delete"
    html = client.get(url).get_data(as_text=True)
    assert "data is kept" in html and 'name="drop_data"' in html
    assert 'checked' not in html.split('name="drop_data"')[0].rsplit("<input", 1)[-1]
    resp = post(client, url, token, {"confirm": "shop_productio"})
    assert resp.status_code == 400 and "type the slice name" in resp.get_data(as_text=True)
    assert not ops(db)
    resp = post(client, url, token, {"confirm": "shop_production"})
    assert resp.status_code == 302
    op = ops(db, OperationKind.SLICE_CONFIGURE)[-1]
    assert op.params == {"action": "delete", "drop_data": False, "confirm": "shop_production"}
    assert "keeping its data" in op.summary


def test_delete_slice_with_drop_data(client, db, g, token):
    url = f"/services/{g.postgres.id}/slices/{g.slice.id}/delete"
    post(client, url, token, {"confirm": "shop_production", "drop_data": "y"})
    op = ops(db, OperationKind.SLICE_CONFIGURE)[-1]
    assert op.params["drop_data"] is True and "DROP" in op.summary


def test_slice_of_another_service_is_404(client, db, g, token):
    vk = make_service(db, g, "valkey", "vk2")
    assert client.get(f"/services/{vk.id}/slices/{g.slice.id}/delete").status_code == 404


# --------------------------------------------------------------------------- attachments

def _env_html(client, g):
    return client.get(f"/environments/{g.environment.id}").get_data(as_text=True)


def test_environment_page_has_the_attachment_forms(client, g):
    html = _env_html(client, g)
    for text in ("Attach Postgres", "Attach Valkey", "Add a domain", f"New Postgres 18 on web-1",
                 'hx-target="this"', "shop_production"):
        assert text in html, text


def test_attach_forms_offer_only_provisioned_servers_and_refuse_others(client, db, g, token):
    from app.models import Server
    fresh = Server(organisation=g.org, name="sandbox-2", public_ip="203.0.113.12")
    db.session.add(fresh)
    db.session.commit()
    html = _env_html(client, g)
    assert "New Postgres 18 on web-1" in html and "on sandbox-2" not in html
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": f"new:{fresh.id}"})
    assert resp.status_code == 400  # not one of the offered choices: refused, nothing started
    assert not ops(db, OperationKind.SLICE_PROVISION)


def test_sandbox_stand_ins_are_named_honestly(client, db, g):
    g.server.facts = {"sandbox": True, "images": {"postgres": "127.0.0.1:5000/keystone-sandbox/postgres:18"}}
    db.session.commit()
    html = _env_html(client, g)
    assert "New Postgres 18 on web-1 (sandbox stand-in: PostgreSQL 15)" in html


def test_attachments_poll_only_while_an_operation_works_on_a_slice(client, g):
    html = _env_html(client, g)  # g.slice is pending but no operation is running for it
    section = html.split('id="attachments"', 1)[1].split(">", 1)[0]
    assert "every 3s" not in section


def test_environment_page_detaches_through_the_slice_delete_page(client, db, g, token):
    """Each attachment row links to the typed-name confirmation; Cancel comes back here."""
    url = f"/services/{g.postgres.id}/slices/{g.slice.id}/delete"
    assert f'href="{url}"' in _env_html(client, g)
    html = client.get(url).get_data(as_text=True)
    assert f'href="/environments/{g.environment.id}">Cancel' in html
    resp = post(client, url, token, {"confirm": "shop_production"})
    assert resp.status_code == 302
    assert ops(db, OperationKind.SLICE_CONFIGURE)[-1].params["action"] == "delete"
    g.slice.status = SliceStatus.DELETING
    db.session.commit()
    assert f'href="{url}"' not in _env_html(client, g)  # nothing left to detach


def test_attach_existing_postgres_creates_slice_variables_and_operation(client, db, g, token):
    pg = make_service(db, g, "postgres", "pg2", running=True, digest=DIGEST_A)
    db.session.delete(g.attachment)  # so that pg2 becomes the primary database
    db.session.commit()
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": str(pg.id)}, htmx=True)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert html.lstrip().startswith("{#") or 'id="attachments"' in html
    assert "pg2 attached" in html and "hx-trigger=\"every 3s\"" in html  # polls while pending
    sl = db.session.execute(sa.select(ServiceSlice).where(ServiceSlice.service_id == pg.id)
                            ).scalar_one()
    op = ops(db, OperationKind.SLICE_PROVISION)[-1]
    assert op.target_id == sl.id and f"#{op.id}" in html
    keys = set(db.session.execute(sa.select(EnvironmentVariable.key).where(
        EnvironmentVariable.environment_id == g.environment.id,
        EnvironmentVariable.service_slice_id == sl.id)).scalars())
    assert {"DB_HOST", "DB_DATABASE", "DB_USERNAME", "DB_PASSWORD"} <= keys
    assert not ops(db, OperationKind.SERVICE_DEPLOY)  # already running: no redeploy
    # The status says what is happening, in words, and which operation does it.
    row = html.split("<code>" + sl.name + "</code>", 1)[1].split("</tr>", 1)[0]
    assert "creating the database…" in row
    assert f'operation #{op.id}</a>' in row and "pending" not in row
    sl.status = SliceStatus.READY
    op.status = OperationStatus.SUCCEEDED
    db.session.commit()
    page = client.get(f"/environments/{g.environment.id}/attachments").get_data(as_text=True)
    row = page.split("<code>" + sl.name + "</code>", 1)[1].split("</tr>", 1)[0]
    assert ">ready</span>" in row and "operation #" not in row and "creating" not in row


def test_attach_postgres_on_a_new_service_deploys_it_first(client, db, g, token):
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": f"new:{g.server.id}"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#attachments")
    svc = db.session.execute(sa.select(Service).where(Service.name == "postgres-web-1")
                             ).scalar_one()
    deploy, = ops(db, OperationKind.SERVICE_DEPLOY)
    provision, = ops(db, OperationKind.SLICE_PROVISION)
    assert deploy.target_id == svc.id
    # Same lock key: the slice is created after the container is up.
    assert provision.status.value == "queued" and f"service:{svc.id}" in provision.lock_keys


def test_attach_twice_is_refused_inline(client, db, g, token):
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": str(g.postgres.id)}, htmx=True)
    assert resp.status_code == 200
    assert "already attached" in resp.get_data(as_text=True)
    assert not ops(db)


def test_attach_service_of_another_organisation_is_refused(client, db, g, token):
    other = build_org(email="x@example.com", organisation="Other")
    for target in (str(other.postgres.id), f"new:{other.server.id}"):
        resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                    {"pg-target": target}, htmx=True)
        assert resp.status_code == 200
    assert not ops(db)
    assert db.session.execute(sa.select(sa.func.count(EnvironmentAttachment.id))).scalar_one() == 2


def test_attach_valkey_as_queue_then_recommendations_need_confirmation(client, db, g, token):
    vk = make_service(db, g, "valkey", "vk", running=True, digest=DIGEST_A)
    resp = post(client, f"/environments/{g.environment.id}/attachments/valkey", token,
                {"vk-target": str(vk.id), "vk-role": "queue"}, htmx=True)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "QUEUE_CONNECTION=redis" in html
    env_id = g.environment.id
    url = f"/environments/{env_id}/recommendations"
    resp = post(client, url, token, {"rec-keys": "QUEUE_CONNECTION"}, htmx=True)
    assert resp.status_code == 200 and "Confirm first" in resp.get_data(as_text=True)
    q = sa.select(EnvironmentVariable).where(EnvironmentVariable.key == "QUEUE_CONNECTION")
    assert db.session.execute(q).scalar_one_or_none() is None
    resp = post(client, url, token, {"rec-confirm": "y"}, htmx=True)
    assert resp.status_code == 200 and "Tick the settings" in resp.get_data(as_text=True)
    resp = post(client, url, token, {"rec-keys": "QUEUE_CONNECTION", "rec-confirm": "y"},
                htmx=True)
    assert resp.status_code == 200 and "Applied QUEUE_CONNECTION" in resp.get_data(as_text=True)
    row = db.session.execute(q).scalar_one()
    assert row.value == "redis" and row.source == VariableSource.MANAGED_ATTACHMENT


def test_queue_sync_warning_on_a_deployed_environment(client, db, g):
    g.environment.status = EnvironmentStatus.DEPLOYED
    db.session.add(EnvironmentVariable(environment=g.environment, key="QUEUE_CONNECTION",
                                       value="sync", source=VariableSource.USER))
    db.session.commit()
    assert "QUEUE_CONNECTION=sync runs every queued job" in _env_html(client, g)


def test_add_domain_validates_the_hostname_and_routes_on_the_gateway(client, db, g, token):
    gw = make_service(db, g, "caddy", "gateway", running=True, digest=DIGEST_A)
    url = f"/environments/{g.environment.id}/attachments/domain"
    resp = post(client, url, token, {"dom-hostname": "a.com {\nrespond x\n}",
                                     "dom-target": str(gw.id)}, htmx=True)
    assert resp.status_code == 200
    # Refused by the shared control-character check every form has (KeystoneForm).
    assert "a line break" in resp.get_data(as_text=True)
    assert not ops(db)
    resp = post(client, url, token, {"dom-hostname": "Shop.Example.com",
                                     "dom-target": str(gw.id)}, htmx=True)
    assert resp.status_code == 200
    route = db.session.execute(sa.select(ServiceSlice).where(
        ServiceSlice.type == SliceType.CADDY_ROUTE)).scalar_one()
    assert route.config["hostnames"] == ["shop.example.com"]
    assert route.config["hostname"] == "shop.example.com" and route.config["tls"] == "auto"
    assert ops(db, OperationKind.SLICE_PROVISION)[-1].target_id == route.id
    resp = post(client, url, token, {"dom-hostname": "shop.example.com",
                                     "dom-target": str(gw.id)}, htmx=True)
    assert resp.status_code == 200 and "already routed" in resp.get_data(as_text=True)


def test_domain_on_a_sandbox_server_gives_the_live_url(client, db, g, token):
    from app import onboarding
    g.server.facts = {"sandbox": True, "http_port": 18080}
    db.session.commit()
    html = _env_html(client, g)
    assert 'value="shop.localhost"' in html  # the sandbox default
    resp = post(client, f"/environments/{g.environment.id}/attachments/domain", token,
                {"dom-hostname": "shop.localhost", "dom-target": f"new:{g.server.id}"})
    assert resp.status_code == 302
    gw = db.session.execute(sa.select(Service).where(Service.type == "caddy")).scalar_one()
    assert ops(db, OperationKind.SERVICE_DEPLOY)[-1].target_id == gw.id
    route = db.session.execute(sa.select(ServiceSlice).where(
        ServiceSlice.type == SliceType.CADDY_ROUTE)).scalar_one()
    assert route.config["tls"] == "off"
    assert onboarding.live_url(g.org) == "http://shop.localhost:18080/"


# --------------------------------------------------------------------------- variables

@pytest.mark.parametrize("key, message", [
    ("A;id", "contains ';'"), ("A B", "contains a space"), ("1A", "starts with a digit"),
])
def test_bad_variable_keys_are_rejected_inline_without_echoing_the_value(client, db, g, token,
                                                                         key, message):
    value = "VALUE-SENTINEL-4242"
    resp = post(client, f"/environments/{g.environment.id}/variables", token,
                {"key": key, "value": value, "is_secret": "y"}, htmx=True)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert message in html.replace("&#39;", "'") and 'id="key-errors"' in html
    assert value not in html
    assert db.session.execute(sa.select(sa.func.count(EnvironmentVariable.id))).scalar_one() == 1


def test_value_error_does_not_echo_the_value(client, db, g, token):
    value = "bad\x00VALUE-SENTINEL-4343"
    resp = post(client, f"/environments/{g.environment.id}/variables", token,
                {"key": "GOOD", "value": value}, htmx=True)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "NUL byte" in html and "VALUE-SENTINEL-4343" not in html


def test_add_edit_delete_a_user_variable(client, db, g, token):
    env_url = f"/environments/{g.environment.id}/variables"
    value = "a \"quoted\" $(id) ${HOME} \\ value\nline2"
    resp = post(client, env_url, token, {"key": "MAIL_HOST", "value": value}, htmx=True)
    assert resp.status_code == 200 and "MAIL_HOST saved" in resp.get_data(as_text=True)
    var = db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.key == "MAIL_HOST")).scalar_one()
    assert var.value == value and not var.is_secret
    resp = post(client, f"{env_url}/{var.id}", token,
                {f"v{var.id}-value": "smtp.example.com", f"v{var.id}-is_secret": "y"}, htmx=True)
    assert resp.status_code == 200
    db.session.refresh(var)
    assert var.value == "smtp.example.com" and var.is_secret
    # A secret's edit form is empty; empty keeps the stored value.
    html = _env_html(client, g)
    assert "smtp.example.com" not in html
    post(client, f"{env_url}/{var.id}", token, {f"v{var.id}-is_secret": "y"}, htmx=True)
    db.session.refresh(var)
    assert var.value == "smtp.example.com"
    resp = post(client, f"{env_url}/{var.id}/delete", token, htmx=True)
    assert resp.status_code == 200 and "MAIL_HOST deleted" in resp.get_data(as_text=True)
    assert db.session.get(EnvironmentVariable, var.id) is None


def test_managed_variables_show_source_and_can_only_be_overridden_when_overridable(
        client, db, g, token):
    from app.attachments import regenerate_managed_variables
    regenerate_managed_variables(g.environment)
    db.session.commit()
    html = _env_html(client, g)
    assert "managed by postgres" in html and "slice shop_production" in html
    host = db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.key == "DB_HOST")).scalar_one()
    assert host.overridable
    assert f"override=DB_HOST" in html and "override=DB_PASSWORD" not in html
    assert SECRET_SENTINELS["slice_password"] not in html
    env_url = f"/environments/{g.environment.id}/variables"
    # A managed row cannot be edited or deleted as such.
    resp = post(client, f"{env_url}/{host.id}", token, {f"v{host.id}-value": "x"}, htmx=True)
    assert "managed by an attachment" in resp.get_data(as_text=True)
    resp = post(client, f"{env_url}/{host.id}/delete", token, htmx=True)
    assert "goes away when the attachment does" in resp.get_data(as_text=True)
    db.session.refresh(host)
    assert host.value != "x"
    # Overridable: a user variable of the same name wins.
    resp = post(client, env_url, token, {"key": "DB_HOST", "value": "10.0.0.9"}, htmx=True)
    assert resp.status_code == 200 and "overrides the managed attachment value" in \
        resp.get_data(as_text=True)
    # Not overridable: refused inline, nothing stored.
    resp = post(client, env_url, token, {"key": "DB_PASSWORD", "value": "mine-4545"}, htmx=True)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "cannot be overridden" in html and "mine-4545" not in html


def test_override_link_prefills_the_key(client, db, g):
    html = client.get(f"/environments/{g.environment.id}?override=DB_HOST").get_data(as_text=True)
    assert re.search(r'id="key"[^>]*value="DB_HOST"|value="DB_HOST"[^>]*id="key"', html)


def test_variable_errors_without_htmx_render_the_whole_page(client, db, g, token):
    resp = post(client, f"/environments/{g.environment.id}/variables", token,
                {"key": "A B", "value": "x"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "<h1>production" in html and "contains a space" in html


def test_variable_of_another_environment_is_404(client, db, g, token):
    other = build_org(email="x@example.com", organisation="Other")
    resp = post(client, f"/environments/{g.environment.id}/variables/{other.variable.id}",
                token, {"value": "x"})
    assert resp.status_code == 404
    resp = post(client, f"/environments/{other.environment.id}/variables", token,
                {"key": "X", "value": "y"})
    assert resp.status_code == 404


def test_actions_without_csrf_are_refused(client, g):
    for url in (f"/environments/{g.environment.id}/variables",
                f"/environments/{g.environment.id}/attachments/postgres",
                f"/services/{g.postgres.id}/deploy", "/services/new"):
        assert client.post(url, data={}).status_code == 400, url


# --------------------------------------------------------------------------- wizard

def _wizard_at_services(db, g):
    """Make every step before "services" complete for g's organisation."""
    from app.models.base import utcnow
    from app.models.enums import ServerStatus
    g.server.status = ServerStatus.ACTIVE
    g.application.deploy_key_installed_at = utcnow()
    db.session.delete(g.attachment)
    db.session.delete(g.slice)
    db.session.commit()


def test_wizard_services_step_attaches_right_there_and_returns_to_the_wizard(client, db, g,
                                                                             token):
    from app import onboarding
    _wizard_at_services(db, g)
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Attach Postgres" in html and "Add a domain" in html and "Skip this step" in html
    assert 'name="pg-next" type="hidden" value="onboarding"' in html or \
        'value="onboarding"' in html
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": str(g.postgres.id), "pg-next": "onboarding"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/onboarding/")
    assert ops(db, OperationKind.SLICE_PROVISION)
    # One attachment does not end the step: Valkey and a domain can still be added here.
    steps = {s.key: s for s in onboarding.steps_for(g.org)}
    assert not steps["services"].complete
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Continue to the first deploy" in html and "Attach Valkey" in html
    # A bad domain in the wizard (full reload) comes back as a message on the wizard.
    resp = post(client, f"/environments/{g.environment.id}/attachments/domain", token,
                {"dom-hostname": "a b", "dom-target": f"new:{g.server.id}",
                 "dom-next": "onboarding"})
    assert resp.status_code == 302
    assert "whitespace" in client.get("/onboarding/").get_data(as_text=True)
    post(client, "/onboarding/skip/services", token)
    steps = {s.key: s for s in onboarding.steps_for(g.org)}
    assert steps["services"].done


def test_wizard_step_is_done_with_database_cache_and_domain(db, g):
    from app import onboarding
    from app.attachments import attach_domain, attach_valkey
    _wizard_at_services(db, g)
    from app.attachments import attach_postgres
    attach_postgres(g.environment, g.postgres)
    attach_valkey(g.environment, make_service(db, g, "valkey", "vk"))
    attach_domain(g.environment, make_service(db, g, "caddy", "gw"), ["shop.example.com"])
    db.session.commit()
    steps = {s.key: s for s in onboarding.steps_for(g.org)}
    assert steps["services"].done


def test_next_parameter_only_accepts_known_targets(client, db, g, token):
    resp = post(client, f"/environments/{g.environment.id}/attachments/valkey", token,
                {"vk-target": f"new:{g.server.id}", "vk-next": "https://evil.example/"})
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/environments/{g.environment.id}#attachments")


def test_variable_rows_agree_with_effective_environment(db, g):
    from app.attachments import effective_environment, variable_rows
    env = g.environment
    rows = [("A", "sys", VariableSource.SYSTEM, True), ("A", "managed", VariableSource.MANAGED_ATTACHMENT, True),
            ("A", "user", VariableSource.USER, True),
            ("B", "locked", VariableSource.MANAGED_ATTACHMENT, False), ("B", "user", VariableSource.USER, True),
            ("C", "sys", VariableSource.SYSTEM, True)]
    for key, value, source, overridable in rows:
        db.session.add(EnvironmentVariable(environment=env, key=key, value=value, source=source,
                                           overridable=overridable))
    db.session.commit()
    shown = {r.key: r.variable.value for r in variable_rows(env)}
    assert shown == effective_environment(env)
    assert shown["A"] == "user" and shown["B"] == "locked" and shown["C"] == "sys"


def test_a_second_domain_on_the_same_gateway_is_attached_not_a_500(client, db, g, token):
    """www next to the apex, another name: one route slice and one attachment each."""
    gw = make_service(db, g, "caddy", "gateway", running=True, digest=DIGEST_A)
    url = f"/environments/{g.environment.id}/attachments/domain"
    for host in ("example.com", "shop.example.org"):
        resp = post(client, url, token, {"dom-hostname": host, "dom-target": str(gw.id)})
        assert resp.status_code == 302, resp.get_data(as_text=True)
    routes = db.session.execute(sa.select(ServiceSlice).where(
        ServiceSlice.type == SliceType.CADDY_ROUTE).order_by(ServiceSlice.id)).scalars().all()
    assert [r.config["hostnames"] for r in routes] == [["example.com"], ["shop.example.org"]]
    atts = db.session.execute(sa.select(EnvironmentAttachment).where(
        EnvironmentAttachment.service_id == gw.id)).scalars().all()
    assert sorted(a.service_slice_id for a in atts) == [r.id for r in routes]
    assert sorted(a.is_primary for a in atts) == [False, True]
    assert [o.target_id for o in ops(db, OperationKind.SLICE_PROVISION)] == [r.id for r in routes]
    html = _env_html(client, g)
    assert "example.com" in html and "shop.example.org" in html


def test_www_redirect_option_adds_the_www_name_to_the_route(client, db, g, token):
    gw = make_service(db, g, "caddy", "gateway", running=True, digest=DIGEST_A)
    html = _env_html(client, g)
    assert 'name="dom-www_redirect"' in html
    url = f"/environments/{g.environment.id}/attachments/domain"
    resp = post(client, url, token, {"dom-hostname": "www.example.com", "dom-target": str(gw.id),
                                     "dom-www_redirect": "y"}, htmx=True)
    assert "already starts with www." in resp.get_data(as_text=True)
    assert not ops(db)
    resp = post(client, url, token, {"dom-hostname": "Example.com", "dom-target": str(gw.id),
                                     "dom-www_redirect": "y"})
    assert resp.status_code == 302
    route = db.session.execute(sa.select(ServiceSlice).where(
        ServiceSlice.type == SliceType.CADDY_ROUTE)).scalar_one()
    assert route.config["hostnames"] == ["example.com"]
    assert route.config["redirect_from"] == ["www.example.com"]
    assert "www.example.com &rarr; redirect" in _env_html(client, g)
    # The www name is taken now: attaching it as its own domain is refused, nothing stored.
    resp = post(client, url, token, {"dom-hostname": "www.example.com",
                                     "dom-target": str(gw.id)}, htmx=True)
    assert "already routed" in resp.get_data(as_text=True)
    assert len(ops(db, OperationKind.SLICE_PROVISION)) == 1


def test_gateway_renders_every_domain_and_the_redirect(client, db, g, token):
    from app.drivers import get_driver
    gw = make_service(db, g, "caddy", "gateway", running=True, digest=DIGEST_A)
    url = f"/environments/{g.environment.id}/attachments/domain"
    post(client, url, token, {"dom-hostname": "example.com", "dom-target": str(gw.id),
                              "dom-www_redirect": "y", "dom-tls": "off"})
    post(client, url, token, {"dom-hostname": "api.example.com", "dom-target": str(gw.id),
                              "dom-tls": "off"})
    db.session.expire_all()
    text = get_driver(gw).render_gateway_config(db.session.get(Service, gw.id))
    assert "\nhttp://example.com {\n" in text and "\nhttp://api.example.com {\n" in text
    assert "\nhttp://www.example.com {\n\tredir http://example.com{uri} permanent\n}" in text


def test_attach_recommended_services_attaches_database_cache_and_domain_in_one_action(
        client, db, g, token):
    """One click instead of three (issue 14): Postgres, Valkey as cache and, on a sandbox
    server, NAME.localhost, each as its own form would attach it."""
    from app import onboarding
    from app.models.enums import AttachmentRole
    _wizard_at_services(db, g)
    g.server.facts = {**(g.server.facts or {}), "sandbox": True, "http_port": 8081}
    db.session.commit()
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Attach recommended services" in html
    assert f"the domain {g.application.name}.localhost" in html
    resp = post(client, f"/environments/{g.environment.id}/attachments/recommended", token,
                {"next": "onboarding"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/onboarding/")
    db.session.expire_all()
    roles = {a.role for a in g.environment.attachments}
    assert roles == {AttachmentRole.DATABASE, AttachmentRole.CACHE, AttachmentRole.GATEWAY}
    assert len(ops(db, OperationKind.SLICE_PROVISION)) == 3
    route = next(a.service_slice for a in g.environment.attachments
                 if a.role == AttachmentRole.GATEWAY)
    assert route.config["hostname"] == f"{g.application.name}.localhost"
    assert route.config["public_port"] == 8081
    assert {s.key: s for s in onboarding.steps_for(g.org)}["services"].done
    # Everything recommended is attached: the button is gone; a second post says so.
    page = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "Attach recommended services" not in page
    resp = post(client, f"/environments/{g.environment.id}/attachments/recommended", token,
                htmx=True)
    assert resp.status_code == 200 and "Nothing to attach" in resp.get_data(as_text=True)


def test_attach_recommended_needs_csrf_and_the_organisations_environment(client, db, g, token):
    assert client.post(f"/environments/{g.environment.id}/attachments/recommended",
                       data={}).status_code == 400
    db.session.expire_all()
    assert len(g.environment.attachments) == 1  # build_org's own attachment, nothing new
    other = build_org(email="x@example.com", organisation="Other")
    resp = post(client, f"/environments/{other.environment.id}/attachments/recommended", token)
    assert resp.status_code == 404


def test_the_deploy_step_waits_for_attachments_to_be_ready_and_says_so(client, db, g):
    _wizard_at_services(db, g)
    from app.attachments import attach_postgres
    attachment, slice_ = attach_postgres(g.environment, g.postgres)
    db.session.commit()
    g.org.onboarding_state = {"skipped": ["services"]}
    db.session.commit()
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "First deploy" in html and "Waiting for" in html and slice_.name in html
    assert "Deploy production" not in html
    slice_.status = SliceStatus.READY
    db.session.commit()
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Deploy production" in html and "Waiting for" not in html


# --------------------------------------------------------------------------- credential rotation

def test_rotate_credentials_starts_a_credential_rotation_operation(client, db, g, token):
    """SPEC 3: a password rotation is a ``credential_rotation``, not a slice_configure; the
    operations list filters it by that kind."""
    g.slice.status = SliceStatus.READY
    db.session.commit()
    html = client.get(f"/services/{g.postgres.id}").get_data(as_text=True)
    url = f"/services/{g.postgres.id}/slices/{g.slice.id}/rotate"
    assert f'action="{url}"' in html and "Rotate credentials" in html
    resp = post(client, url, token)
    assert resp.status_code == 302
    op = ops(db, OperationKind.CREDENTIAL_ROTATION)[-1]
    assert (op.target_type, op.target_id) == ("service_slice", g.slice.id)
    assert op.lock_keys == [f"service:{g.postgres.id}"]
    assert resp.headers["Location"].endswith(f"/operations/{op.id}")
    assert not ops(db, OperationKind.SLICE_CONFIGURE)
    listed = client.get("/operations?kind=credential_rotation").get_data(as_text=True)
    assert f"/operations/{op.id}" in listed and "credential rotation" in listed
    other = client.get("/operations?kind=slice_configure").get_data(as_text=True)
    assert f"/operations/{op.id}\"" not in other


def test_rotate_needs_a_ready_slice_with_credentials(client, db, g, token):
    g.slice.status = SliceStatus.PENDING
    db.session.commit()
    html = client.get(f"/services/{g.postgres.id}").get_data(as_text=True)
    assert "Rotate credentials" not in html
    resp = post(client, f"/services/{g.postgres.id}/slices/{g.slice.id}/rotate", token)
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/services/{g.postgres.id}")
    assert not ops(db, OperationKind.CREDENTIAL_ROTATION)
    assert "only a ready slice" in client.get(f"/services/{g.postgres.id}").get_data(as_text=True)


def test_rotate_without_csrf_is_refused(client, db, g):
    resp = client.post(f"/services/{g.postgres.id}/slices/{g.slice.id}/rotate")
    assert resp.status_code == 400
    assert not ops(db, OperationKind.CREDENTIAL_ROTATION)


# --------------------------------------------------------------------------- existing slices

def _hand_made_slice(db, service, name, slice_type=SliceType.POSTGRES_DATABASE,
                     status=SliceStatus.READY):
    from app.drivers import get_driver
    config, credentials = get_driver(service).new_slice_config(name)
    sl = ServiceSlice(service=service, name=name, type=slice_type, status=status,
                      config=config, credentials=credentials)
    db.session.add(sl)
    db.session.commit()
    return sl


def test_attach_an_existing_database_slice_creates_nothing(client, db, g, token):
    """SPEC 12 (advanced): a slice made by hand on the service page is attached as it is:
    no new slice, no operation, the DB_* variables point at it."""
    pg = make_service(db, g, "postgres", "pg2", running=True, digest=DIGEST_A)
    reporting = _hand_made_slice(db, pg, "reporting")
    _hand_made_slice(db, pg, "half_made", status=SliceStatus.PENDING)
    db.session.delete(g.attachment)  # the environment's own database is released
    db.session.commit()
    html = _env_html(client, g)
    assert "Advanced: an existing database" in html
    assert f'<option value="{reporting.id}">reporting on pg2</option>' in html
    assert "half_made" not in html  # only ready slices
    slices_before = db.session.execute(sa.select(sa.func.count(ServiceSlice.id))).scalar()
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": str(pg.id), "pg-existing_slice": str(reporting.id)})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert db.session.execute(sa.select(sa.func.count(ServiceSlice.id))).scalar() == slices_before
    assert not ops(db)  # ready already: nothing to run
    db.session.expire_all()
    att = db.session.execute(sa.select(EnvironmentAttachment).where(
        EnvironmentAttachment.service_slice_id == reporting.id)).scalar_one()
    assert att.environment_id == g.environment.id and att.role.value == "database"
    assert db.session.get(ServiceSlice, reporting.id).environment_id == g.environment.id
    values = {v.key: v.value for v in db.session.execute(sa.select(EnvironmentVariable).where(
        EnvironmentVariable.environment_id == g.environment.id,
        EnvironmentVariable.service_slice_id == reporting.id)).scalars()}
    assert values["DB_DATABASE"] == "reporting"
    assert values["DB_PASSWORD"] == reporting.credentials["password"]
    # now it is used: no longer offered, and posting it again is refused on its field
    assert "reporting on pg2</option>" not in _env_html(client, g)
    resp = post(client, f"/environments/{g.environment.id}/attachments/postgres", token,
                {"pg-target": str(pg.id), "pg-existing_slice": str(reporting.id)})
    assert resp.status_code == 400 and "Not a valid choice" in resp.get_data(as_text=True)


def test_an_existing_valkey_slice_in_the_chosen_role(client, db, g, token):
    vk = make_service(db, g, "valkey", "vk2", running=True, digest=DIGEST_A)
    jobs = _hand_made_slice(db, vk, "jobs", SliceType.VALKEY_NAMESPACE)
    resp = post(client, f"/environments/{g.environment.id}/attachments/valkey", token,
                {"vk-target": str(vk.id), "vk-role": "queue", "vk-existing_slice": str(jobs.id)})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert not ops(db)
    att = db.session.execute(sa.select(EnvironmentAttachment).where(
        EnvironmentAttachment.service_slice_id == jobs.id)).scalar_one()
    assert att.role.value == "queue"


def test_a_slice_used_by_another_environment_or_org_is_not_offered(client, db, g, token):
    from app.attachments import AttachmentError, attach_existing_slice, attachable_slices
    other = build_org(email="o@example.com", organisation="Other")
    theirs = _hand_made_slice(db, other.postgres, "theirs")
    used = g.slice  # attached to g.environment
    used.status = SliceStatus.READY
    db.session.commit()
    offered = attachable_slices(g.org.id, "postgres", g.environment)
    assert theirs not in offered and used not in offered
    with pytest.raises(AttachmentError, match="different organisations"):
        attach_existing_slice(g.environment, theirs)
    with pytest.raises(AttachmentError, match="no environment uses"):
        attach_existing_slice(g.environment, used)
