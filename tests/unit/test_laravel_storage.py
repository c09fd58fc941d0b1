"""Laravel's storage/ on a named volume per environment per server (issue 13, defect 3)."""
import yaml

from app.builds.config import BuildConfig
from app.builds.dockerfile import render_dockerfile
from app.deploys.image import image_files
from app.drivers import get_driver
from app.drivers.laravel.driver import STORAGE_PATH, storage_volume_name
from app.models import Service
from app.models.enums import ServiceCategory

DIGEST = "sha256:" + "ab" * 32
LARAVEL_DIRS = ("storage/app/public", "storage/framework/cache", "storage/framework/sessions",
                "storage/framework/views", "storage/logs")


def laravel(id_, roles, environment_id=42, **config):
    return Service(id=id_, name=roles[0], type="laravel", driver_name="laravel",
                   category=ServiceCategory.APPLICATION, process_roles=roles, config=config,
                   environment_id=environment_id)


def render(service, **kw):
    kw.setdefault("project_name", f"ks-{service.name}-{service.id}-r1")
    kw.setdefault("container_name", kw["project_name"])
    rendered = get_driver("laravel").render_replica(
        service, image=f"registry.test/shop@{DIGEST}", environment={"APP_ENV": "production"},
        replica_id=1, **kw)
    # The YAML written to the server says the same as the document.
    assert yaml.safe_load(rendered.compose_yaml) == rendered.compose
    return rendered.compose


def test_every_role_mounts_the_environments_storage_volume():
    volume = storage_volume_name(42)
    assert volume == "keystone_env_42_storage"
    for roles in (["web"], ["worker"], ["websocket"]):
        doc = render(laravel(7, roles))
        (entry,) = doc["services"].values()
        assert entry["volumes"] == [f"{volume}:{STORAGE_PATH}"]
        assert STORAGE_PATH == "/var/www/html/storage"
        # An explicit name: no Compose project prefix, so every replica's project (blue,
        # green, the worker's) gets the SAME volume, and it outlives each project.
        assert doc["volumes"] == {volume: {"name": volume}}
        assert "external" not in doc["volumes"][volume]


def test_blue_green_replicas_and_the_worker_of_one_environment_use_one_volume():
    web = laravel(7, ["web"])
    worker = laravel(8, ["worker"])
    blue = render(web, project_name="ks-web-7-r1")
    green = render(web, project_name="ks-web-7-r2")
    wk = render(worker, project_name="ks-worker-8-r3")
    names = {next(iter(d["volumes"])) for d in (blue, green, wk)}
    assert names == {"keystone_env_42_storage"}


def test_another_environment_gets_another_volume():
    a = render(laravel(7, ["web"], environment_id=1))
    b = render(laravel(9, ["web"], environment_id=2))
    assert set(a["volumes"]) == {"keystone_env_1_storage"}
    assert set(b["volumes"]) == {"keystone_env_2_storage"}


def test_a_service_outside_an_environment_has_no_volume():
    doc = render(laravel(7, ["web"], environment_id=None))
    assert "volumes" not in doc and "volumes" not in doc["services"]["web"]


def test_the_image_makes_the_directories_and_links_public_storage():
    dockerfile = render_dockerfile(BuildConfig())
    # Built as the app user, so Docker copies them, owned by it, into a new empty volume.
    install = dockerfile[dockerfile.index("RUN composer install"):]
    install = install[:install.index("\nENV KEYSTONE_COMMIT")]
    users = [line for line in dockerfile[:dockerfile.index("RUN composer install")].splitlines()
             if line.startswith("USER ")]
    assert users[-1] == "USER www-data"
    for directory in LARAVEL_DIRS:
        assert directory in install
    assert "php artisan storage:link" in install
    # The entry script creates any directory missing from an existing volume, as the app user.
    entry = image_files()["entry.sh"][0].decode()
    for directory in LARAVEL_DIRS:
        assert directory in entry
