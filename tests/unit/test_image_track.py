"""Image overrides stay on the driver's image family and version track (SPEC 21)."""
from __future__ import annotations

import pytest

from app.drivers import get_driver

ON_TRACK = {
    "postgres": ["postgres:18", "postgres:18.1", "postgres:18-bookworm", "postgres:18.1-alpine3.22",
                 "127.0.0.1:5000/keystone-sandbox/postgres:18",
                 "mirror.example.com/library/postgres:18@sha256:" + "a" * 64],
    "valkey": ["valkey/valkey:8", "valkey/valkey:8.1-alpine", "registry.example.com:5000/mirror/valkey:8"],
    "caddy": ["caddy:2", "caddy:2.10-alpine", "127.0.0.1:5000/keystone-sandbox/caddy:2"],
}
OFF_TRACK = {
    "postgres": [("postgres:17", "version track 18"), ("postgres:180", "version track 18"),
                 ("postgres", "version track 18"), ("postgres:latest", "version track 18"),
                 ("postgres@sha256:" + "b" * 64, "names no tag"),
                 ("mysql:18", "not a postgres image"), ("postgres-evil:18", "not a postgres image")],
    "valkey": [("valkey/valkey:7.2", "version track 8"), ("redis:8", "not a valkey image")],
    "caddy": [("caddy:3", "version track 2"), ("nginx:2", "not a caddy image")],
}


@pytest.mark.parametrize("kind, ref", [(k, r) for k, refs in ON_TRACK.items() for r in refs])
def test_same_family_on_the_track_is_accepted(kind, ref):
    assert get_driver(kind).image_on_track(ref) is None


@pytest.mark.parametrize("kind, ref, why", [(k, r, w) for k, refs in OFF_TRACK.items()
                                            for r, w in refs])
def test_another_family_or_major_is_refused_with_the_reason(kind, ref, why):
    refusal = get_driver(kind).image_on_track(ref)
    assert refusal and why in refusal, refusal


def test_the_defaults_are_on_their_own_track():
    for kind in ("postgres", "valkey", "caddy"):
        driver = get_driver(kind)
        assert driver.image_on_track(driver.default_image) is None
