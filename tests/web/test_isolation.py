"""Cross-organisation isolation: every object URL of org B answers 404 to org A."""
import re

from tests.factories import build_org


def _object_rules(app):
    for rule in app.url_map.iter_rules():
        id_args = [a for a in rule.arguments if a.endswith("_id")]
        if id_args:
            yield rule, id_args


def test_every_object_url_of_another_organisation_is_404(app, client, auth):
    other = build_org()
    ids = other.ids()
    auth.signup(email="a@example.com", organisation="Org A")
    token = auth.csrf()
    checked = 0
    for rule, id_args in _object_rules(app):
        unknown = [a for a in id_args if a not in ids]
        assert not unknown, f"{rule.rule}: add {unknown} to OrgGraph.ids() so isolation is tested"
        values = {a: ids[a] for a in id_args}
        for other_arg in rule.arguments - set(id_args):
            values[other_arg] = "x"
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = client.open(url, method=method, headers={"X-CSRFToken": token},
                               data={"csrf_token": token})
            assert resp.status_code == 404, f"{method} {url} answered {resp.status_code}"
            checked += 1
    # The rule list grows with every blueprint; the test grows with it.
    assert checked >= 0


def test_scoped_loader_answers_404_across_organisations(app, auth):
    from flask_login import login_user
    from werkzeug.exceptions import NotFound

    from app.models import Environment, OperationStep, Server, ServiceSlice
    from app.scoping import get_for_org_or_404

    b = build_org()
    a = build_org(email="a@example.com", organisation="Org A")
    with app.test_request_context():
        login_user(a.user)
        assert get_for_org_or_404(Server, a.server.id) is a.server
        assert get_for_org_or_404(OperationStep, a.step.id) is a.step
        for model, obj in [(Server, b.server), (Environment, b.environment),
                           (ServiceSlice, b.slice), (OperationStep, b.step)]:
            try:
                get_for_org_or_404(model, obj.id)
            except NotFound:
                continue
            raise AssertionError(f"{model.__name__} of another organisation was returned")
        try:
            get_for_org_or_404(Server, "1 or 1=1")
        except NotFound:
            pass
        else:
            raise AssertionError
