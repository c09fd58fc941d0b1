"""The environment page's attachments and variables components: their forms and the
context each template renders (``environments/_attachments.html``,
``environments/_variables.html``). No routes here: :mod:`.attachments` and
:mod:`.variables` are the views; :mod:`.page` renders both on the whole page.
"""
from __future__ import annotations

import re

from flask import request, url_for
from markupsafe import Markup, escape
from wtforms import (BooleanField, HiddenField, SelectField, SelectMultipleField, StringField,
                     TextAreaField, widgets)
from wtforms.validators import DataRequired, Length

from app import attachments as att
from app.blueprints.helpers import latest_operations
from app.forms import ActionForm, KeystoneForm
from app.drivers import drivers, get_driver
from app.managed_services import org_choice_rows, stand_in_note
from app.models import Environment
from app.models.enums import ServerStatus, SliceStatus

TLS_CHOICES = [("auto", "Automatic HTTPS (Let's Encrypt)"),
               ("internal", "HTTPS with Caddy's internal CA"),
               ("off", "Plain HTTP only")]
# Where a full-reload form post of the attachments component returns to (the wizard).
NEXT_TARGETS = {"onboarding": "onboarding.start"}


def posted_next_target() -> str | None:
    """Where a full-reload form post returns to: only a known name (no open redirect)."""
    for name in ("next", "pg-next", "vk-next", "dom-next", "rec-next"):
        value = request.values.get(name)
        if value in NEXT_TARGETS:
            return value
    return None


# --------------------------------------------------------------------------- forms

def _plain_choices(choices) -> bool:
    """Whether ``choices`` is a list of (str, str) pairs (no groups, no render_kw)."""
    return isinstance(choices, list) and all(
        type(c) is tuple and len(c) == 2 and type(c[0]) is str and type(c[1]) is str
        for c in choices)


def _options(field) -> str:
    """The ``<option>``s of a select whose choices are plain (value, label) pairs, as
    ``widgets.Select`` writes them."""
    coerce, data = field.coerce, field.data
    return "".join(f'<option {"selected " if coerce(value) == data else ""}'
                   f'value="{escape(value)}">{escape(label or value)}</option>'
                   for value, label in field.choices)


def plain_select(field) -> Markup:
    """A select of an unbound attach form (no errors, no extra attributes) as plain markup:
    what its widget renders, without WTForms' render chain (the attach forms' unbound
    markup in ``_attachments.html``; tests/web/test_environment_page_rows.py compares).
    Anything else is the field's own rendering."""
    widget, flags = field.widget, field.flags
    required = getattr(flags, "required", False)
    if (field.errors or field.render_kw or not isinstance(widget, widgets.Select)
            or widget.multiple or required not in (True, False)
            or any(getattr(flags, k, False) for k in widget.validation_attrs
                   if k != "required")
            or not _plain_choices(field.choices)):
        return field()
    return Markup(f'<select id="{escape(field.id)}" name="{escape(field.name)}"'
                  f'{" required" if required else ""}>{_options(field)}</select>')


class _QuickSelect(widgets.Select):
    """``widgets.Select`` with the same markup, a plain option written directly instead of
    through ``html_params`` (the attach forms list every service and server of the
    organisation, on every environment page). Plain choices, a list of (str, str) pairs,
    are written straight from the list: WTForms otherwise builds two objects per option
    on every render (tests/web/test_environment_page_rows.py compares the markup)."""

    def __call__(self, field, **kwargs):
        if self.multiple or not _plain_choices(field.choices):
            return super().__call__(field, **kwargs)
        kwargs.setdefault("id", field.id)
        flags = field.flags
        for k in self.validation_attrs:
            if k not in kwargs and getattr(flags, k, False):
                kwargs[k] = getattr(flags, k)
        return Markup(f"<select {widgets.html_params(name=field.name, **kwargs)}>"
                      f"{_options(field)}</select>")

    @classmethod
    def render_option(cls, choice, **kwargs):
        if kwargs or choice.render_kw or not isinstance(choice.value, str):
            return super().render_option(choice, **kwargs)
        selected = "selected " if choice.selected else ""
        return Markup(f'<option {selected}value="{escape(choice.value)}">'
                      f'{escape(choice.label or choice.value)}</option>')


class _AttachForm(KeystoneForm):
    next = HiddenField()
    target = SelectField("Service", coerce=str, choices=[], validators=[DataRequired()],
                         widget=_QuickSelect())


def _optional_id(value) -> str:
    """An optional choice: absent from the form (older pages, the one-click plan) is ""."""
    return "" if value is None else str(value)


class AttachPostgresForm(_AttachForm):
    # Advanced (SPEC 12): a slice that exists already instead of a new one.
    existing_slice = SelectField("Use an existing database", coerce=_optional_id, choices=[],
                                 default="", widget=_QuickSelect())


class AttachValkeyForm(_AttachForm):
    role = SelectField("Use it for", choices=[("cache", "Cache and sessions"),
                                               ("queue", "Queues")], default="cache")
    existing_slice = SelectField("Use an existing ACL user", coerce=_optional_id, choices=[],
                                 default="", widget=_QuickSelect())


def _slice_choices(env: Environment, *service_types: str) -> list[list[tuple[str, str]]]:
    """The "existing slice" choices of each of ``service_types`` (one query)."""
    from app.attachments import attachable_slices_by_type
    by_type = attachable_slices_by_type(env.application.organisation_id, service_types, env)
    return [[("", "No: create a new one")] + [(str(sl.id), f"{sl.name} on {sl.service.name}")
                                              for sl in by_type[t]] for t in service_types]


class AttachDomainForm(_AttachForm):
    hostname = StringField("Domain", validators=[DataRequired(), Length(max=253)])
    target = SelectField("Gateway", coerce=str, choices=[], validators=[DataRequired()],
                         widget=_QuickSelect())
    tls = SelectField("TLS", choices=[("", "Default for the server")] + TLS_CHOICES, default="")
    www_redirect = BooleanField("Also answer www. of this domain with a permanent redirect to it")
    hsts = BooleanField("Send HSTS (Strict-Transport-Security, one year)")


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class RecommendationsForm(KeystoneForm):
    next = HiddenField()
    keys = MultiCheckboxField("Apply", choices=[])
    confirm = BooleanField("I understand this changes how the application behaves")


class VariableForm(KeystoneForm):
    key = StringField("Name", validators=[DataRequired(message="Give the variable a name."),
                                         Length(max=255)])
    value = TextAreaField("Value", validators=[Length(max=65536)])
    is_secret = BooleanField("Secret (masked on this page)")


class EditVariableForm(KeystoneForm):
    value = TextAreaField("Value", validators=[Length(max=65536)])
    is_secret = BooleanField("Secret")


# --------------------------------------------------------------------------- attachments

def _server_label(server) -> str:
    return server.name if server is not None else "no server"


def _choices(services, servers, service_type: str,
             skip_servers=frozenset()) -> list[tuple[str, str]]:
    """Existing services, then "New ... on <server>" for each server that is provisioned
    (a service cannot start on a server Keystone has not set up). ``services`` and
    ``servers`` are :func:`app.managed_services.org_choice_rows`' rows."""
    label = get_driver(service_type).short_label
    by_id = {srv.id: srv for srv in servers}
    out = []
    for s in services:
        server = by_id.get(s.server_id)
        out.append((str(s.id), f"{s.name} on {_server_label(server)}"
                               f"{stand_in_note(s.type, server, (s.config or {}).get('image'))}"))
    out += [(f"new:{srv.id}", f"New {label} on {srv.name}{stand_in_note(service_type, srv)}")
            for srv in servers if srv.id not in skip_servers and srv.status == ServerStatus.ACTIVE]
    return out


def attachment_forms(env: Environment, formdata=None) -> dict:
    services, servers = org_choice_rows()
    by_type = {t: [s for s in services if s.type == t] for t in drivers.offered()}
    gateway_servers = {s.server_id for s in by_type["caddy"]}
    pg = AttachPostgresForm(formdata=formdata, prefix="pg")
    pg.target.choices = _choices(by_type["postgres"], servers, "postgres")
    vk = AttachValkeyForm(formdata=formdata, prefix="vk")
    vk.target.choices = _choices(by_type["valkey"], servers, "valkey")
    pg.existing_slice.choices, vk.existing_slice.choices = _slice_choices(env, "postgres",
                                                                          "valkey")
    dom = AttachDomainForm(formdata=formdata, prefix="dom")
    dom.target.choices = _choices(by_type["caddy"], servers, "caddy", gateway_servers)
    if formdata is None and not dom.hostname.data and env.application is not None:
        if any((s.facts or {}).get("sandbox") for s in servers):
            dom.hostname.data = f"{env.application.name}.localhost"
    rec = RecommendationsForm(formdata=formdata, prefix="rec")
    return {"pg_form": pg, "vk_form": vk, "dom_form": dom, "rec_form": rec}


def recommended_plan(env: Environment, forms: dict) -> list[tuple[str, str, str]]:
    """What "Attach recommended services" attaches, as (form key, service type, label): each
    of a database, a cache and a domain the environment lacks, on the first choice its form
    offers (an existing service of the organisation, else a new one on a provisioned server).
    The domain only when one is proposed (the sandbox's ``NAME.localhost``)."""
    from app.models.enums import AttachmentRole
    roles = {a.role for a in env.attachments}
    plan = []
    if AttachmentRole.DATABASE not in roles:
        plan.append(("pg_form", "postgres", "Postgres"))
    if AttachmentRole.CACHE not in roles and AttachmentRole.QUEUE not in roles:
        plan.append(("vk_form", "valkey", "Valkey (cache and sessions)"))
    if AttachmentRole.GATEWAY not in roles and forms["dom_form"].hostname.data:
        plan.append(("dom_form", "caddy", f"the domain {forms['dom_form'].hostname.data}"))
    out = []
    for key, stype, label in plan:
        choices = forms[key].target.choices
        if choices:
            out.append((key, stype, f"{label} ({choices[0][1]})"))
    return out


def attachment_table(env: Environment, ops: dict, service_url, detach_url) -> list[tuple]:
    """The attachments table's rows as the tuples its loop unpacks (``_attachments.html``),
    read from the ORM objects in Python once rather than attribute by attribute in the
    template (50 attachments and more). A tuple is

    (role, service URL, service name, service type, slice or None, slice type, slice
    status, the slice's latest operation or None, whether that operation is still working,
    detach URL or None)"""
    table = []
    for a in env.attachments:
        sl, service = a.service_slice, a.service
        op = ops.get(a.service_slice_id)
        status = sl.status.value if sl is not None else None
        table.append((
            a.role.value, service_url(a.service_id), service.name, service.type, sl,
            sl.type.value if sl is not None else None, status, op,
            op is not None and not op.is_terminal,
            detach_url(a.service_id, sl.id)
            if sl is not None and status not in ("deleting", "deleted") else None))
    return table


def attachments_context(env: Environment, forms: dict | None = None,
                        next_target: str | None = None, **kw) -> dict:
    """The attachments component's context; ``next_target="onboarding"`` sends full-reload
    form posts back to the wizard. Forms passed in (a post sent back, with its errors) are
    rendered by WTForms; the forms built here are unbound, and the template writes them as
    plain markup (``plain``: the same fields, names, values and CSRF token)."""
    plain = forms is None
    forms = forms or attachment_forms(env)
    recs = att.recommendations_for(env)
    forms["rec_form"].keys.choices = [(r.key, f"{r.key}={r.value}") for r in recs]
    slice_ids = [a.service_slice_id for a in env.attachments]
    ops = latest_operations("service_slice", slice_ids)
    busy = any(a.service_slice is not None and a.service_slice.status in
               (SliceStatus.PENDING, SliceStatus.PROVISIONING, SliceStatus.DELETING)
               and a.service_slice_id in ops and not ops[a.service_slice_id].is_terminal
               for a in env.attachments)
    nxt = next_target or posted_next_target()
    for f in forms.values():
        f.next.data = nxt if nxt in NEXT_TARGETS else ""
    urls = {"service_url": url_pattern("services.show", "service_id"),
            "detach_url": url_pattern("services.delete_slice", "service_id", "slice_id")}
    action_form = ActionForm(formdata=None)
    csrf = getattr(action_form, "csrf_token", None)  # absent when CSRF is off (tests)
    ctx = {"env": env, "recommendations": recs, "slice_ops": ops, "busy": busy,
           "recommended": recommended_plan(env, forms),
           "action_form": action_form, "plain": plain, "plain_select": plain_select,
           "csrf_token": getattr(csrf, "current_token", None) if csrf is not None else None,
           "attachment_rows": attachment_table(env, ops, **urls), **urls,
           "operation_url": url_pattern("operations.show", "operation_id"),
           "attach_message": None, "attach_error": None,
           "next": nxt if nxt in NEXT_TARGETS else None}
    ctx.update(forms)
    ctx.update(kw)
    return ctx


# --------------------------------------------------------------------------- variables

_URL_SENTINEL = 987654321


def url_pattern(endpoint: str, *names: str, **fixed):
    """``f(*ids) -> URL`` of ``endpoint`` with the integer URL parameters ``names`` (in that
    order), built by the router once: url_for for every row and link adds up on a table of
    150 rows. ``fixed`` are the parameters every row shares."""
    sentinels = [str(_URL_SENTINEL + i) for i in range(len(names))]
    built = url_for(endpoint, **fixed, **{n: int(v) for n, v in zip(names, sentinels)})
    parts = re.split("(" + "|".join(sentinels) + ")", built)
    text, slots = parts[0::2], [sentinels.index(p) for p in parts[1::2]]

    def build(*ids) -> str:
        out = [text[0]]
        for slot, tail in zip(slots, text[1:]):
            out.append(str(int(ids[slot])))
            out.append(tail)
        return "".join(out)
    return build


def _variable_url(endpoint: str, environment_id: int):
    """``variable id -> URL`` of ``endpoint`` for one environment."""
    return url_pattern(endpoint, "variable_id", environment_id=environment_id)


def variable_table(rows: list, slices: dict, edit_url, delete_url, reveal_url) -> list[tuple]:
    """The variables table's rows as the tuples its loop unpacks (``_variables.html``):
    what each row shows, read from the ORM objects and built in Python once, instead of
    some 25 attribute lookups, enum ``.value`` reads and calls per row in the template (a
    page of 150 variables). A tuple is

    (id, key, is_secret, value or None when secret, source, note, overrides, ignored,
    overridable, reveal URL, edit URL, delete URL)

    where ``note`` is (service name, role, slice name) of a managed row's attachment, else
    None; ``overrides`` the source (spaces, not underscores) of the row it overrides, else
    None; ``ignored`` a (variable id, delete URL) per user value this locked key shadows."""
    notes = {sid: (a.service.name, a.role.value, a.service_slice.name)
             for sid, a in slices.items()}
    table = []
    for row in rows:
        var, shadowed = row.variable, row.shadowed
        vid, secret, src = var.id, var.is_secret, var.source.value
        table.append((
            vid, var.key, secret, None if secret else var.value, src,
            notes.get(var.service_slice_id) if src == "managed_attachment" else None,
            shadowed[0].source.value.replace("_", " ") if shadowed else None,
            [(sh.id, delete_url(sh.id)) for sh in shadowed if sh.source.value == "user"],
            var.overridable, reveal_url(vid) if secret else None,
            edit_url(vid) if src == "user" else None,
            delete_url(vid) if src == "user" else None))
    return table


def variables_context(env: Environment, form: VariableForm | None = None, **kw) -> dict:
    slices = {a.service_slice_id: a for a in env.attachments if a.service_slice_id}
    rows = att.variable_rows(env)
    urls = {"edit_url": _variable_url("environments.edit_variable", env.id),
            "delete_url": _variable_url("environments.delete_variable", env.id),
            "reveal_url": _variable_url("environments.reveal_variable", env.id)}
    override = request.args.get("override") if request.method == "GET" else None
    if form is None:
        form = VariableForm(formdata=None)
        if override:
            form.key.data = override
    # Only a form sent back with its errors is an EditVariableForm: every other row's edit
    # form is plain markup in the template (the same fields, names and CSRF token), which
    # keeps a page of 150 variables from building and rendering 50 form objects.
    edit_forms = kw.pop("edit_forms", {})
    action_form = ActionForm(formdata=None)
    csrf = getattr(action_form, "csrf_token", None)  # absent when CSRF is off (tests)
    ctx = {"env": env, "rows": rows, "var_form": form, "slice_attachments": slices,
           "var_message": None, "var_error": None, "edit_forms": edit_forms,
           "action_form": action_form,
           "csrf_token": getattr(csrf, "current_token", None) if csrf is not None else None,
           "table": variable_table(rows, slices, **urls), **urls}
    ctx.update(kw)
    return ctx

