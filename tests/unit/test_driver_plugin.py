"""Drivers are open for extension (issue 16, section 1).

A toy driver, written in this module only, plugs into its own
:class:`~app.drivers.registry.DriverRegistry` and goes through what the
generic code asks of a driver: a new service from the form fields it offers,
the deploy plan (compose project, files before start, volumes, firewall) and
its slice plans (provision, delete) with the variables an attachment gets.
Nothing outside this module is edited for it, and Keystone's own registry
never sees it.

The second half runs real drivers' plans through the generic runner
(:func:`app.services_ops.steps.run_plan`) with a recording stand-in for the
operations engine's step: the runner is pure control flow over the plan.
"""
from __future__ import annotations

from typing import Any

import pytest

from app.drivers import drivers as keystone_drivers, get_driver
from app.drivers.base import (Driver, DriverError, ExportField, FirewallRule, FormField,
                              HealthCheck, PortSpec, RenderContext, VolumeSpec, service_dir)
from app.drivers.compose import base_service
from app.drivers.plan import Mkdir, PutFile, Run, StepPlan
from app.drivers.registry import DriverRegistry, UnknownDriver
from app.models import Server, Service, ServiceReplica, ServiceSlice
from app.models.enums import AttachmentRole, ReplicaStatus, ServiceCategory, SliceStatus
from app.operations import StepFailed
from app.registries.images import ImageError
from app.services_ops.create import build_service
from app.services_ops.deploy import plan_service_deploy
from app.services_ops.steps import run_plan
from app.shell import Secret, cmd

DIGEST = "sha256:" + "5e" * 32

# --------------------------------------------------------------------------- the toy driver

toys = DriverRegistry()
TOY_SLICE = "toy_bucket"  # a real driver adds its SliceType value (a CHECK constraint: a migration)


@toys.register
class ToyDriver(Driver):
    """A key-value store: one container, one volume, buckets as slices."""

    type = "toykv"
    category = ServiceCategory.CACHE
    version_track = "1"
    default_image = "toykv:1"
    label = "ToyKV 1 (buckets)"
    short_label = "ToyKV 1"
    ports = (PortSpec("kv", 7070, cross_server=True),)
    volumes = (VolumeSpec("kv_data", "/data"),)
    slice_types = (TOY_SLICE,)
    user_slice_type = TOY_SLICE
    attach_roles = (AttachmentRole.CACHE,)
    exports = (ExportField("KV_URL", secret=True, overridable=False),)
    recommended = {AttachmentRole.CACHE: (("CACHE_STORE", "toykv"),)}
    form_fields = (FormField("image", "Image override"),
                   FormField("expose_private", "Private network", kind="checkbox"),
                   FormField("buckets_max", "Most buckets"))
    health_check = HealthCheck(("toykv", "ping"))

    def compose_service(self, service: Service, ctx: RenderContext) -> dict[str, Any]:
        entry = base_service(self, service, ctx)
        entry["command"] = ["toykv", "--config", "/etc/toykv/toykv.conf"]
        entry["volumes"] = [f"{v.volume_name(service.id)}:{v.mount_path}" for v in self.volumes]
        entry["volumes"].append(f"{service_dir(service.id)}/conf:/etc/toykv:ro")
        entry["healthcheck"] = self.health_check.compose()
        return entry

    def deploy_steps(self, service, *, running):
        conf = f"max_buckets {int((service.config or {}).get('buckets_max', 16))}\n"
        return [StepPlan("Write ToyKV configuration",
                         (Mkdir(f"{service_dir(service.id)}/conf"),
                          PutFile(f"{service_dir(service.id)}/conf/toykv.conf", conf)))]

    def env_exports(self, service, slice_, host, port=None):
        password = (slice_.credentials or {}).get("password", "")
        return {"KV_URL": f"kv://{slice_.name}:{password}@{host}:{port or 7070}/{slice_.name}"}

    def slice_provision_steps(self, service, slice_, container, action="provision"):
        password = Secret(slice_.credentials["password"], "bucket password")
        create = cmd("docker", "exec", container, "toykv", "bucket", "create", "--",
                     slice_.name, password)
        check = cmd("docker", "exec", container, "toykv", "bucket", "show", "--", slice_.name)
        missing = f"bucket {slice_.name} is missing"
        return [StepPlan(f"Create bucket {slice_.name}", (Run(create, pty=False),)),
                StepPlan(f"Check bucket {slice_.name}", (Run(
                    check, pty=False,
                    expect=lambda out: None if "exists" in out.split() else missing),))]

    def slice_delete_steps(self, service, slice_, container, *, drop):
        verb = "drop" if drop else "disable"
        return [StepPlan(f"{verb.title()} bucket {slice_.name}", (Run(
            cmd("docker", "exec", container, "toykv", "bucket", verb, "--", slice_.name),
            pty=False),))]


def _server() -> Server:
    return Server(id=3, name="kv-host", private_ip="10.0.0.5")


def _toy(**config) -> Service:
    service = build_service("toykv", _server(), "kv", organisation_id=1, settings=config,
                            registry=toys)
    service.id = 21
    return service


# --------------------------------------------------------------------------- the proof

def test_the_toy_lives_in_its_own_registry_only():
    assert toys.labels() == {"toykv": "ToyKV 1 (buckets)"}
    assert "toykv" not in keystone_drivers
    with pytest.raises(UnknownDriver, match="toykv"):
        get_driver("toykv")
    assert toys.get("toykv").secret_keys == frozenset()


def test_create_keeps_the_form_fields_the_driver_offers():
    service = _toy(image="registry.example.com/toykv:1.4", expose_private=True,
                   buckets_max="64", command="rm -rf /")
    assert (service.type, service.category, service.version_track) == \
        ("toykv", ServiceCategory.CACHE, "1")
    assert service.config == {"image": "registry.example.com/toykv:1.4",
                              "expose_private": True, "buckets_max": "64"}
    assert service.server.name == "kv-host"
    with pytest.raises(ImageError):
        _toy(image="toykv:$(id)")
    with pytest.raises(DriverError, match="choose one of toykv"):
        build_service("postgres", _server(), "db", organisation_id=1, registry=toys)


def test_deploy_plan_renders_the_compose_project_and_the_files_before_start():
    service = _toy(expose_private=True, buckets_max="64")
    driver = toys.get(service)
    plan = plan_service_deploy(driver, service, image=f"toykv@{DIGEST}",
                               container_name="ks-kv-21", running=False, replica_id=4,
                               operation_id=99, private_ip="10.0.0.5")
    entry = plan.rendered.compose["services"]["toykv"]
    assert entry["image"] == f"toykv@{DIGEST}"
    assert entry["container_name"] == "ks-kv-21"
    assert entry["command"] == ["toykv", "--config", "/etc/toykv/toykv.conf"]
    assert "keystone_service_21_kv_data:/data" in entry["volumes"]
    assert entry["healthcheck"]["test"] == ["CMD", "toykv", "ping"]
    assert plan.rendered.directory == "/home/keystone/services/21"
    assert "toykv@" + DIGEST in plan.rendered.compose_yaml
    [write] = plan.before_start
    assert write.files() == {"/home/keystone/services/21/conf/toykv.conf": "max_buckets 64\n"}
    assert plan.volumes == ["keystone_service_21_kv_data"]
    assert plan.firewall == [FirewallRule(7070, "tcp", "toykv 21")]
    assert plan.internal_port == 7070


def test_slice_plans_and_exports():
    service = _toy()
    driver = toys.get(service)
    bucket = ServiceSlice(id=8, service=service, name="cart", type=TOY_SLICE,
                          status=SliceStatus.PENDING, credentials={"password": "pa55-w0rd"})
    create, check = driver.slice_provision_steps(service, bucket, "ks-kv-21")
    [create_cmd] = create.commands()
    assert create_cmd.render().endswith("bucket create -- cart pa55-w0rd")
    assert "pa55-w0rd" not in create_cmd.masked()  # what a step records
    [run_check] = check.actions
    assert run_check.expect("cart exists\n") is None
    assert run_check.expect("no such bucket\n") == "bucket cart is missing"
    [drop] = driver.slice_delete_steps(service, bucket, "ks-kv-21", drop=True)
    assert drop.title == "Drop bucket cart"
    assert drop.commands()[0].render().endswith("bucket drop -- cart")
    assert driver.slice_deleted_steps(service, bucket, "ks-kv-21") == []
    assert driver.env_exports(service, bucket, "kv-21.internal") == {
        "KV_URL": "kv://cart:pa55-w0rd@kv-21.internal:7070/cart"}
    assert driver.attach_recommendations(AttachmentRole.CACHE) == (("CACHE_STORE", "toykv"),)
    assert driver.attach_recommendations(AttachmentRole.QUEUE) == ()
    assert driver.new_slice_credentials(bucket)["password"] != "pa55-w0rd"


# --------------------------------------------------------------------------- the runner

class _Result:
    def __init__(self, stdout: str = "", exit_code: int = 0):
        self.stdout, self.exit_code = stdout, exit_code


class _Step:
    """Records what run_plan does; answers each command from ``answers`` by a word in it."""

    def __init__(self, log: list, name: str, answers: dict[str, _Result]):
        self.log_, self.name, self.answers, self.skipped = log, name, answers, False

    def run(self, command, *, timeout=None, check=True, pty=True):
        text = command.render()
        self.log_.append(("run", text, check))
        result = next((r for word, r in self.answers.items() if word in text), _Result())
        if check and result.exit_code != 0:
            raise StepFailed(f"`{text}` exited with {result.exit_code}")
        return result

    def put_file(self, path, content, mode=0o644):
        self.log_.append(("put", path, mode))

    def mkdir(self, path):
        self.log_.append(("mkdir", path))

    def log(self, text):
        self.log_.append(("log", text))

    def unchanged(self, message=None):
        self.skipped = True
        self.log_.append(("unchanged", message))


class _Ctx:
    def __init__(self, answers: dict[str, _Result] | None = None):
        self.log: list = []
        self.answers = answers or {}

    def step(self, name, server=None):
        ctx = self

        class _Cm:
            def __enter__(self):
                ctx.log.append(("step", name, server))
                return _Step(ctx.log, name, ctx.answers)

            def __exit__(self, *exc):
                return False

        return _Cm()


def test_runner_runs_the_toy_plan_and_fails_on_a_wrong_answer():
    service = _toy()
    bucket = ServiceSlice(id=8, service=service, name="cart", type=TOY_SLICE,
                          credentials={"password": "pw"})
    plans = toys.get(service).slice_provision_steps(service, bucket, "ks-kv-21")
    ok = _Ctx({"show": _Result("cart exists")})
    assert run_plan(ok, "SERVER", plans) is True
    assert [e[:2] for e in ok.log if e[0] == "step"] == [("step", "Create bucket cart"),
                                                         ("step", "Check bucket cart")]
    with pytest.raises(StepFailed, match="bucket cart is missing"):
        run_plan(_Ctx({"show": _Result("")}), "SERVER", plans)


def _gateway() -> Service:
    gw = Service(id=30, name="gw", type="caddy", driver_name="caddy",
                 category=ServiceCategory.GATEWAY, config={})
    gw.slices = [ServiceSlice(id=1, name="shop", type="caddy_route", status=SliceStatus.READY,
                              config={"hostnames": ["shop.example.com"], "tls": "off",
                                      "upstreams": ["web-1.internal:8080"]})]
    return gw


def test_gateway_reconfigure_is_a_no_op_when_the_server_has_the_same_file(monkeypatch):
    import hashlib
    monkeypatch.setattr("app.drivers.caddy.driver.caddy_binary", lambda: None)
    gw = _gateway()
    caddy = get_driver(gw)
    want = hashlib.sha256(caddy.render_gateway_config(gw).encode()).hexdigest()
    ctx = _Ctx({"sha256sum": _Result(f"{want}  /home/keystone/gateway/Caddyfile")})
    assert run_plan(ctx, "SERVER", caddy.reconfigure_steps(gw, "ks-gw-30")) is False
    assert ("unchanged", "the gateway already has this configuration") in ctx.log
    assert not any(e[0] == "put" for e in ctx.log)


def test_gateway_reconfigure_restores_the_last_good_file_when_reload_fails(monkeypatch):
    monkeypatch.setattr("app.drivers.caddy.driver.caddy_binary", lambda: None)
    gw = _gateway()
    ctx = _Ctx({"reload": _Result("", exit_code=1)})
    with pytest.raises(StepFailed, match="previous one is still serving"):
        run_plan(ctx, "SERVER", get_driver(gw).reconfigure_steps(gw, "ks-gw-30"))
    runs = [e[1] for e in ctx.log if e[0] == "run"]
    assert "caddy validate" in runs[1] and "mv -f" in runs[2]
    assert "reload" in runs[3] and "Caddyfile.last-good" in runs[4] and "reload" in runs[5]
    assert ("log", "reload failed: restoring the last good configuration") in ctx.log


def test_valkey_delete_plans_drop_keys_then_rewrite_the_acl_without_the_user():
    vk = Service(id=40, name="vk", type="valkey", driver_name="valkey",
                 category=ServiceCategory.CACHE, secrets={"default_password": "admin-pw"})
    keep = ServiceSlice(id=1, name="a", type="valkey_namespace", status=SliceStatus.READY,
                        config={"username": "a", "prefix": "a:"}, credentials={"password": "x"})
    gone = ServiceSlice(id=2, name="b", type="valkey_namespace", status=SliceStatus.DELETING,
                        config={"username": "b", "prefix": "b:"}, credentials={"password": "y"})
    vk.slices = [keep, gone]
    valkey = get_driver(vk)
    [unlink] = valkey.slice_delete_steps(vk, gone, "ks-vk-40", drop=True)
    assert unlink.title == "Delete keys under b:"
    assert valkey.slice_delete_steps(vk, gone, "ks-vk-40", drop=False) == []
    [acl] = valkey.slice_deleted_steps(vk, gone, "ks-vk-40")
    [text] = acl.files().values()
    assert "user a on" in text and "user b" not in text


def test_postgres_checks_ready_databases_after_an_update_only():
    pg = Service(id=50, name="pg", type="postgres", driver_name="postgres",
                 category=ServiceCategory.DATABASE)
    pg.slices = [ServiceSlice(id=1, name="shop", type="postgres_database",
                              status=SliceStatus.READY, config={}),
                 ServiceSlice(id=2, name="old", type="postgres_database",
                              status=SliceStatus.DELETED, config={})]
    pg.replicas = [ServiceReplica(id=1, container_name="ks-pg-50", status=ReplicaStatus.RUNNING)]
    postgres = get_driver(pg)
    assert postgres.after_deploy_steps(pg, "ks-pg-50", is_update=False) == []
    [check] = postgres.after_deploy_steps(pg, "ks-pg-50", is_update=True)
    assert check.title == "Check database shop"
    [run] = check.actions
    assert run.expect("1:1\n") is None and "missing" in run.expect("0:1\n")
