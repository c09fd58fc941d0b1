"""Each organisation gets its own local sandbox, named after it (issue 15, defect 11)."""
from app.accounts import create_account
from app.extensions import db
from app.sandbox import Sandbox
from app.sandbox_servers import organisation_sandbox, sandbox_name_for


def test_two_organisations_never_share_a_sandbox(app):
    a = create_account(organisation="Acme Ltd", email="a@example.com",
                       password="correct horse battery").organisation
    b = create_account(organisation="Acme Ltd", email="b@example.com",   # same name
                       password="correct horse battery").organisation
    c = create_account(organisation="Ünïcode & <script>" + "x" * 80, email="c@example.com",
                       password="correct horse battery").organisation
    names = [sandbox_name_for(org, "keystone-sandbox") for org in (a, b, c)]
    assert names[0] == f"keystone-sandbox-acme-ltd-{a.id}"
    assert len(set(names)) == 3
    for name in names:
        Sandbox(name)  # a valid sandbox name (container, network and volume names)
        assert len(name) <= 60


def test_the_sandbox_an_organisation_started_is_the_one_it_uses(app):
    org = create_account(organisation="Shop", email="s@example.com",
                         password="correct horse battery").organisation
    assert organisation_sandbox(org, "ks") == f"ks-shop-{org.id}"
    org.onboarding_state = {"sandbox": {"status": "ready", "name": "ks-shop-recorded"}}
    db.session.commit()
    assert organisation_sandbox(org, "ks") == "ks-shop-recorded"
