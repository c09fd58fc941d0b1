"""Attachments, managed variables, recommendations and user variables (database, no server)."""
from __future__ import annotations

import pytest

from app.attachments import (AttachmentError, apply_recommendations, attach_domain,
                             attach_postgres, attach_valkey, effective_environment,
                             queue_sync_warning, recommendations_for,
                             regenerate_managed_variables, request_slice_delete,
                             set_user_variable)
from app.drivers.envfile import EnvKeyError
from app.extensions import db
from app.models import Service
from app.models.enums import (AttachmentRole, EnvironmentStatus, ServiceCategory, SliceStatus,
                              SliceType, VariableSource)
from tests.factories import build_org


@pytest.fixture()
def graph(app):
    g = build_org()
    valkey = Service(organisation=g.org, name="cache", category=ServiceCategory.CACHE,
                     type="valkey", driver_name="valkey", server=g.server)
    gateway = Service(organisation=g.org, name="gateway", category=ServiceCategory.GATEWAY,
                      type="caddy", driver_name="caddy", server=g.server)
    staging = type(g.environment)(application=g.application, name="staging", branch="dev")
    db.session.add_all([valkey, gateway, staging])
    db.session.commit()
    g.valkey, g.gateway, g.staging = valkey, gateway, staging
    return g


def managed(env):
    return {v.key: v for v in env.variables if v.source == VariableSource.MANAGED_ATTACHMENT}


def test_attach_postgres_creates_slice_credentials_and_db_vars(graph):
    env = graph.staging
    att, slice_ = attach_postgres(env, graph.postgres)
    db.session.commit()
    assert slice_.type == SliceType.POSTGRES_DATABASE and slice_.status == SliceStatus.PENDING
    assert slice_.name == "shop_staging"
    assert slice_.config == {"database": "shop_staging", "username": "shop_staging"}
    password = slice_.credentials["password"]
    assert len(password) == 32 and password.isalnum()
    assert att.service_slice is slice_ and att.role == AttachmentRole.DATABASE
    m = managed(env)
    assert {k: m[k].value for k in m} == {
        "DB_CONNECTION": "pgsql", "DB_HOST": f"postgres-{graph.postgres.id}.internal",
        "DB_PORT": "5432", "DB_DATABASE": "shop_staging", "DB_USERNAME": "shop_staging",
        "DB_PASSWORD": password}
    assert m["DB_PASSWORD"].is_secret and not m["DB_PASSWORD"].overridable
    assert m["DB_HOST"].overridable
    assert all(v.service_slice_id == slice_.id for v in m.values())
    with pytest.raises(AttachmentError, match="already attached"):
        attach_postgres(env, graph.postgres)


def test_second_environment_gets_a_distinct_slice_name(graph):
    _, a = attach_postgres(graph.staging, graph.postgres)
    other = type(graph.staging)(application=graph.application, name="staging-2")
    db.session.add(other)
    db.session.flush()
    _, b = attach_postgres(other, graph.postgres)
    assert a.name != b.name


def test_valkey_recommendations_apply_only_on_confirm(graph):
    env = graph.staging
    _, slice_ = attach_valkey(env, graph.valkey)
    db.session.commit()
    m = managed(env)
    assert m["REDIS_HOST"].value == f"cache-{graph.valkey.id}.internal"
    assert m["REDIS_PREFIX"].value == "shop_staging:"
    # Packages that replace the connection prefix stay inside the ACL pattern too.
    assert m["HORIZON_PREFIX"].value == "shop_staging:horizon:"
    assert m["REVERB_SCALING_CHANNEL"].value == "shop_staging:reverb"
    assert not m["HORIZON_PREFIX"].overridable
    assert m["REDIS_USERNAME"].value == slice_.config["username"]
    assert "CACHE_STORE" not in effective_environment(env)
    recs = recommendations_for(env)
    assert [(r.key, r.value) for r in recs] == [("CACHE_STORE", "redis"), ("CACHE_DRIVER", "redis"),
                                                ("SESSION_DRIVER", "redis")]
    with pytest.raises(AttachmentError, match="confirm"):
        apply_recommendations(env, ["CACHE_STORE"], confirmed=False)
    assert "CACHE_STORE" not in effective_environment(env)
    set_user_variable(env, "SESSION_DRIVER", "file")
    apply_recommendations(env, ["CACHE_STORE", "CACHE_DRIVER", "SESSION_DRIVER"], confirmed=True)
    db.session.commit()
    eff = effective_environment(env)
    assert eff["CACHE_STORE"] == "redis" and eff["SESSION_DRIVER"] == "redis"
    assert eff["CACHE_DRIVER"] == "redis"  # Laravel 8-10's name for the same setting
    assert recommendations_for(env) == []


def test_queue_role_recommends_queue_connection_and_sync_warning(graph):
    env = graph.staging
    attach_valkey(env, graph.valkey, role=AttachmentRole.QUEUE)
    assert [r.key for r in recommendations_for(env)] == ["QUEUE_CONNECTION"]
    set_user_variable(env, "QUEUE_CONNECTION", "sync")
    assert queue_sync_warning(env) is None  # not deployed yet
    env.status = EnvironmentStatus.DEPLOYED
    assert "QUEUE_CONNECTION=sync" in queue_sync_warning(env)
    set_user_variable(env, "QUEUE_CONNECTION", "redis")
    assert queue_sync_warning(env) is None


def test_user_variables_override_only_overridable_managed_ones(graph):
    env = graph.staging
    attach_postgres(env, graph.postgres)
    set_user_variable(env, "DB_HOST", "10.0.0.9")
    assert effective_environment(env)["DB_HOST"] == "10.0.0.9"
    with pytest.raises(AttachmentError, match="cannot be overridden"):
        set_user_variable(env, "DB_PASSWORD", "mine")
    # Regeneration never touches user rows and is idempotent.
    assert regenerate_managed_variables(env) == []
    assert effective_environment(env)["DB_HOST"] == "10.0.0.9"


@pytest.mark.parametrize("key,fragment", [("A;id", "';'"), ("A B", "a space"),
                                          ("1A", "starts with a digit")])
def test_user_variable_keys_are_validated(graph, key, fragment):
    with pytest.raises(EnvKeyError, match=fragment):
        set_user_variable(graph.staging, key, "x")


def test_managed_values_follow_the_slice(graph):
    env = graph.staging
    _, slice_ = attach_postgres(env, graph.postgres)
    slice_.credentials = {"password": "rotated"}
    assert regenerate_managed_variables(env) == ["DB_PASSWORD"]
    assert effective_environment(env)["DB_PASSWORD"] == "rotated"
    slice_.status = SliceStatus.DELETED
    regenerate_managed_variables(env)
    assert not [k for k in managed(env) if k.startswith("DB_")]


def test_cross_server_requires_private_exposure(graph):
    from app.attachments import consumer_host
    from app.models import Server
    other = Server(organisation=graph.org, name="web-2", private_ip="10.0.0.3")
    db.session.add(other)
    db.session.flush()
    with pytest.raises(AttachmentError, match="private network"):
        consumer_host(graph.postgres, other.id)
    graph.postgres.config = {"expose_private": True}
    assert consumer_host(graph.postgres, other.id) == "10.0.0.2"
    assert consumer_host(graph.postgres, graph.server.id) == f"postgres-{graph.postgres.id}.internal"


def test_domain_attachment_validates_hosts_and_refuses_duplicates(graph):
    from app.drivers.caddy.caddyfile import CaddyfileError
    with pytest.raises((AttachmentError, CaddyfileError)):
        attach_domain(graph.staging, graph.gateway, ["a.com {\nrespond x\n}"])
    _, route = attach_domain(graph.staging, graph.gateway, ["Shop.Example.com"])
    assert route.config["hostnames"] == ["shop.example.com"]
    with pytest.raises(AttachmentError, match="already routed"):
        attach_domain(graph.environment, graph.gateway, ["shop.example.com"])


def test_slice_delete_needs_the_typed_name(graph):
    _, slice_ = attach_postgres(graph.staging, graph.postgres)
    db.session.commit()
    with pytest.raises(AttachmentError, match="type the slice name"):
        request_slice_delete(slice_, confirm="wrong", enqueue=False)
    op = request_slice_delete(slice_, confirm=slice_.name, enqueue=False)
    assert op.params == {"action": "delete", "drop_data": False, "confirm": slice_.name}
