"""Deploy, rollback, add-worker / websocket / embedded worker and scheduler views."""
import datetime as dt

import sqlalchemy as sa

from app.models import Operation, Server, Service
from app.models.enums import ArtifactStatus, DeployPolicy, OperationStatus
from tests.factories import build_org
from tests.conftest import sign_in


def login_as(client, graph):
    sign_in(client, graph.user)


def ready_org(db):
    g = build_org()
    g.operation.status = OperationStatus.SUCCEEDED  # the factory's deploy is over
    g.application.repository_known_hosts = "[git.example]:22 ssh-ed25519 AAAA"
    g.application.deploy_key_installed_at = dt.datetime(2026, 1, 1)
    db.session.commit()
    return g


def htmx(auth):
    return {"X-CSRFToken": auth.csrf(), "HX-Request": "true"}


def deploys(db, env_id):
    return db.session.execute(sa.select(Operation).where(
        Operation.target_type == "environment", Operation.target_id == env_id,
        Operation.kind == "environment_deploy").order_by(Operation.id)).scalars().all()


def test_environment_page_has_the_deploy_component_and_add_worker(app, client, db):
    g = ready_org(db)
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert 'id="deploy-button"' in html and "Deploy main" in html
    assert f"/environments/{g.environment.id}/workers" in html
    assert "Roll back" in html


def test_deploy_starts_one_operation_with_the_environment_lock(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/deploy", headers=htmx(auth))
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    ops = deploys(db, g.environment.id)
    op = ops[-1]
    assert op.lock_keys == [f"environment:{g.environment.id}"]
    assert op.status == OperationStatus.PENDING and op.params["force"] is False
    assert f"Deploy #{op.id} started" in html and 'hx-trigger="every 2s"' in html


def test_second_deploy_is_queued_behind_the_first_and_the_button_says_so(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    client.post(f"/environments/{g.environment.id}/deploy", headers=htmx(auth))
    first = deploys(db, g.environment.id)[-1]
    first.status = OperationStatus.RUNNING
    db.session.commit()
    html = client.post(f"/environments/{g.environment.id}/deploy",
                       headers=htmx(auth)).get_data(as_text=True)
    second = deploys(db, g.environment.id)[-1]
    assert second.status == OperationStatus.QUEUED
    assert "is queued" in html
    html = client.get(f"/environments/{g.environment.id}/deploy-button").get_data(as_text=True)
    assert f"Deploy #{first.id} running" in html
    # Refuse mode names the holder instead of queueing.
    html = client.post(f"/environments/{g.environment.id}/deploy", data={"if_busy": "refuse"},
                       headers=htmx(auth)).get_data(as_text=True)
    assert "Deploy refused" in html and f"#{first.id}" in html


def test_deploy_blocked_on_several_servers_without_registry(app, client, db, auth):
    g = ready_org(db)
    other = Server(organisation=g.org, name="web-2", public_ip="203.0.113.11",
                   private_ip="10.0.0.3")
    db.session.add(other)
    db.session.flush()
    g.web.config = {"server_ids": [g.server.id, other.id]}
    db.session.commit()
    login_as(client, g)
    before = len(deploys(db, g.environment.id))
    html = client.post(f"/environments/{g.environment.id}/deploy",
                       headers=htmx(auth)).get_data(as_text=True)
    assert "registry" in html.lower() and "blocked" in html.lower()
    assert len(deploys(db, g.environment.id)) == before


def test_rollback_page_warns_and_redeploys_the_chosen_build(app, client, db, auth):
    g = ready_org(db)
    g.artifact.status = ArtifactStatus.READY
    g.artifact.image_digest = "sha256:" + "c" * 64
    db.session.commit()
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}/rollback").get_data(as_text=True)
    assert "Migrations are not reversed" in html or "migrations are not reversed" in html.lower()
    assert g.artifact.commit_sha[:12] in html
    # Only the rollback: no unrelated "Deploy main" button nor the workers/scheduler section.
    assert "Deploy main" not in html and "Workers, websockets" not in html
    resp = client.post(f"/environments/{g.environment.id}/rollback/{g.artifact.id}",
                       headers=htmx(auth))
    assert "not reversed" in resp.get_data(as_text=True)
    op = deploys(db, g.environment.id)[-1]
    assert op.params["artifact_id"] == g.artifact.id and op.params["rollback"] is True


def test_rollback_refuses_an_unfinished_build(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    html = client.post(f"/environments/{g.environment.id}/rollback/{g.artifact.id}",
                       headers=htmx(auth)).get_data(as_text=True)
    assert "not usable" in html


def test_add_worker_creates_a_dedicated_worker_service(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/workers",
                       data={"csrf_token": auth.csrf()})
    assert resp.status_code == 302
    worker = db.session.execute(sa.select(Service).where(Service.name == "worker")).scalar_one()
    assert worker.process_roles == ["worker"]
    assert worker.deploy_policy == DeployPolicy.WITH_ENVIRONMENT
    assert worker.config["role"] == "worker" and worker.config["stop_grace_seconds"] >= 60
    assert worker.config["migration_mode"] == "disabled"
    client.post(f"/environments/{g.environment.id}/workers", data={"csrf_token": auth.csrf()})
    names = db.session.execute(sa.select(Service.name).where(
        Service.environment_id == g.environment.id)).scalars().all()
    assert "worker-2" in names
    resp = client.post(f"/environments/{g.environment.id}/websocket",
                       data={"csrf_token": auth.csrf()}, follow_redirects=True)
    ws = db.session.execute(sa.select(Service).where(Service.name == "websocket")).scalar_one()
    assert ws.process_roles == ["websocket"]
    assert "/app/* and /apps/*" in resp.get_data(as_text=True)  # says where Reverb is routed


def test_embedded_worker_is_a_not_for_production_option(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "Not for production" in html
    rev = g.web.desired_revision
    client.post(f"/environments/{g.environment.id}/services/{g.web.id}/embedded-worker",
                data={"csrf_token": auth.csrf(), "enabled": "1"})
    db.session.refresh(g.web)
    assert g.web.config["embedded_worker"] is True and g.web.desired_revision == rev + 1


def scheduler_changes(db, env_id):
    return db.session.execute(sa.select(Operation).where(
        Operation.target_type == "environment", Operation.target_id == env_id,
        Operation.kind == "config_change").order_by(Operation.id)).scalars().all()


def test_every_replica_scheduler_needs_confirmation(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/scheduler",
                       data={"mode": "every_replica"}, headers=htmx(auth))
    assert resp.status_code == 422 and "confirm" in resp.get_data(as_text=True)
    db.session.refresh(g.environment)
    assert g.environment.scheduler_mode.value == "single"
    assert scheduler_changes(db, g.environment.id) == []
    client.post(f"/environments/{g.environment.id}/scheduler",
                data={"mode": "every_replica", "confirm": "1"}, headers=htmx(auth))
    db.session.refresh(g.environment)
    assert g.environment.scheduler_mode.value == "every_replica"


def test_environment_page_offers_the_scheduler_mode_and_target(app, client, db, auth):
    from app.deploys.service import add_role_service
    g = ready_org(db)
    worker = add_role_service(g.environment, "worker")
    login_as(client, g)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    form = html[html.index('id="scheduler-form"'):]
    form = form[:form.index("</form>")]
    for mode in ("disabled", "single", "every_replica"):
        assert f'value="{mode}"' in form
    assert f'value="{g.web.id}"' in form and f'value="{worker.id}"' in form
    assert "onOneServer()" in form  # the every_replica warning


def test_scheduler_change_is_an_operation_holding_the_environment_lock(app, client, db, auth):
    from app.deploys.service import add_role_service
    g = ready_org(db)
    worker = add_role_service(g.environment, "worker")
    login_as(client, g)
    resp = client.post(f"/environments/{g.environment.id}/scheduler",
                       data={"csrf_token": auth.csrf(), "mode": "single",
                             "target_service_id": str(worker.id)})
    assert resp.status_code == 302
    env = g.environment
    db.session.refresh(env)
    assert env.scheduler_enabled and env.scheduler_mode.value == "single"
    assert env.scheduler_target_service_id == worker.id
    [op] = scheduler_changes(db, env.id)
    assert op.params == {"change": "scheduler"}  # applies what the environment says
    assert op.lock_keys == [f"environment:{env.id}"]
    assert op.status == OperationStatus.PENDING
    page = client.get(f"/environments/{env.id}").get_data(as_text=True)
    assert f"operation #{op.id}" in page
    client.post(f"/environments/{env.id}/scheduler",
                data={"csrf_token": auth.csrf(), "mode": "disabled"})
    db.session.refresh(env)
    assert env.scheduler_enabled is False and env.scheduler_target_service_id == worker.id
    assert len(scheduler_changes(db, env.id)) == 2


def test_scheduler_change_queues_behind_a_running_deploy(app, client, db, auth):
    g = ready_org(db)
    login_as(client, g)
    client.post(f"/environments/{g.environment.id}/deploy", headers=htmx(auth))
    client.post(f"/environments/{g.environment.id}/scheduler",
                data={"mode": "every_replica", "confirm": "1"}, headers=htmx(auth))
    [op] = scheduler_changes(db, g.environment.id)
    assert op.status == OperationStatus.QUEUED


def test_scheduler_form_refuses_bad_input_and_stores_nothing(app, client, db, auth):
    g = ready_org(db)
    other = build_org(email="o@example.com", organisation="Other")
    postgres = g.postgres
    login_as(client, g)
    env_id = g.environment.id
    for data in ({"mode": "sometimes"}, {"mode": "single; rm -rf /"},
                 {"mode": "single", "target_service_id": "1 OR 1=1"},
                 {"mode": "single", "target_service_id": str(postgres.id)},
                 {"mode": "single", "target_service_id": str(other.web.id)}):
        resp = client.post(f"/environments/{env_id}/scheduler",
                           data={"csrf_token": auth.csrf(), **data})
        assert resp.status_code == 422, data
        html = resp.get_data(as_text=True)
        assert "scheduler" in html.lower()
    db.session.refresh(g.environment)
    assert g.environment.scheduler_mode.value == "single" and g.environment.scheduler_enabled
    assert g.environment.scheduler_target_service_id != other.web.id
    assert scheduler_changes(db, env_id) == []


def test_first_deploy_places_a_new_web_service_on_the_active_server(app, client, db, auth):
    """The wizard's new environment has a web service on no server: the first deploy puts it
    on the organisation's active server instead of refusing ("Nothing to deploy")."""
    from app.applications import create_environment
    from app.blueprints.applications import environment_servers
    from app.models.enums import ServerStatus
    g = ready_org(db)
    g.server.status = ServerStatus.ACTIVE
    with db.session.no_autoflush:
        env = create_environment(g.application, "staging", "main")
    db.session.commit()
    assert environment_servers(env) == []
    login_as(client, g)
    resp = client.post(f"/environments/{env.id}/deploy", headers=htmx(auth))
    assert "Deploy #" in resp.get_data(as_text=True) and "started" in resp.get_data(as_text=True)
    db.session.refresh(env)
    assert [s.id for s in environment_servers(env)] == [g.server.id]
    assert len(deploys(db, env.id)) == 1


def test_deploy_on_sandbox_servers_builds_from_the_sandbox_php_base(app, client, db, auth):
    """Docker Hub is out of reach from the sandbox: unless a base image is chosen, a deploy on
    sandbox servers builds FROM the stand-in in the sandbox registry, logged in to it."""
    from app.models import Registry
    from app.models.enums import RegistryType
    g = ready_org(db)
    db.session.delete(g.registry)
    sandbox_registry = Registry(organisation=g.org, name="sandbox", type=RegistryType.GENERIC,
                                url="127.0.0.1:5055", username="u", password="p")
    db.session.add(sandbox_registry)
    g.server.facts = {"sandbox": True, "images": {"php-base": "127.0.0.1:5055/keystone-sandbox/php-base:8.3-fpm"}}
    g.environment.registry_id = None
    g.environment.build_config = {}
    db.session.commit()
    login_as(client, g)
    client.post(f"/environments/{g.environment.id}/deploy", headers=htmx(auth))
    db.session.refresh(g.environment)
    assert g.environment.build_config["base_image"] == "127.0.0.1:5055/keystone-sandbox/php-base:8.3-fpm"
    assert g.environment.registry_id == sandbox_registry.id
    assert len(deploys(db, g.environment.id)) == 2   # the factory's and this one
