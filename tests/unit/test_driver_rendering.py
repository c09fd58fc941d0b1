"""Golden-file tests of every driver's rendering (compose.yml, .env, Caddyfile, ACL file).

Regenerate after an intended change with KEYSTONE_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from app.drivers import RenderContext, get_driver
from app.drivers.base import Resources
from app.models import Service, ServiceReplica, ServiceSlice
from app.models.enums import ServiceCategory, SliceStatus, SliceType

GOLDEN = Path(__file__).parent / "golden"
DIGEST = "sha256:" + "ab" * 32


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("KEYSTONE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {name} missing: run with KEYSTONE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"rendering differs from golden/{name}"


def svc(type_, id_=12, name="main", **kw) -> Service:
    cats = {"postgres": ServiceCategory.DATABASE, "valkey": ServiceCategory.CACHE,
            "caddy": ServiceCategory.GATEWAY, "laravel": ServiceCategory.APPLICATION}
    kw.setdefault("config", {})
    return Service(id=id_, name=name, type=type_, driver_name=type_, category=cats[type_],
                   **kw)


def ctx(driver, service, **kw) -> RenderContext:
    env = kw.pop("environment", None)
    if env is None:
        env = driver.service_environment(service)
    return RenderContext(image=f"example/{service.type}@{DIGEST}", project_name=f"ks-svc-{service.id}",
                         container_name=f"ks-{service.name}-{service.id}", operation_id=41,
                         replica_id=7, environment=env,
                         resources=kw.pop("resources", driver.resources_for(service)), **kw)


def test_postgres_compose_golden():
    pg = get_driver("postgres")
    s = svc("postgres", secrets={"superuser_password": "S3cretSuperuser"},
            default_cpu_limit=1.0, default_memory_limit_mb=1024)
    r = pg.render_compose(s, ctx(pg, s))
    golden("postgres/compose.yml", r.compose_yaml)
    golden("postgres/env", r.env_file)
    assert r.compose_path == "/home/keystone/services/12/compose.yml"
    assert r.env_path == "/home/keystone/services/12/.env"
    entry = r.compose["services"]["postgres"]
    assert entry["cpus"] == "1.0" and entry["mem_limit"] == "1024m"
    assert entry["memswap_limit"] == "1024m"
    assert "deploy" not in entry
    assert r.compose["volumes"] == {"keystone_service_12_postgres_data":
                                    {"name": "keystone_service_12_postgres_data"}}


def test_postgres_private_port_only_on_private_ip():
    pg = get_driver("postgres")
    s = svc("postgres", secrets={"superuser_password": "x"}, config={"expose_private": True})
    r = pg.render_compose(s, ctx(pg, s, private_ip="10.0.0.2"))
    assert r.compose["services"]["postgres"]["ports"] == ["10.0.0.2:5432:5432"]
    assert [f.port for f in pg.firewall_rules(s)] == [5432]
    assert pg.firewall_rules(svc("postgres")) == []


def test_valkey_compose_and_acl_golden():
    vk = get_driver("valkey")
    s = svc("valkey", id_=13, name="cache", secrets={"default_password": "DefaultPw"})
    slices = [
        ServiceSlice(id=2, name="shop_production", type=SliceType.VALKEY_NAMESPACE,
                     status=SliceStatus.READY,
                     config={"username": "shop_production", "prefix": "shop_production:"},
                     credentials={"password": "SlicePw1"}),
        ServiceSlice(id=3, name="old", type=SliceType.VALKEY_NAMESPACE,
                     status=SliceStatus.DELETED,
                     config={"username": "old", "prefix": "old:"}, credentials={"password": "x"}),
    ]
    r = vk.render_compose(s, ctx(vk, s))
    golden("valkey/compose.yml", r.compose_yaml)
    golden("valkey/env", r.env_file)
    golden("valkey/users.acl", vk.render_acl(s, slices))
    assert "SlicePw1" not in vk.render_acl(s, slices)
    nopersist = svc("valkey", id_=14, name="c2", secrets={"default_password": "p"},
                    config={"persistence": False})
    r2 = vk.render_compose(nopersist, ctx(vk, nopersist))
    assert "volumes" not in r2.compose
    assert r2.compose["services"]["valkey"]["command"][-2:] == ["--save", ""]


def test_caddy_compose_and_caddyfile_golden():
    from app.drivers.caddy.caddyfile import check_caddyfile
    cd = get_driver("caddy")
    s = svc("caddy", id_=3, name="gateway", config={"acme_email": "ops@example.com"})
    r = cd.render_compose(s, ctx(cd, s, environment={}))
    golden("caddy/compose.yml", r.compose_yaml)
    assert r.compose["services"]["caddy"]["ports"] == ["80:80", "443:443", "443:443/udp"]
    assert "/home/keystone/gateway:/etc/caddy:ro" in r.compose["services"]["caddy"]["volumes"]
    routes = [
        ServiceSlice(id=1, name="shop", type=SliceType.CADDY_ROUTE, status=SliceStatus.READY,
                     config={"hostnames": ["shop.example.com", "www.shop.example.com"],
                             "upstreams": [{"host": "ks-web-5-r8", "port": 8080},
                                           "10.0.0.3:20001"], "health_path": "/up"}),
        ServiceSlice(id=2, name="staging", type=SliceType.CADDY_ROUTE, status=SliceStatus.READY,
                     config={"hostnames": ["staging.shop.test"], "tls": "internal",
                             "upstreams": []}),
        ServiceSlice(id=4, name="plain", type=SliceType.CADDY_ROUTE, status=SliceStatus.READY,
                     config={"hostnames": ["plain.shop.test"], "tls": "off",
                             "upstreams": ["ks-web-5-r9:8080"]}),
    ]
    text = cd.render_gateway_config(s, routes)
    golden("caddy/Caddyfile", text)
    check_caddyfile(text)  # the real caddy binary accepts it


def test_caddyfile_with_websocket_paths_golden():
    """An environment with a websocket (Reverb) service: Reverb's Pusher paths go to its
    blue/green slots through a named path matcher and `handle`, checked on Reverb's own /up;
    the rest to web, checked on the ready path (what _desired_route writes)."""
    from app.drivers.caddy.caddyfile import check_caddyfile
    cd = get_driver("caddy")
    s = svc("caddy", id_=3, name="gateway")
    health = {"interval": "500ms", "timeout": "1s", "fails": 1, "passes": 1}
    route = ServiceSlice(
        id=1, name="shop", type=SliceType.CADDY_ROUTE, status=SliceStatus.READY,
        config={"hostnames": ["shop.example.com"], "service_id": 5,
                "upstreams": ["web-5-blue.internal:8080", "web-5-green.internal:8080",
                              "10.0.0.3:20010", "10.0.0.3:20011"],
                "health_path": "/.keystone/ready", "health": health, "dial_timeout": "1s",
                "path_routes": [{"name": "websocket", "paths": ["/app/*", "/apps/*"],
                                 "service_id": 9, "health_path": "/up",
                                 "upstreams": ["websocket-9-blue.internal:8080",
                                               "websocket-9-green.internal:8080",
                                               "10.0.0.3:20018", "10.0.0.3:20019"]}]})
    waiting = ServiceSlice(
        id=2, name="new", type=SliceType.CADDY_ROUTE, status=SliceStatus.READY,
        config={"hostnames": ["new.shop.test"], "tls": "off", "upstreams": [],
                "path_routes": [{"name": "websocket", "paths": ["/app/*", "/apps/*"],
                                 "upstreams": []}]})
    text = cd.render_gateway_config(s, [route, waiting])
    golden("caddy/Caddyfile.websocket", text)
    check_caddyfile(text)  # the real caddy binary accepts it
    assert text.count("health_uri /.keystone/ready") == 1 and text.count("health_uri /up") == 1
    assert text.count("stream_close_delay 5m") == 2


def test_laravel_roles_golden():
    lv = get_driver("laravel")
    s = svc("laravel", id_=5, name="web", process_roles=["web"],
            default_cpu_limit=0.5, default_memory_limit_mb=512)
    env = {"APP_ENV": "production", "APP_KEY": "base64:abc=", "DB_HOST": "main-12.internal",
           "WEIRD": "${HOME} $(id)"}
    r = lv.render_replica(s, image=f"registry.test/shop@{DIGEST}", project_name="ks-web-5-r8",
                          container_name="ks-web-5-r8", environment=env, replica_id=8,
                          operation_id=41, private_ip="10.0.0.2",
                          published_port=20001)
    golden("laravel/web-compose.yml", r.compose_yaml)
    assert set(r.compose["services"]) == {"web"}  # no scheduler container (SPEC 8: a role)
    golden("laravel/web-env", r.env_file)
    assert r.directory == "/home/keystone/services/5/replicas/ks-web-5-r8"
    assert r.compose["services"]["web"]["environment"] == {"WEIRD": "$${HOME} $$(id)"}
    worker = svc("laravel", id_=6, name="worker", process_roles=["worker"],
                 config={"queues": ["high", "default"], "job_timeout": 120})
    rw = lv.render_replica(worker, image=f"registry.test/shop@{DIGEST}",
                           project_name="ks-worker-6-r9", container_name="ks-worker-6-r9",
                           environment={"APP_ENV": "production"}, replica_id=9)
    golden("laravel/worker-compose.yml", rw.compose_yaml)
    w = rw.compose["services"]["worker"]
    assert w["command"][:3] == ["php", "artisan", "queue:work"]
    assert w["stop_signal"] == "SIGTERM" and w["stop_grace_period"] == "130s"
    ws = svc("laravel", id_=7, name="ws", process_roles=["websocket"])
    rs = lv.render_replica(ws, image="x/y@" + DIGEST, project_name="ks-ws-7-r1",
                           container_name="ks-ws-7-r1", environment={}, replica_id=1)
    golden("laravel/websocket-compose.yml", rs.compose_yaml)


def test_replica_resources_override_service():
    lv = get_driver("laravel")
    s = svc("laravel", id_=5, name="web", default_cpu_limit=2.0, default_memory_limit_mb=2048)
    rep = ServiceReplica(id=1, cpu_limit=0.5, memory_limit_mb=None)
    assert lv.resources_for(s, rep) == Resources(cpus=0.5, memory_mb=2048)
    assert lv.resources_for(svc("laravel")) == Resources(None, None)
    assert Resources(None, None).compose() == {}


def test_every_rendered_compose_is_plain_yaml_with_no_unescaped_dollar():
    """A single `$` in a compose file would be interpolated; all must be `$$`."""
    import re
    for path in GOLDEN.rglob("*compose.yml"):
        text = path.read_text()
        yaml.safe_load(text)
        assert not re.search(r"(?<!\$)\$(?!\$)", text.replace("$$", "")), path


@pytest.mark.parametrize("bad", ["My Project", "-x", "a" * 70, "UPPER"])
def test_replica_names_are_checked(bad):
    from app.drivers import DriverError
    lv = get_driver("laravel")
    with pytest.raises(DriverError):
        lv.render_replica(svc("laravel"), image="x@" + DIGEST, project_name=bad,
                          container_name="ok", environment={})


def test_registry_by_type():
    from app.drivers import UnknownDriver, all_drivers
    assert set(all_drivers()) >= {"caddy", "laravel", "postgres", "valkey"}
    for d in all_drivers().values():
        assert d.type and d.version_track and d.category
        # A driver without a container (the builder: the server's engine builds) has no image.
        assert bool(d.default_image) == d.runs_container, d.type
    assert get_driver(svc("postgres")).type == "postgres"
    with pytest.raises(UnknownDriver, match="known: builder, caddy"):
        get_driver("mysql")
    pg = get_driver("postgres")
    assert pg.secret_keys == {"POSTGRES_PASSWORD"}
    assert pg.image(svc("postgres", config={"image": "127.0.0.1:5055/x/postgres:18"})) \
        == "127.0.0.1:5055/x/postgres:18"
    assert pg.image(svc("postgres")) == "postgres:18"


@pytest.mark.skipif(not __import__("shutil").which("docker-compose"),
                    reason="docker-compose v1 not installed")
def test_every_golden_compose_file_passes_docker_compose_config(tmp_path):
    """The real docker-compose v1.29 parser accepts each rendered file (as on sandbox servers)."""
    import subprocess
    for path in sorted(GOLDEN.rglob("*compose.yml")):
        d = tmp_path / path.parent.name / path.stem
        d.mkdir(parents=True)
        (d / "compose.yml").write_text(path.read_text())
        (d / ".env").write_text("")
        (d / "compose.env").write_text("")
        proc = subprocess.run(["docker-compose", "--project-name", "ks-golden",
                               "--project-directory", str(d), "-f", str(d / "compose.yml"),
                               "--env-file", str(d / "compose.env"), "config", "-q"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"


def _renders_of_every_driver():
    """One render of each registered driver (each Laravel role as a replica)."""
    from app.drivers import all_drivers
    for type_, driver in sorted(all_drivers().items()):
        if not driver.runs_container:
            continue  # the builder: a server role, nothing to render
        if type_ == "laravel":
            from app.drivers.laravel.driver import ROLES
            for role in ROLES:
                s = svc("laravel", id_=5, name=role, process_roles=[role])
                yield f"laravel/{role}", driver.render_replica(
                    s, image=f"x/y@{DIGEST}", project_name=f"ks-{role}-5-r1",
                    container_name=f"ks-{role}-5-r1", environment={"APP_ENV": "production"},
                    replica_id=1, operation_id=3)
        else:
            s = svc(type_)
            driver.ensure_secrets(s)
            yield type_, driver.render_compose(s, ctx(driver, s))


def test_every_rendered_compose_service_has_bounded_json_file_logs():
    """Issue 23: a container's log cannot fill the disk: json-file with a size and a count
    limit on every service of every driver's render (and of every golden file)."""
    seen = 0
    docs = [(name, r.compose) for name, r in _renders_of_every_driver()]
    docs += [(str(p), yaml.safe_load(p.read_text())) for p in GOLDEN.rglob("*compose.yml")]
    for name, doc in docs:
        for service_name, entry in doc["services"].items():
            logging = entry.get("logging") or {}
            assert logging.get("driver") == "json-file", (name, service_name)
            options = logging.get("options") or {}
            assert options.get("max-size", "").endswith("m"), (name, service_name)
            assert int(options.get("max-file", "0")) >= 1, (name, service_name)
            seen += 1
    assert seen >= 8
