from app import onboarding
from app.extensions import db
from tests.conftest import sign_in
from tests.factories import build_org


def test_signup_leads_into_the_wizard_at_the_server_step(client, auth):
    resp = auth.signup()
    assert resp.headers["Location"].endswith("/onboarding/")
    html = client.get("/onboarding/").get_data(as_text=True)
    assert 'aria-current="step"' in html
    assert "Step 2 of 8" in html  # organisation done, servers now
    assert "Connect Hetzner" in html or "local sandbox" in html or "Servers" in html


def test_steps_are_derived_from_what_exists_so_the_wizard_resumes(app, auth):
    g = build_org()
    steps = {s.key: s for s in onboarding.steps_for(g.org)}
    assert steps["provider"].done            # a provider and a server exist
    assert not steps["repository"].done      # deploy key not verified yet
    assert steps["registry"].done            # a registry exists
    assert onboarding.current_step(list(steps.values())).key == "repository"


def test_registry_is_skippable_for_one_server_only(app):
    g = build_org()
    db.session.delete(g.registry)
    db.session.commit()
    onboarding.skip(g.org, "registry")
    assert {s.key: s for s in onboarding.steps_for(g.org)}["registry"].skipped
    from app.models import Server
    db.session.add(Server(organisation=g.org, name="web-2", public_ip="203.0.113.11"))
    db.session.commit()
    step = {s.key: s for s in onboarding.steps_for(g.org)}["registry"]
    assert not step.complete and "required" in step.blocked_reason
    try:
        onboarding.skip(g.org, "registry")
    except ValueError:
        pass
    else:
        raise AssertionError("a registry cannot be skipped with several servers")


def test_wizard_renders_the_repository_step_with_the_unverified_app(app, client):
    g = build_org()
    sign_in(client, g.user)
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Repository and deploy key" in html
    assert "key not verified yet" in html and "shop" in html


def test_the_wizard_uses_the_configured_sandbox_name(app, client, monkeypatch):
    """KEYSTONE_SANDBOX_NAME keeps a second Keystone (the browser tests) off a developer's sandbox.

    The view only starts a repository_verify operation (sandbox_key); the worker's part,
    run in-process here, adds the key on the sandbox git host and verifies."""
    import datetime as dt

    import app.repositories.handlers as verify_handlers
    import app.sandbox as sandbox_pkg
    from app.jobs import run_operation
    from app.models.enums import OperationKind
    from app.repositories import VerifyResult
    from tests.conftest import csrf_token_from
    from tests.opsupport import started_operation
    names, keys = [], []

    class FakeSandbox:
        def __init__(self, name="keystone-sandbox", state_dir=None):
            names.append(name)

        def status(self):
            return type("Info", (), {"git": type("Git", (), {
                "authorize_key": staticmethod(keys.append)})()})()

    def fake_verify(application):  # no real git host here
        application.deploy_key_installed_at = dt.datetime(2026, 12, 2)
        return VerifyResult(True, "Access works: 1 branch found.", branches=["main"])

    monkeypatch.setattr(sandbox_pkg, "Sandbox", FakeSandbox)
    monkeypatch.setattr(verify_handlers, "verify_access", fake_verify)
    app.config["SANDBOX_NAME"] = "ks-other"
    g = build_org()
    g.org.onboarding_state = {"sandbox": {"status": "ready",
                                          "repository_url": g.application.repository_url}}
    db.session.commit()
    sign_in(client, g.user)
    token = csrf_token_from(client.get("/onboarding/").get_data(as_text=True))
    resp = client.post(f"/onboarding/sandbox/authorize/{g.application.id}", data={"csrf_token": token})
    assert resp.status_code == 302
    op = started_operation(OperationKind.REPOSITORY_VERIFY, "application", g.application.id)
    assert op.params == {"sandbox_key": True}
    assert names == [] and keys == []          # nothing ran in the request
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"operation #{op.id}" in page and "Verifying access" in page
    assert run_operation(op.id) == "succeeded"
    # The organisation's own sandbox under the configured base name (BASE-SLUG-ID).
    assert names == [f"ks-other-{g.org.slug}-{g.org.id}"]
    assert keys == [g.application.deploy_key_public]
    html = client.get(f"/applications/{g.application.id}/access").get_data(as_text=True)
    assert "Deploy key added to the sandbox git host (read-only) and access verified" in html
    assert '<span class="badge status-ready">verified</span>' in html


def test_using_the_sandbox_starts_an_operation_and_the_component_follows_it(app, client,
                                                                            monkeypatch):
    import app.sandbox as sandbox_pkg
    from app.jobs import run_operation
    from app.models.enums import OperationKind
    from app.sandbox import SandboxError
    from tests.conftest import csrf_token_from
    from tests.opsupport import started_operation

    class BrokenSandbox:  # Docker is not driven from the fast tiers
        def __init__(self, name="keystone-sandbox", state_dir=None):
            pass

        def up(self, **kwargs):
            raise SandboxError("dockerd in ks-x-1 did not start")

    monkeypatch.setattr(sandbox_pkg, "docker_available", lambda: True)
    monkeypatch.setattr(sandbox_pkg, "Sandbox", BrokenSandbox)
    g = build_org()
    sign_in(client, g.user)
    token = csrf_token_from(client.get("/onboarding/").get_data(as_text=True))
    assert client.post("/onboarding/sandbox", data={"csrf_token": token}).status_code == 302
    op = started_operation(OperationKind.SANDBOX_START, "organisation", g.org.id)
    db.session.refresh(g.org)
    assert g.org.onboarding_state["sandbox"] == {"status": "starting"}
    html = client.get("/onboarding/sandbox/status").get_data(as_text=True)
    assert "Starting the sandbox" in html and f"/operations/{op.id}" in html
    assert 'hx-trigger="every 2s"' in html
    assert run_operation(op.id) == "failed"
    html = client.get("/onboarding/sandbox/status").get_data(as_text=True)
    assert "The sandbox did not start" in html and "dockerd in ks-x-1 did not start" in html
    assert "hx-trigger" not in html and "Try again" in html


def test_pages_after_a_step_name_the_next_one_until_onboarding_is_done(app, client, auth):
    import datetime as dt

    from app.models.enums import EnvironmentStatus, ServerStatus
    g = build_org()
    auth.login(email="b@example.com")
    for path in (f"/applications/{g.application.id}", f"/servers/{g.server.id}",
                 f"/environments/{g.environment.id}", f"/operations/{g.operation.id}", "/"):
        html = client.get(path).get_data(as_text=True)
        assert 'Next: <a href="/onboarding/#wizard-step">Repository and deploy key</a>' in html, path
    assert "Next:" not in client.get("/onboarding/").get_data(as_text=True)
    # Verified: the next step is named instead.
    g.application.deploy_key_installed_at = dt.datetime(2026, 12, 2)
    db.session.commit()
    html = client.get(f"/applications/{g.application.id}").get_data(as_text=True)
    assert ">Provision the server</a>" in html
    # Everything done: no banner.
    g.server.status = ServerStatus.ACTIVE
    g.environment.status = EnvironmentStatus.DEPLOYED
    db.session.commit()
    onboarding.skip(g.org, "services")
    assert onboarding.current_step(onboarding.steps_for(g.org)) is None
    for path in (f"/environments/{g.environment.id}", "/"):
        assert "Next:" not in client.get(path).get_data(as_text=True)


def test_the_wizard_reloads_itself_when_what_it_shows_changes(app, client):
    """The wizard continues on its own (issue 14): its watch answers HX-Refresh once the
    fingerprint it was rendered with is stale (a server became active, an operation ended)."""
    import re as re_
    from app.models.enums import ServerStatus
    g = build_org()
    sign_in(client, g.user)
    html = client.get("/onboarding/").get_data(as_text=True)
    watch = re_.search(r'id="wizard-watch" hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    resp = client.get(watch)
    assert resp.status_code == 200 and "HX-Refresh" not in resp.headers  # nothing changed
    g.application.deploy_key_installed_at = g.application.created_at  # verified by a job
    db.session.commit()
    assert client.get(watch).headers.get("HX-Refresh") == "true"
    html = client.get("/onboarding/").get_data(as_text=True)
    watch = re_.search(r'id="wizard-watch" hx-get="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "HX-Refresh" not in client.get(watch).headers
    g.server.status = ServerStatus.PROVISIONING
    db.session.commit()
    assert client.get(watch).headers.get("HX-Refresh") == "true"


def test_the_wizard_creates_the_sample_app_and_authorises_its_key_in_one_click(app, client):
    """The repository step carries the new-application form, filled in with the sandbox's
    sample repository; creating it starts the key's authorisation and returns to the wizard."""
    import sqlalchemy as sa

    from app.models import Application
    from app.models.enums import OperationKind
    from tests.conftest import csrf_token_from
    from tests.opsupport import started_operation
    g = build_org()
    url = "ssh://git@127.0.0.1:2299/sample.git"
    db.session.delete(g.application)  # a fresh organisation: servers, no application yet
    g.org.onboarding_state = {"sandbox": {"status": "ready", "repository_url": url}}
    db.session.commit()
    sign_in(client, g.user)
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Repository and deploy key" in html
    assert f'value="{url}"' in html and 'value="sample"' in html
    assert 'name="next" value="onboarding"' in html
    resp = client.post("/applications/new", data={
        "csrf_token": csrf_token_from(html), "name": "sample", "repository_url": url,
        "repository_type": "auto", "default_branch": "main", "next": "onboarding"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/onboarding/")
    application = db.session.execute(sa.select(Application).where(
        Application.name == "sample")).scalar_one()
    op = started_operation(OperationKind.REPOSITORY_VERIFY, "application", application.id)
    assert op.params == {"sandbox_key": True}
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "verifying access" in html and f"operation #{op.id}" in html
    # Another repository: its key has to be added by hand, so the application page opens.
    resp = client.post("/applications/new", data={
        "csrf_token": csrf_token_from(html), "name": "shop2",
        "repository_url": "git@github.com:acme/shop2.git", "repository_type": "auto",
        "default_branch": "main", "next": "onboarding"})
    assert "/applications/" in resp.headers["Location"]


def test_provisioning_from_the_wizard_returns_to_the_wizard(app, client, monkeypatch):
    from tests.conftest import csrf_token_from
    g = build_org()
    g.application.deploy_key_installed_at = g.application.created_at
    g.server.host_key_fingerprint = g.server.host_key_fingerprint or "SHA256:" + "a" * 43
    db.session.commit()
    sign_in(client, g.user)
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Provision the server" in html and 'name="next" value="onboarding"' in html
    resp = client.post("/servers/provision-all", data={"csrf_token": csrf_token_from(html),
                                                       "next": "onboarding"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/onboarding/")
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "watch the log" in html and "continues on its own" in html
