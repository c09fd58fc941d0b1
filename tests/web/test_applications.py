"""Applications and registries through the real views: creation defaults, the deploy key,
bad repository URLs and branches refused (and no command run), registries, build plans."""
import uuid

import pytest
import sqlalchemy as sa

from app.builds import check_build_plan
from app.extensions import db
from app.models import Application, Environment, Registry, Server, Service
from app.models.enums import (DeployPolicy, RepositoryType, SchedulerMode, ServiceCategory,
                              ServiceStatus)
from tests.conftest import csrf_token_from

GOOD_URL = "git@github.com:acme/shop.git"


def _create(client, **overrides):
    page = client.get("/applications/new").get_data(as_text=True)
    data = {"csrf_token": csrf_token_from(page), "name": "shop", "repository_url": GOOD_URL,
            "repository_type": "auto", "default_branch": "main"}
    data.update(overrides)
    return client.post("/applications/new", data=data)


def test_creating_an_application_makes_key_environment_and_web_service(client, auth):
    auth.signup()
    resp = _create(client)
    assert resp.status_code == 302
    application = db.session.execute(sa.select(Application)).scalar_one()
    assert application.repository_type == RepositoryType.GITHUB
    assert application.deploy_key_public.startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in application.deploy_key_private
    assert application.deploy_key_fingerprint.startswith("SHA256:")
    assert application.deploy_key_installed_at is None
    (env,) = application.environments
    assert (env.name, env.branch) == ("production", "main")
    assert env.scheduler_enabled and env.scheduler_mode == SchedulerMode.SINGLE
    (web,) = env.services
    assert (web.name, web.category, web.type, web.driver_name, web.deploy_policy,
            web.process_roles) == ("web", ServiceCategory.APPLICATION, "laravel", "laravel",
                                   DeployPolicy.WITH_ENVIRONMENT, ["web"])
    assert env.scheduler_target_service_id == web.id

    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert application.deploy_key_public in html
    assert "read-only" in html and "GitHub" in html and "Gitea" in html
    assert "Verify access" in html
    assert "PRIVATE KEY" not in html
    assert "production" in html


BAD_URLS = [
    "--upload-pack=touch {canary}",
    "ext::sh -c touch% {canary}",
    "ssh://-oProxyCommand=touch%20{canary}/x.git",
    "ssh://-oProxyCommand=touch {canary}/x.git",
    "file:///tmp/x.git",
    "git@github.com:acme/shop.git;touch {canary}",
    "$(touch {canary})",
    "git@github.com:acme/shop.git\ntouch {canary}",
    "x" * 10_000,
]
BAD_BRANCHES = ["--upload-pack=touch {canary}", "main;touch {canary}", "$(touch {canary})",
                "main\ntouch {canary}", "a" * 10_000]


@pytest.mark.parametrize("template", BAD_URLS, ids=lambda t: repr(t[:30]))
def test_bad_repository_urls_are_refused_by_the_form_and_nothing_runs(client, auth, tmp_path,
                                                                      template):
    auth.signup()
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    resp = _create(client, repository_url=template.format(canary=canary))
    assert resp.status_code == 400
    assert "errors" in resp.get_data(as_text=True)
    assert db.session.execute(sa.select(sa.func.count(Application.id))).scalar_one() == 0
    assert not canary.exists()


@pytest.mark.parametrize("template", BAD_BRANCHES, ids=lambda t: repr(t[:30]))
def test_bad_branches_are_refused_by_the_form_and_nothing_runs(client, auth, tmp_path, template):
    auth.signup()
    canary = tmp_path / f"canary-{uuid.uuid4().hex}"
    resp = _create(client, default_branch=template.format(canary=canary))
    assert resp.status_code == 400
    assert db.session.execute(sa.select(sa.func.count(Application.id))).scalar_one() == 0
    assert not canary.exists()


def test_bad_branch_in_build_settings_and_new_environment_is_refused(client, auth, tmp_path):
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    canary = tmp_path / "canary"
    url = f"/applications/{application.id}/environments/{env.id}/build"
    page = client.get(url).get_data(as_text=True)
    assert "FROM serversideup/php:8.3-frankenphp" in page
    token = csrf_token_from(page)
    resp = client.post(url, data={"csrf_token": token, "branch": f"main;touch {canary}",
                                  "strategy": "target_server", "registry_id": "",
                                  "php_version": "8.3", "js_tool": "none",
                                  "document_root": "public", "health_path": "/up"})
    assert resp.status_code == 400
    client.post(f"/applications/{application.id}/environments",
                data={"csrf_token": token, "name": "staging", "branch": f"$(touch {canary})"})
    db.session.expire_all()
    assert [e.name for e in application.environments] == ["production"]
    assert application.environments[0].branch == "main"
    assert not canary.exists()


def test_verify_access_to_an_unreachable_host_answers_a_clear_message(client, auth):
    """The view only starts a repository_verify operation; its result reaches the component."""
    from app.jobs import run_operation
    from app.models.enums import OperationKind, OperationStatus
    from tests.opsupport import started_operation
    auth.signup()
    _create(client, repository_url="ssh://git@127.0.0.1:1/sample.git")
    application = db.session.execute(sa.select(Application)).scalar_one()
    resp = client.post(f"/applications/{application.id}/verify",
                       headers={"HX-Request": "true", "X-CSRFToken": auth.csrf()})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'id="repository-access"' in html and "<html" not in html
    op = started_operation(OperationKind.REPOSITORY_VERIFY, "application", application.id)
    assert op.params == {} and op.status == OperationStatus.PENDING
    # While it runs, the component polls itself and links to the live log.
    assert f'hx-get="/applications/{application.id}/access"' in html
    assert f"/operations/{op.id}" in html
    assert "Could not read the SSH host key" not in html
    # The component's one .badge stays "not verified"/"verified" (the browser test reads it);
    # the running check's statuses are chips.
    assert html.count('class="badge') == 1 and 'class="chip status-pending"' in html
    # A second click joins the running verification instead of starting another.
    client.post(f"/applications/{application.id}/verify",
                headers={"HX-Request": "true", "X-CSRFToken": auth.csrf()})
    assert started_operation(OperationKind.REPOSITORY_VERIFY, "application",
                             application.id).id == op.id
    assert run_operation(op.id) == "failed"   # the worker's part, in-process here
    html = client.get(f"/applications/{application.id}/access").get_data(as_text=True)
    assert "Could not read the SSH host key of 127.0.0.1 port 1" in html
    assert "hx-trigger" not in html           # ended: no more polling
    db.session.expire_all()
    assert application.deploy_key_installed_at is None


def test_rotate_key_replaces_the_key(client, auth):
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    old = application.deploy_key_public
    client.post(f"/applications/{application.id}/rotate-key", headers={"X-CSRFToken": auth.csrf()})
    db.session.expire_all()
    assert application.deploy_key_public != old


def test_build_settings_save_registry_and_strategy(client, auth):
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    registry = Registry(organisation_id=application.organisation_id, name="r", url="127.0.0.1:5055")
    db.session.add(registry)
    db.session.commit()
    url = f"/applications/{application.id}/environments/{env.id}/build"
    token = csrf_token_from(client.get(url).get_data(as_text=True))
    resp = client.post(url, data={"csrf_token": token, "branch": "release/1", "strategy": "target_server",
                                  "registry_id": str(registry.id), "php_version": "8.4",
                                  "base_image": "keystone-sandbox/php-base:8.3-fpm",
                                  "document_root": "public", "health_path": "/up",
                                  "js_tool": "bun", "js_command": "", "image": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.session.expire_all()
    assert env.registry_id == registry.id and env.branch == "release/1"
    assert env.build_config["base_image"] == "keystone-sandbox/php-base:8.3-fpm"
    assert env.build_config["js_tool"] == "bun" and env.build_config["php_version"] == "8.4"


def test_registries_create_list_and_password_never_shown(client, auth):
    auth.signup()
    page = client.get("/registries/new").get_data(as_text=True)
    secret = "SENTINEL-registry-token-" + uuid.uuid4().hex
    resp = client.post("/registries/new", data={
        "csrf_token": csrf_token_from(page), "name": "ghcr", "type": "ghcr", "url": "",
        "namespace": "", "username": "Acme", "password": secret})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    registry = db.session.execute(sa.select(Registry)).scalar_one()
    assert (registry.url, registry.namespace, registry.username) == ("ghcr.io", "acme", "Acme")
    assert registry.password == secret
    raw = db.session.execute(sa.text("SELECT password FROM registries")).scalar_one()
    assert secret not in raw
    html = client.get("/registries/").get_data(as_text=True)
    assert "ghcr.io" in html and secret not in html

    bad = client.post("/registries/new", data={
        "csrf_token": csrf_token_from(page), "name": "bad", "type": "generic",
        "url": "-oProxyCommand=id", "namespace": "", "username": "", "password": ""})
    assert bad.status_code == 400


def test_multi_server_environment_without_registry_is_blocked_with_a_prompt(client, auth):
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    org_id = application.organisation_id
    servers = [Server(organisation_id=org_id, name=f"web-{i}", public_ip=f"203.0.113.{i}")
               for i in (1, 2)]
    db.session.add_all(servers)
    db.session.commit()
    problems = check_build_plan(env, servers)
    codes = [p.code for p in problems]
    assert "registry_required" in codes
    problem = problems[codes.index("registry_required")]
    assert "2 servers" in problem.message and problem.action_endpoint == "registries.new"
    assert "repository_unverified" in codes

    # One server: no registry needed.
    assert "registry_required" not in [p.code for p in check_build_plan(env, servers[:1])]
    # Placing the web service on both servers shows the prompt on the application page.
    web = env.services[0]
    web.server = servers[0]
    from app.models import ServiceReplica
    db.session.add(ServiceReplica(service=web, server=servers[1], container_name="shop-web-2"))
    db.session.commit()
    html = client.get(f"/applications/{application.id}").get_data(as_text=True)
    assert "needs a container registry" in html and "Set up a registry" in html

    registry = Registry(organisation_id=org_id, name="r", url="127.0.0.1:5055")
    db.session.add(registry)
    env.registry_id = None
    db.session.commit()
    env.container_registry = registry
    db.session.commit()
    assert "registry_required" not in [p.code for p in check_build_plan(env, servers)]


def test_dedicated_builder_needs_a_builder_service(client, auth):
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    env.build_config = {"strategy": "dedicated_builder"}
    server = Server(organisation_id=application.organisation_id, name="b", public_ip="203.0.113.9")
    db.session.add(server)
    db.session.commit()
    codes = [p.code for p in check_build_plan(env, [server])]
    assert "no_builder" in codes and "registry_required" in codes
    builder = Service(organisation_id=application.organisation_id, name="builder",
                      category=ServiceCategory.BUILDER, type="builder", driver_name="builder",
                      server=server)
    db.session.add(builder)
    db.session.commit()
    codes = [p.code for p in check_build_plan(env, [server])]
    assert "no_builder" not in codes and "builder_not_ready" in codes  # never deployed
    builder.status = ServiceStatus.RUNNING   # its readiness check passed
    db.session.commit()
    assert "builder_not_ready" not in [p.code for p in check_build_plan(env, [server])]


def test_build_settings_offer_to_build_on_another_server_when_a_registry_exists(client, auth):
    """Issue 12: builds on the serving server run at low CPU weight; with a registry and
    another server, the build settings say so and offer the dedicated builder instead."""
    from app.models.enums import ServerStatus
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    org_id = application.organisation_id
    serving = Server(organisation_id=org_id, name="web-1", public_ip="203.0.113.1",
                     status=ServerStatus.ACTIVE)
    spare = Server(organisation_id=org_id, name="spare-2", public_ip="203.0.113.2",
                   status=ServerStatus.ACTIVE)
    db.session.add_all([serving, spare])
    db.session.commit()
    env.services[0].server = serving
    db.session.commit()
    url = f"/applications/{application.id}/environments/{env.id}/build"
    assert "spare-2" not in client.get(url).get_data(as_text=True)  # no registry yet
    registry = Registry(organisation_id=org_id, name="r", url="127.0.0.1:5055")
    db.session.add(registry)
    db.session.commit()
    env.registry_id = registry.id
    db.session.commit()
    html = client.get(url).get_data(as_text=True)
    assert "low CPU priority" in html and "spare-2" in html and "web-1)" not in html


def test_sandbox_repository_is_prefilled_and_its_page_offers_the_sandbox_key_button(client, auth):
    from app.models import User
    from app.repositories.git import classify_git_error
    auth.signup()
    url = "ssh://git@127.0.0.1:2299/sample.git"
    org = db.session.execute(sa.select(User)).scalar_one().organisation
    org.onboarding_state = {"sandbox": {"status": "ready", "repository_url": url}}
    db.session.commit()
    page = client.get("/applications/new").get_data(as_text=True)
    assert f'value="{url}"' in page and 'value="sample"' in page
    assert _create(client, name="sample", repository_url=url).status_code == 302
    app_ = db.session.execute(sa.select(Application)).scalar_one()
    # Keystone owns the sandbox git host: creating the app authorises its key there and
    # verifies access at once (one repository_verify operation), no second click.
    from app.models import Operation
    from app.models.enums import OperationKind
    op = db.session.execute(sa.select(Operation).where(
        Operation.kind == OperationKind.REPOSITORY_VERIFY)).scalar_one()
    assert op.target_id == app_.id and (op.params or {}).get("sandbox_key") is True
    page = client.get(f"/applications/{app_.id}").get_data(as_text=True)
    assert "github.com" not in page and "Gitea" not in page  # no meaningless instructions
    # Should that verification fail, the button to try again is right on the page.
    op.status = "failed"
    op.error = "git host unreachable"
    db.session.commit()
    page = client.get(f"/applications/{app_.id}").get_data(as_text=True)
    assert "Add the key to the sandbox git host" in page
    assert f'action="/onboarding/sandbox/authorize/{app_.id}"' in page
    # Another repository: the usual instructions, no sandbox button.
    assert _create(client, name="shop").status_code == 302
    other = db.session.execute(sa.select(Application).where(Application.name == "shop")).scalar_one()
    page = client.get(f"/applications/{other.id}").get_data(as_text=True)
    assert "sandbox git host" not in page and "github.com/acme/shop/settings/keys" in page
    # The refusal message points at the key where it is: above the verify result.
    message = str(classify_git_error("Permission denied (publickey)."))
    assert "shown above" in message and "below" not in message


def test_the_health_path_has_one_owner_the_web_service(client, auth):
    # Issue 13, defect 4: the build page's field writes the web service's health.path, which
    # is what the deploy probes and what every replica gets as KEYSTONE_HEALTH_PATH.
    from app.deploys.values import replica_environment
    from app.deploys.service import primary_web
    from app.drivers import get_driver
    auth.signup()
    _create(client)
    application = db.session.execute(sa.select(Application)).scalar_one()
    env = application.environments[0]
    url = f"/applications/{application.id}/environments/{env.id}/build"
    data = {"branch": "main", "strategy": "target_server", "registry_id": "", "php_version": "8.3",
            "base_image": "", "document_root": "public", "js_tool": "none", "js_command": "",
            "image": ""}
    page = client.get(url).get_data(as_text=True)
    assert 'value="/up"' in page  # the default, read from the web service
    token = csrf_token_from(page)
    for value, says in (("healthz", "web.health.path: must start with /"),
                        ("/up; id", "web.health.path: letters, digits")):
        bad = client.post(url, data={**data, "csrf_token": token, "health_path": value})
        assert bad.status_code == 400 and says in bad.get_data(as_text=True), value
        db.session.expire_all()
        assert "health" not in (primary_web(env).config or {})
    resp = client.post(url, data={**data, "csrf_token": token, "health_path": "/healthz"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.session.expire_all()
    web = primary_web(env)
    assert web.config["health"]["path"] == "/healthz" and "health_path" not in web.config
    assert "health_path" not in env.build_config
    assert get_driver("laravel").health_path(web) == "/healthz"
    assert replica_environment(web, {})["KEYSTONE_HEALTH_PATH"] == "/healthz"
    assert 'value="/healthz"' in client.get(url).get_data(as_text=True)
