"""Hostile input: every payload of the table (tests/security/payloads.py) in every field
of every form, the forms enumerated from the code. Each payload is refused with a
message or kept byte for byte, never a 500; values that reach a rendered env file,
Compose file, Caddyfile or Dockerfile parse back as one document carrying them verbatim.
"""
from __future__ import annotations

import inspect
import re
from urllib.parse import quote_from_bytes

import pytest
import sqlalchemy as sa
import yaml
from werkzeug.datastructures import MultiDict

from app.forms import MULTI_LINE_FORBIDDEN, SINGLE_LINE_FORBIDDEN, KeystoneForm
from tests.conftest import csrf_token_from, sign_in
from tests.factories import build_org
from tests.security.payloads import PAYLOADS, as_text

TEXT_PAYLOADS = [p for p in PAYLOADS if isinstance(p, str)]


def _all_forms() -> list[type]:
    import app.blueprints  # noqa: F401  (imports every blueprint module and its forms)
    from app.blueprints import register_blueprints  # noqa: F401
    seen, todo = [], list(KeystoneForm.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def _encode(fields: dict[str, str | bytes]) -> bytes:
    parts = []
    for name, value in fields.items():
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
        parts.append(quote_from_bytes(name.encode()) + b"=".decode() + quote_from_bytes(raw))
    return "&".join(parts).encode()


# ----------------------------------------------------------------- forms, field by field

def test_the_table_is_big_enough():
    assert len(PAYLOADS) >= 150
    assert any(isinstance(p, bytes) for p in PAYLOADS)


def test_every_field_of_every_form_refuses_or_keeps_each_payload(app):
    """Form level, all forms x all fields x all payloads: no exception; an accepted text
    value is the payload itself (or it with surrounding whitespace trimmed) and holds
    no control character."""
    forms = _all_forms()
    assert len(forms) >= 15, [f.__name__ for f in forms]
    driven = 0
    for form_cls in forms:
        probe = None
        with app.test_request_context(method="POST"):
            probe = form_cls(meta={"csrf": False}, formdata=MultiDict())
            names = [f.name for f in probe]
        for name in names:
            for payload in PAYLOADS:
                text = as_text(payload)
                with app.test_request_context(method="POST"):
                    form = form_cls(meta={"csrf": False}, formdata=MultiDict({name: text}))
                    form.validate()
                    field = form[name]
                    driven += 1
                    if field.errors or not isinstance(field.data, str):
                        continue
                    assert field.data in (text, text.strip()), (form_cls.__name__, name, text)
                    pattern = (MULTI_LINE_FORBIDDEN if field.type == "TextAreaField"
                               else SINGLE_LINE_FORBIDDEN)
                    assert not pattern.search(field.data), (form_cls.__name__, name, text)
    assert driven >= 150 * 40


# ----------------------------------------------------------------- over HTTP, every route

def _post_rules(app):
    """(rule, form classes its view uses): found by reading the view's code and the
    module functions it calls, so a new form on a new route is driven automatically."""
    forms = {cls.__name__: cls for cls in _all_forms()}
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods:
            continue
        view = inspect.unwrap(app.view_functions[rule.endpoint])
        module = inspect.getmodule(view)
        names, todo, seen = set(), [view], set()
        while todo:
            fn = todo.pop()
            if fn in seen or not hasattr(fn, "__code__"):
                continue
            seen.add(fn)
            code_names = set(fn.__code__.co_names)
            for const in fn.__code__.co_consts:
                if hasattr(const, "co_names"):
                    code_names |= set(const.co_names)
            names |= code_names
            for n in code_names:
                target = getattr(module, n, None)
                if inspect.isfunction(target) and target.__module__ == module.__name__:
                    todo.append(target)
        used = [forms[n] for n in names if n in forms]
        yield rule, used


def _field_names(app, form_classes) -> list[str]:
    names = []
    with app.test_request_context(method="POST"):
        for cls in form_classes:
            for field in cls(meta={"csrf": False}, formdata=MultiDict()):
                if field.name != "csrf_token" and field.name not in names:
                    names.append(field.name)
    return names


@pytest.fixture()
def owner(app, client):
    graph = build_org()
    sign_in(client, graph.user)
    return graph


STRIDE = 6  # over HTTP each route gets every 6th payload (offset by the route), so every
# payload reaches several routes and the suite stays within its CI budget; the form-level
# test above drives every payload through every field.


def test_every_post_route_survives_the_payloads(app, client, owner, monkeypatch):
    """Every POST route, with payloads in every field its forms declare (and in the
    prefixed names the environment page uses): never a 500."""
    import app.providers.custom as custom
    from app.providers import ProviderError
    # No network from this suite: the custom-server check answers "no SSH" at once.
    monkeypatch.setattr(custom, "probe_host_key",
                        lambda host, port, timeout=10: (_ for _ in ()).throw(
                            ProviderError("no SSH host key", "unreachable")))
    app.config["RATELIMIT_ENABLED"] = False
    from app.extensions import limiter
    monkeypatch.setattr(limiter, "enabled", False)
    ids = owner.ids()
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    routes, requests = 0, 0
    for rule, form_classes in _post_rules(app):
        if rule.endpoint in ("auth.logout",):
            continue
        names = _field_names(app, form_classes)
        prefixed = [f"{p}-{n}" for n in names for p in ("pg", "kv", "dom")] \
            if rule.endpoint.startswith("services.") else []
        values = {a: ids.get(a, "x") for a in rule.arguments}
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        routes += 1
        for payload in PAYLOADS[routes % STRIDE::STRIDE]:
            body = _encode({"csrf_token": token, **{n: payload for n in names + prefixed}})
            resp = client.post(url, data=body, content_type="application/x-www-form-urlencoded",
                               headers={"HX-Request": "true"})
            requests += 1
            assert resp.status_code < 500, (rule.rule, payload, resp.status_code)
            resp.close()
    assert routes >= 25 and requests >= routes * (len(PAYLOADS) // STRIDE)


# ----------------------------------------------------------------- stored byte for byte

def test_variable_values_are_refused_or_stored_byte_for_byte(app, client, owner):
    from app.models import EnvironmentVariable
    token = csrf_token_from(client.get("/").get_data(as_text=True))
    url = f"/environments/{owner.environment.id}/variables"
    stored = 0
    key = "HOSTILE"  # one key, overwritten: the re-rendered section stays small
    for payload in PAYLOADS:
        resp = client.post(url, data=_encode({"csrf_token": token, "key": key, "value": payload}),
                           content_type="application/x-www-form-urlencoded",
                           headers={"HX-Request": "true"})
        assert resp.status_code < 500, (payload, resp.status_code)
        row = app.extensions["sqlalchemy"].session.execute(
            sa.select(EnvironmentVariable).where(EnvironmentVariable.key == key)).scalar_one_or_none()
        html = resp.get_data(as_text=True)
        accepted = row is not None and row.value == as_text(payload) if isinstance(payload, str) \
            else resp.status_code < 400
        if not accepted:
            # Refused: the field says why (HTMX swaps answer 200, full pages 400).
            assert resp.status_code in (200, 400) and 'class="errors"' in html, (
                len(as_text(payload)), row and len(row.value), resp.status_code, html[:300])
        elif isinstance(payload, bytes) and row is not None:
            # Invalid UTF-8 never reaches storage raw: Werkzeug decodes the form to text.
            row.value.encode("utf-8")
            stored += 1
        else:
            stored += 1
    assert stored >= 100


def _parse_env_file(text: str) -> dict[str, str]:
    """Compose's reading of a double-quoted env-file entry: \\\\ \\" \\n \\r unescaped."""
    out = {}
    for line in text.split("\n"):  # Compose splits env files on LF only
        if not line or line.startswith("#"):
            continue
        key, _, quoted = line.partition("=")
        assert quoted.startswith('"') and quoted.endswith('"'), line
        body, value, i = quoted[1:-1], [], 0
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                value.append({"n": "\n", "r": "\r", '"': '"', "\\": "\\"}.get(body[i + 1],
                                                                            "\\" + body[i + 1]))
                i += 2
                continue
            assert ch != '"', line
            value.append(ch)
            i += 1
        out[key] = "".join(value)
    return out


@pytest.mark.parametrize("payload", TEXT_PAYLOADS, ids=range(len(TEXT_PAYLOADS)))
def test_env_and_compose_values_parse_back_verbatim(payload):
    from app.drivers.compose import dump_yaml, escape_dollars
    from app.drivers.envfile import EnvValueError, render_env_file, split_environment
    try:
        file_part, compose_part = split_environment({"HOSTILE": payload})
    except EnvValueError:
        assert "\x00" in payload
        return
    if file_part:
        assert _parse_env_file(render_env_file(file_part)) == {"HOSTILE": payload}
    if compose_part:
        doc = dump_yaml({"services": {"app": {"environment": {
            k: escape_dollars(v) for k, v in compose_part.items()}}}})
        loaded = yaml.safe_load(doc)
        assert list(loaded) == ["services"]
        assert loaded["services"]["app"]["environment"]["HOSTILE"].replace("$$", "$") == payload


@pytest.mark.parametrize("payload", TEXT_PAYLOADS, ids=range(len(TEXT_PAYLOADS)))
def test_caddyfile_hostnames_and_dockerfile_settings_are_refused_or_verbatim(payload):
    from app.builds.config import BuildConfigError, parse_build_config
    from app.builds.dockerfile import render_dockerfile
    from app.drivers.caddy.caddyfile import validate_hostname
    try:
        host = validate_hostname(payload)
    except ValueError:  # CaddyfileError, with the value named
        pass
    else:
        assert host == payload.strip().lower().rstrip(".") and re.fullmatch(r"[a-z0-9.*-]+", host)
    # The health path's one owner is the web service's settings (it reaches a probe's URL).
    from app.drivers.laravel.settings import HEALTH_PATH_RE, HealthSettings, SettingsError
    try:
        path = HealthSettings.from_config({"health": {"path": payload}}, "web").path
    except SettingsError:
        pass
    else:
        assert path == (payload or "/up") and HEALTH_PATH_RE.fullmatch(path)  # empty: default
    for key in ("php_version", "document_root", "base_image"):
        try:
            config = parse_build_config({key: payload})
        except BuildConfigError:
            continue
        dockerfile = render_dockerfile(config)
        assert payload in dockerfile and "\n" not in payload and "\r" not in payload
