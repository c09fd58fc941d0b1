from app import onboarding
from app.extensions import db
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
    with client.session_transaction() as sess:
        sess["_user_id"] = str(g.user.id)
        sess["_fresh"] = True
    html = client.get("/onboarding/").get_data(as_text=True)
    assert "Repository and deploy key" in html
    assert "key not verified yet" in html and "shop" in html
