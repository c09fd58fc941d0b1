"""Registry settings, login commands (password on stdin only) and docker build commands."""
from types import SimpleNamespace

import pytest

from app.builds import commands as dc
from app.models.enums import RegistryType
from app.registries import (RegistryError, auth_commands, normalise_namespace, normalise_url,
                            repository_for, validate_username)
from app.repositories.local import argv_of


def test_registry_urls_are_normalised():
    assert normalise_url("https://Registry.Example.com:5000/") == "registry.example.com:5000"
    assert normalise_url("", RegistryType.GHCR) == "ghcr.io"
    assert normalise_url("", RegistryType.DOCKERHUB) == "docker.io"
    assert normalise_url("index.docker.io", RegistryType.DOCKERHUB) == "docker.io"
    assert normalise_url("127.0.0.1:5055") == "127.0.0.1:5055"


@pytest.mark.parametrize("bad", ["", "-oX", "host name", "host;id", "host/path", "$(id)",
                                 "host:99999", "a\nb", "x" * 300])
def test_bad_registry_urls_are_refused(bad):
    with pytest.raises(RegistryError, match="^url:"):
        normalise_url(bad)


def test_namespaces_and_usernames():
    assert normalise_namespace("", RegistryType.GHCR, "Acme") == "acme"
    assert normalise_namespace("team/sub", RegistryType.GENERIC) == "team/sub"
    assert normalise_namespace("", RegistryType.GENERIC) is None
    with pytest.raises(RegistryError, match="^namespace:"):
        normalise_namespace("Bad Name", RegistryType.GENERIC)
    with pytest.raises(RegistryError, match="^namespace:"):
        normalise_namespace("", RegistryType.GHCR, None)
    assert validate_username(" bot ") == "bot"
    with pytest.raises(RegistryError, match="^username:"):
        validate_username("--password=x")


def test_repository_name():
    registry = SimpleNamespace(url="ghcr.io", namespace="acme")
    assert repository_for(registry, "shop", "production") == "ghcr.io/acme/shop-production"
    assert repository_for(SimpleNamespace(url="127.0.0.1:5055", namespace=None), "shop", "prod") \
        == "127.0.0.1:5055/shop-prod"


def test_login_sends_the_password_on_stdin_only():
    password = "p@ss'w;rd $(id)"
    registry = SimpleNamespace(url="127.0.0.1:5055", username="keystone", password=password)
    auth = auth_commands(registry, "/home/keystone/operations/abc/docker")
    assert auth.login.render() == (
        "DOCKER_CONFIG=/home/keystone/operations/abc/docker docker login --username keystone "
        "--password-stdin -- 127.0.0.1:5055")
    assert password not in auth.login.render() and password not in auth.login.masked()
    assert auth.password.value == password and str(auth.password) == "***"
    assert auth.logout.render() == (
        "DOCKER_CONFIG=/home/keystone/operations/abc/docker docker logout -- 127.0.0.1:5055")
    assert auth_commands(SimpleNamespace(url="r", username=None, password=None), "/d") is None


def test_docker_build_command_is_exact():
    command = dc.docker_build("/home/keystone/operations/h/build-1/Dockerfile",
                              "/home/keystone/operations/h/build-1/context",
                              "keystone/shop-production:abcdef123456-0011aabb",
                              {"KEYSTONE_COMMIT": "a" * 40, "KEYSTONE_ENVIRONMENT": "4"})
    assert command.render() == (
        "DOCKER_BUILDKIT=0 docker build --cpu-shares 128 "
        "--file /home/keystone/operations/h/build-1/Dockerfile "
        "--tag keystone/shop-production:abcdef123456-0011aabb "
        "--build-arg KEYSTONE_COMMIT=" + "a" * 40 + " --build-arg KEYSTONE_ENVIRONMENT=4 "
        "-- /home/keystone/operations/h/build-1/context")


def test_docker_commands_put_refs_after_end_of_options():
    assert argv_of(dc.pull("--help", "/d")) == ["DOCKER_CONFIG=/d", "docker", "pull", "--", "--help"]
    assert argv_of(dc.push("r/x:1"))[-2:] == ["--", "r/x:1"]
    assert argv_of(dc.image_id("x;id")) == ["docker", "image", "inspect", "--format", "{{.Id}}",
                                            "--", "x;id"]
    assert argv_of(dc.remove_dir("/home/keystone/operations/h")) == [
        "rm", "-rf", "--", "/home/keystone/operations/h"]
    assert dc.extract_source("/o/source.tar", "/o/context").render() == (
        "mkdir -p -m 0700 -- /o/context && tar -x --no-same-owner --no-same-permissions "
        "-f /o/source.tar -C /o/context && rm -f -- /o/source.tar")
