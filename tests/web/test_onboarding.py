from app import onboarding
from app.extensions import db
from tests.conftest import sign_in
from tests.factories import build_org


def test_signup_leads_into_the_wizard_at_the_server_step(client, auth):
    resp = auth.signup()
    assert resp.headers["Location"].endswith("/onboarding/")
    html = client.get("/onboarding/").get_data(as_text=True)
    assert 'aria-current="step"' in html
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
    """KEYSTONE_SANDBOX_NAME keeps a second Keystone (the browser tests) off a developer's sandbox."""
    import app.sandbox as sandbox_pkg
    from tests.conftest import csrf_token_from
    names = []

    class FakeSandbox:
        def __init__(self, name="keystone-sandbox", state_dir=None):
            names.append(name)

        def status(self):
            return type("Info", (), {"git": type("Git", (), {
                "authorize_key": staticmethod(lambda key: None)})()})()

    monkeypatch.setattr(sandbox_pkg, "Sandbox", FakeSandbox)
    app.config["SANDBOX_NAME"] = "ks-other"
    g = build_org()
    g.org.onboarding_state = {"sandbox": {"status": "ready",
                                          "repository_url": g.application.repository_url}}
    db.session.commit()
    sign_in(client, g.user)
    token = csrf_token_from(client.get("/onboarding/").get_data(as_text=True))
    resp = client.post(f"/onboarding/sandbox/authorize/{g.application.id}", data={"csrf_token": token})
    assert resp.status_code == 302 and names == ["ks-other"]
