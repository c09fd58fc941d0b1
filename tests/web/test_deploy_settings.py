"""A Laravel service's deploy settings in its advanced section (issue 21.6, SPEC 17, 18).

The page writes Service.config through the one typed writer; the readers (deploy planner,
compose renderer, manual migrations) read the same values back through LaravelSettings.
"""
from __future__ import annotations

import pytest

from app.deploys.planning import health_settings, migration_settings, stop_timeout
from app.drivers import get_driver
from app.drivers.laravel.settings import LaravelSettings
from app.models import Service
from tests.conftest import sign_in
from tests.factories import build_org


@pytest.fixture()
def g(app, client, db):
    graph = build_org()
    sign_in(client, graph.user)
    return graph


def _url(g):
    return f"/environments/{g.environment.id}/services/{g.web.id}/settings"


FULL = {"migration_mode": "manual", "migration_timing": "post_switch",
        "migration_command": "php artisan migrate --force --step",
        "pre_switch_commands": "php artisan config:cache\n\nphp artisan event:cache --no-ansi\n",
        "health_path": "/healthz", "health_interval": "0.5", "health_timeout": "2",
        "health_retries": "12", "stop_grace_seconds": "45"}


def _post(client, g, auth, **changes):
    return client.post(_url(g), data={"csrf_token": auth.csrf(), **FULL, **changes})


def test_the_environment_page_links_the_settings_of_its_laravel_services(client, g):
    html = client.get(f"/environments/{g.environment.id}").get_data(as_text=True)
    assert f'href="{_url(g)}"' in html
    page = client.get(_url(g)).get_data(as_text=True)
    for name in ("migration_mode", "migration_timing", "migration_command", "pre_switch_commands",
                 "health_path", "health_interval", "health_timeout", "health_retries",
                 "stop_grace_seconds"):
        assert f'name="{name}"' in page
    assert 'value="/up"' in page and "php artisan migrate --force" in page


def test_saving_writes_each_setting_to_its_one_owner_and_every_reader_sees_it(client, db, g, auth):
    resp = _post(client, g, auth)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.session.expire_all()
    web = db.session.get(Service, g.web.id)
    assert web.config["pre_switch_commands"] == [["php", "artisan", "config:cache"],
                                                 ["php", "artisan", "event:cache", "--no-ansi"]]
    s = LaravelSettings.from_config(web.config, "web")
    assert (s.migration.mode, s.migration.timing) == ("manual", "post_switch")
    assert migration_settings(web.config) == ("manual", "post_switch",
                                              "php artisan migrate --force --step")
    assert health_settings(web.config) == {"path": "/healthz", "interval": 0.5, "timeout": 2.0,
                                           "retries": 12}
    assert stop_timeout("web", web.config, 0) == 45
    assert get_driver("laravel").health_path(web) == "/healthz"
    # the page reads back what it wrote
    page = client.get(_url(g)).get_data(as_text=True)
    assert "php artisan event:cache --no-ansi" in page and 'value="/healthz"' in page
    # empty optional fields give the defaults back
    resp = _post(client, g, auth, health_interval="", health_timeout="", health_retries="",
                 stop_grace_seconds="", pre_switch_commands="")
    assert resp.status_code == 302
    db.session.expire_all()
    web = db.session.get(Service, g.web.id)
    assert "pre_switch_commands" not in web.config and "stop_grace_seconds" not in web.config
    assert health_settings(web.config) == {"path": "/healthz", "interval": 1.0, "timeout": 3.0,
                                           "retries": 30}


@pytest.mark.parametrize("changes,message", [
    ({"health_path": "healthz"}, "web.health.path: must start with /"),
    ({"health_path": "/up; reboot"}, "web.health.path: letters, digits"),
    ({"migration_command": "--force"}, "web.migration_command: "),
    ({"migration_command": "php 'artisan"}, "web.migration_command: The command cannot be split"),
    ({"pre_switch_commands": "php artisan ok\n$(reboot)"}, "web.pre_switch_commands line 2:"),
    ({"pre_switch_commands": "php 'unclosed"}, "web.pre_switch_commands line 1:"),
    ({"migration_mode": "sometimes"}, "Not a valid choice"),
    ({"health_retries": "0"}, "Number must be between 1 and 600"),
    ({"stop_grace_seconds": "-5"}, "Number must be between 0 and 86400"),
])
def test_bad_values_are_refused_on_their_field_and_nothing_is_written(client, db, g, auth,
                                                                       changes, message):
    before = dict(g.web.config or {})
    resp = _post(client, g, auth, **changes)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and message in html
    db.session.expire_all()
    assert dict(db.session.get(Service, g.web.id).config or {}) == before


def test_only_laravel_services_of_this_environment(client, db, g):
    assert client.get(f"/environments/{g.environment.id}/services/{g.postgres.id}/settings") \
        .status_code == 404
    other = build_org(email="other@example.com", organisation="Other")
    assert client.get(f"/environments/{g.environment.id}/services/{other.web.id}/settings") \
        .status_code == 404


def test_saving_without_csrf_is_refused(client, db, g):
    resp = client.post(_url(g), data=FULL)
    assert resp.status_code == 400
    db.session.expire_all()
    assert "pre_switch_commands" not in (db.session.get(Service, g.web.id).config or {})
