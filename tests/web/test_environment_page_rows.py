"""The environment page's variables table renders rows without a form object per row
(issue 20.4): a user variable's edit form is plain markup, and it must stay exactly what
EditVariableForm renders, and work when posted."""
import re

import pytest
from flask import render_template_string

from app.attachments import set_user_variable
from app.blueprints.environments.components import EditVariableForm
from tests.conftest import sign_in
from tests.factories import build_org

FORM_MARKUP = """{% from "components/field.html" import field %}
{% from "services/_macros.html" import checkbox %}
{{ ef.csrf_token }}
{{ field(ef.value, hint=hint) }}
{{ checkbox(ef.is_secret) }}"""


def _norm(html: str) -> str:
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", html)).strip()


def _no_token(html: str) -> str:
    return re.sub(r'(csrf_token" type="hidden" value=")[^"]*"', r'\1"', html)


def _edit_form(html: str, variable_id: int) -> str:
    row = html[html.index(f'<tr id="var-{variable_id}">'):]
    row = row[:row.index("</tr>")]
    form = row[row.index("<form"):]
    return form[form.index(">") + 1:form.index('<button type="submit">Save')]


def test_the_plain_edit_form_is_what_the_form_object_renders(app, client, db):
    g = build_org()
    sign_in(client, g.user)
    plain = set_user_variable(g.environment, "GREETING", 'say "hi" <b>&amp;</b>')
    secret = set_user_variable(g.environment, "API_TOKEN", "s3cr3t-value", is_secret=True)
    db.session.commit()
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    for var, hint in ((plain, None), (secret, "Leave empty to keep the current secret value.")):
        with app.test_request_context(f"/environments/{g.environment.id}"):
            ef = EditVariableForm(formdata=None, prefix=f"v{var.id}", is_secret=var.is_secret,
                                  value="" if var.is_secret else var.value)
            expected = render_template_string(FORM_MARKUP, ef=ef, hint=hint)
        got = _edit_form(html, var.id)
        # The CSRF token differs per render (it is signed with a timestamp): compare the rest.
        assert _norm(_no_token(got)) == _norm(_no_token(expected))
        assert f'name="v{var.id}-csrf_token" type="hidden" value="' in got
    assert "s3cr3t-value" not in html


def test_the_plain_edit_form_saves_when_posted(app, client, db):
    g = build_org()
    sign_in(client, g.user)
    var = set_user_variable(g.environment, "GREETING", "hello")
    db.session.commit()
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    form = _edit_form(html, var.id)
    csrf = re.search(rf'name="v{var.id}-csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    row = html[html.index(f'<tr id="var-{var.id}">'):]
    action = re.search(r'<form method="post" action="([^"]+)"', row).group(1)
    resp = client.post(action, data={f"v{var.id}-csrf_token": csrf,
                                     f"v{var.id}-value": "bonjour"})
    assert resp.status_code in (200, 302), resp.get_data(as_text=True)[:500]
    db.session.expire_all()
    from app.models import EnvironmentVariable
    assert db.session.get(EnvironmentVariable, var.id).value == "bonjour"
    # The Delete form's token is the page's (no prefix), as ActionForm renders it.
    delete = row[row.index("/delete"):]
    assert re.search(r'name="csrf_token" type="hidden" value="[^"]+"', delete)


def test_the_page_decrypts_no_secret_it_does_not_show(app, client, db, auth, monkeypatch):
    """Issue 20.4: the page shows secrets masked, so it leaves them encrypted (a deferred
    column, decrypted only when something reads it): the secret variable, the slice's
    password, the service's secrets and the application's deploy key. A value it shows
    is still decrypted, and revealing a secret still reads it."""
    from app.crypto import KeyRing
    from tests.factories import SECRET_SENTINELS
    g = build_org()
    sign_in(client, g.user)
    set_user_variable(g.environment, "GREETING", "hello-plain")
    db.session.commit()
    decrypted = []
    real = KeyRing.decrypt

    def recording(self, token):
        plaintext = real(self, token)
        decrypted.append(plaintext)
        return plaintext
    monkeypatch.setattr(KeyRing, "decrypt", recording)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert "hello-plain" in html and "hello-plain" in decrypted
    for name in ("env_value", "slice_password", "service_secret", "deploy_key",
                 "bootstrap_password", "management_key", "provider_token"):
        assert not any(SECRET_SENTINELS[name] in p for p in decrypted), name
    assert SECRET_SENTINELS["env_value"] not in html
    var = next(v for v in g.environment.variables if v.key == "APP_KEY")
    shown = client.post(f"/environments/{g.environment.id}/variables/{var.id}/reveal",
                        data={"csrf_token": auth.csrf()}, headers={"HX-Request": "true"})
    assert SECRET_SENTINELS["env_value"] in shown.get_data(as_text=True)


def test_url_patterns_build_what_url_for_builds(app):
    from flask import url_for

    from app.blueprints.environments.components import url_pattern
    with app.test_request_context("/"):
        detach = url_pattern("services.delete_slice", "service_id", "slice_id")
        assert detach(7, 12) == url_for("services.delete_slice", service_id=7, slice_id=12)
        edit = url_pattern("environments.edit_variable", "variable_id", environment_id=3)
        assert edit(5) == url_for("environments.edit_variable", environment_id=3, variable_id=5)
        assert url_pattern("operations.show", "operation_id")(987654321) == \
            url_for("operations.show", operation_id=987654321)


def test_the_attach_forms_selects_are_what_the_wtforms_select_renders(app):
    """The attach forms' selects write plain (value, label) choices straight from the list
    (issue 20.4): the same markup as WTForms' own Select, selected option, escaping, the
    required flag and the error attributes included."""
    from wtforms import widgets

    from app.blueprints.environments.components import AttachPostgresForm, AttachValkeyForm
    with app.test_request_context("/"):
        pg = AttachPostgresForm(formdata=None, prefix="pg")
        pg.target.choices = [("7", 'pg <b> & "quoted" on srv-1'), ("new:3", "New Postgres on s")]
        pg.target.data = "new:3"
        pg.existing_slice.choices = [("", "No: create a new one"), ("12", "db_1 on pg-1")]
        pg.existing_slice.data = ""
        vk = AttachValkeyForm(formdata=None, prefix="vk")
        vk.target.choices = []
        for field in (pg.target, pg.existing_slice, vk.target):
            for kw in ({}, {"aria-invalid": "true", "aria-describedby": f"{field.id}-errors"}):
                assert str(field(**kw)) == str(widgets.Select()(field, **kw)), field.name
        assert 'required' in str(pg.target()) and '<option selected value="new:3">' in str(pg.target())
        assert "&lt;b&gt; &amp; &#34;quoted&#34;" in str(pg.target())


def test_a_shown_value_is_decrypted_once_per_token_and_keys(app, monkeypatch):
    """The page keeps a shown value's plaintext per stored token (issue 20.4); another key
    set decrypts again (a token the current keys cannot read still fails), and a long value
    is not kept."""
    from cryptography.fernet import Fernet

    from app.blueprints.environments.page import _SHOWN_TOKEN_MAX, _shown_value
    from app.crypto import KeyRing, keyring
    calls = []
    real = KeyRing.decrypt

    def counting(self, token):
        calls.append(token)
        return real(self, token)
    monkeypatch.setattr(KeyRing, "decrypt", counting)
    token = keyring.encrypt("shown-value")
    assert _shown_value(token) == "shown-value" and _shown_value(token) == "shown-value"
    assert calls == [token]
    long_token = keyring.encrypt("x" * _SHOWN_TOKEN_MAX)
    assert _shown_value(long_token) == _shown_value(long_token)
    assert calls.count(long_token) == 2
    assert _shown_value(None) is None
    saved = keyring._fernet
    try:
        keyring.configure([Fernet.generate_key().decode()])
        with pytest.raises(RuntimeError):
            _shown_value(token)
    finally:
        keyring._fernet = saved


def _attachments_section(html: str) -> str:
    start = html.index('<section class="card" id="attachments"')
    return html[start:html.index("</section>", start) + len("</section>")]


def test_the_plain_attach_forms_are_what_the_wtforms_forms_render(app, client, db, monkeypatch):
    """On a page view the attach forms are unbound and written as plain markup (issue 20.4):
    exactly what the WTForms forms and the field/checkbox macros render, every form shown
    (attach recommended, the recommended settings, the existing-slice selects, a proposed
    domain, "new on <server>" choices, escaping), the CSRF token in each, with and without
    the wizard's next target."""
    from app.blueprints.environments import attachments as attachments_views
    from app.blueprints.environments import components
    from app.models import EnvironmentAttachment, Service, ServiceSlice
    from app.models.enums import (AttachmentRole, DeployPolicy, ServerStatus, ServiceCategory,
                                  SliceStatus, SliceType)
    g = build_org()
    sign_in(client, g.user)
    g.server.status = ServerStatus.ACTIVE
    g.server.facts = {"sandbox": True}
    pg2 = Service(organisation=g.org, name='pg <b> & "two"', type="postgres",
                  driver_name="postgres", server=g.server, category=ServiceCategory.DATABASE,
                  deploy_policy=DeployPolicy.DEPENDENCY_ONLY)
    vk = Service(organisation=g.org, name="cache", type="valkey", driver_name="valkey",
                 server=g.server, category=ServiceCategory.DATABASE,
                 deploy_policy=DeployPolicy.DEPENDENCY_ONLY)
    cache = ServiceSlice(service=vk, environment=g.environment, name="shop_cache",
                         type=SliceType.VALKEY_NAMESPACE, status=SliceStatus.READY, config={})
    db.session.add_all([
        pg2, vk, cache,
        ServiceSlice(service=pg2, name="spare", type=SliceType.POSTGRES_DATABASE,
                     status=SliceStatus.READY, config={}),
        ServiceSlice(service=vk, name="jobs", type=SliceType.VALKEY_NAMESPACE,
                     status=SliceStatus.READY, config={}),
        EnvironmentAttachment(environment=g.environment, service=vk, service_slice=cache,
                              role=AttachmentRole.CACHE)])
    db.session.commit()
    url = f"/environments/{g.environment.id}/attachments"
    real = components.attachments_context

    def with_wtforms(env, forms=None, **kw):  # the forms passed in: rendered by WTForms
        return real(env, forms or components.attachment_forms(env), **kw)

    for query in ("", "?next=onboarding"):
        monkeypatch.setattr(attachments_views, "attachments_context", real)
        plain = _attachments_section(client.get(url + query).get_data(as_text=True))
        monkeypatch.setattr(attachments_views, "attachments_context", with_wtforms)
        wtf = _attachments_section(client.get(url + query).get_data(as_text=True))
        assert "{{" not in plain and "{%" not in plain
        for shown in ("Attach recommended services", "Recommended settings",
                      'name="pg-existing_slice"', 'name="vk-existing_slice"',
                      f'value="{g.application.name}.localhost"', f'value="new:{g.server.id}"',
                      "pg &lt;b&gt; &amp; &#34;two&#34;", 'name="rec-confirm"'):
            assert shown in plain, shown
        for name in ("csrf_token", "pg-csrf_token", "vk-csrf_token", "dom-csrf_token",
                     "rec-csrf_token"):
            assert re.search(rf'name="{name}" type="hidden" value="[^"]+"', plain), name
        if query:
            assert 'name="pg-next" type="hidden" value="onboarding"' in plain
        assert _norm(_no_token(plain)) == _norm(_no_token(wtf))


def test_an_attach_form_sent_back_with_errors_is_the_wtforms_form(app, client, db):
    """A post with errors answers with the form itself: its data and its errors."""
    g = build_org()
    sign_in(client, g.user)
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    token = re.search(r'name="pg-csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    resp = client.post(f"/environments/{g.environment.id}/attachments/domain",
                       data={"dom-csrf_token": token, "dom-hostname": "bad host <x>",
                             "dom-target": "999999", "dom-www_redirect": "y"},
                       headers={"HX-Request": "true"})
    body = resp.get_data(as_text=True)
    assert 'aria-describedby="dom-target-errors"' in body and 'id="dom-target-errors"' in body
    assert 'value="bad host &lt;x&gt;"' in body
    assert 'checked id="dom-www_redirect"' in body


def test_plain_select_is_what_the_wtforms_select_renders(app):
    """The unbound attach forms' selects (plain_select): WTForms' own Select markup, the
    required flag, the selected default and escaping included; a field with errors is the
    field's own rendering."""
    from wtforms import widgets

    from app.blueprints.environments.components import (AttachDomainForm, AttachValkeyForm,
                                                        plain_select)
    with app.test_request_context("/"):
        vk = AttachValkeyForm(formdata=None, prefix="vk")
        vk.target.choices = [("7", 'vk <b> & "quoted"'), ("new:3", "New Valkey on s")]
        vk.existing_slice.choices = [("", "No: create a new one"), ("12", "jobs on vk")]
        dom = AttachDomainForm(formdata=None, prefix="dom")
        dom.target.choices = []
        for field in (vk.target, vk.role, vk.existing_slice, dom.target, dom.tls):
            assert str(plain_select(field)) == str(widgets.Select()(field)), field.name
        assert '<option selected value="cache">' in str(plain_select(vk.role))
        vk.target.errors = ["Not a valid choice."]
        assert str(plain_select(vk.target)) == str(vk.target())
