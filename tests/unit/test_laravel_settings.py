"""The Laravel service's typed settings: one owner for the health path and the stop grace.

Every reader -- the container's health check and stop_grace_period (the driver), the
deploy planner's health check of new replicas and its stop timeout, KEYSTONE_HEALTH_PATH --
gets the same value from the same config, and a bad value is refused with its path.
"""
from __future__ import annotations

import pytest

from app.deploys.values import replica_environment
from app.deploys.planning import PlanError, health_settings, stop_timeout
from app.drivers import get_driver
from app.drivers.laravel.settings import LaravelSettings, SettingsError
from app.models import Service
from app.models.enums import ServiceCategory


def _web(config: dict, role: str = "web") -> Service:
    return Service(id=5, name=role, type="laravel", driver_name="laravel",
                   category=ServiceCategory.APPLICATION, process_roles=[role], config=config)


def _container(service: Service) -> dict:
    rendered = get_driver("laravel").render_replica(
        service, image="reg/app@sha256:" + "a" * 64, project_name="ks-web-5-blue",
        container_name="ks-web-5-blue", environment={})
    return rendered.compose["services"][service.process_roles[0]]


def test_defaults():
    s = LaravelSettings.from_config({})
    assert (s.health.path, s.health.interval, s.health.timeout, s.health.retries) == \
        ("/up", 1.0, 3.0, 30)
    assert (s.stop.grace("web"), s.stop.grace("websocket"), s.stop.grace("worker")) == \
        (30, 30, 70)
    assert LaravelSettings.from_config({"job_timeout": 300}).stop.grace("worker") == 310


@pytest.mark.parametrize("config", [{}, {"health": {"path": "/healthz"}}, {"health_path": "/"},
                                    {"health_path": "/old", "health": {"path": "/new"}}])
def test_every_reader_sees_the_same_health_path(config):
    path = LaravelSettings.from_config(config).health.path
    web = _web(config)
    assert get_driver("laravel").health_path(web) == path
    assert f"http://127.0.0.1:8080{path}" in _container(web)["healthcheck"]["test"]
    assert health_settings(config)["path"] == path
    assert replica_environment(web, {})["KEYSTONE_HEALTH_PATH"] == path


@pytest.mark.parametrize("role,config", [("web", {}), ("worker", {}), ("worker", {"job_timeout": 120}),
                                         ("web", {"stop_grace_seconds": 45}),
                                         ("worker", {"stop_grace_seconds": 5})])
def test_every_reader_sees_the_same_stop_grace(role, config):
    grace = LaravelSettings.from_config(config).stop.grace(role)
    assert _container(_web(config, role))["stop_grace_period"] == f"{grace}s"
    assert stop_timeout(role, config, 0) == max(grace, 1)


@pytest.mark.parametrize("config,message", [
    ({"health": {"path": "up"}}, "web.health.path: must start with /"),
    ({"health_path": "/up; id"}, "web.health.path: letters, digits"),
    ({"health": {"path": "/up\n"}}, "web.health.path: letters, digits"),
    ({"health": {"path": "/a b"}}, "web.health.path: letters, digits"),
    ({"health": {"retries": 0}}, "web.health.retries: must be between 1 and 600"),
    ({"health": {"retries": 2.5}}, "web.health.retries: must be a whole number"),
    ({"health": {"interval": "soon"}}, "web.health.interval: must be a number"),
    ({"health": "/up"}, "web.health: must be a mapping"),
    ({"stop_grace_seconds": "long"}, "web.stop_grace_seconds: must be a number"),
    ({"stop_grace_seconds": -1}, "web.stop_grace_seconds: must be between 0 and 86400"),
    ({"job_timeout": 0}, "web.job_timeout: must be between 1 and 86400"),
])
def test_bad_values_are_refused_with_their_path(config, message):
    with pytest.raises(SettingsError) as exc:
        LaravelSettings.from_config(config, where="web")
    assert str(exc.value).startswith(message)
    with pytest.raises(SettingsError, match="^web\\."):
        get_driver("laravel").settings(_web(config))
    with pytest.raises(PlanError, match="^web\\."):
        stop_timeout("web", config, 0, "web")


def test_migration_and_pre_switch_settings_are_typed_and_named_by_path():
    s = LaravelSettings.from_config({"pre_switch_commands": ["php artisan config:cache",
                                                             ["php", "artisan", "view:cache"]]})
    assert s.pre_switch == (("php", "artisan", "config:cache"), ("php", "artisan", "view:cache"))
    assert (s.migration.mode, s.migration.timing, s.migration.argv) == \
        ("auto", "pre_switch", ("php", "artisan", "migrate", "--force"))
    for config, message in (
            ({"migration_mode": "sometimes"}, "web.migration_mode: must be one of"),
            ({"migration_timing": "later"}, "web.migration_timing: must be one of"),
            ({"migration_command": "a\nb"}, "web.migration_command: one line"),
            ({"migration_command": "-rf /"}, "web.migration_command: "),
            ({"pre_switch_commands": "php artisan x"}, "web.pre_switch_commands: must be a list"),
            ({"pre_switch_commands": ["ok", ["--x"]]}, "web.pre_switch_commands[1]: "),
            ({"pre_switch_commands": [[]]}, "web.pre_switch_commands[0]: ")):
        with pytest.raises(SettingsError) as exc:
            LaravelSettings.from_config(config, where="web")
        assert str(exc.value).startswith(message), str(exc.value)
