"""HetznerProvider through the official hcloud library against the local fake API."""
from __future__ import annotations

import time

import pytest

from app.providers.base import ProviderError
from app.providers.hetzner import HetznerProvider
from app.providers.hetzner_fake import FakeHetzner
from app.remote import generate_ed25519


@pytest.fixture()
def fake():
    with FakeHetzner(tokens={"good", "readonly-token-77"}) as f:
        f.read_only_tokens.add("readonly-token-77")
        yield f


def provider(fake, token="good"):
    return HetznerProvider(token, endpoint=fake.endpoint, poll_interval=0.01)


def test_catalogue_create_wait_delete(fake):
    api = provider(fake)
    api.verify()
    assert [c.name for c in api.server_types()] == ["cax11", "cx22", "cx32"]
    assert "debian-12" in [c.name for c in api.images()]
    assert [c.name for c in api.locations()] == ["fsn1", "nbg1", "hel1"]
    assert [c.name for c in api.networks()] == ["7001"]
    pub = generate_ed25519()[1]
    key_id = api.ensure_ssh_key(pub, "keystone-acme")
    assert api.ensure_ssh_key(pub, "keystone-acme") == key_id          # reused, not re-uploaded
    other = generate_ed25519()[1]
    assert api.ensure_ssh_key(other, "keystone-acme") != key_id        # name taken -> suffixed
    created = api.create_server(name="web-1", server_type="cx22", image="debian-12",
                                location="fsn1", ssh_key_id=key_id, network_id="7001")
    assert created.status == "initializing" and created.private_ip == "10.0.1.2"
    running = api.wait_until_running(created.provider_server_id, timeout=5)
    assert running.status == "running" and running.public_ip == created.public_ip
    api.delete_server(created.provider_server_id)
    assert api.get_server(created.provider_server_id) is None
    api.delete_server(created.provider_server_id)                      # idempotent


@pytest.mark.parametrize("setup, code, words", [
    ("bad-token", "invalid_token", "refused the API token"),
    ("read-only", "invalid_token", "read-only"),
    ("quota", "quota_exceeded", "resource limit is reached"),
    ("rate", "rate_limited", "rate limit is reached"),
])
def test_errors_are_sentences(fake, setup, code, words):
    token = {"bad-token": "nope", "read-only": "readonly-token-77"}.get(setup, "good")
    fake.server_limit = 0 if setup == "quota" else None
    fake.rate_limited = setup == "rate"
    api = HetznerProvider(token, endpoint=fake.endpoint, poll_interval=0.01, retries=1)
    key_id = None
    if setup in ("quota",):
        key_id = api.ensure_ssh_key(generate_ed25519()[1], "k")
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        api.create_server(name="web-1", server_type="cx22", image="debian-12", location="fsn1",
                          ssh_key_id=key_id or "1")
    assert info.value.code == code
    assert words in str(info.value)
    assert token not in str(info.value) or token == "good"
    assert time.monotonic() - started < 10       # the library's long backoff is bounded


def test_invalid_input_names_the_fields(fake):
    with pytest.raises(ProviderError, match="name: must be a valid hostname") as info:
        provider(fake).create_server(name="Bad_Name", server_type="cx22", image="debian-12",
                                     location="fsn1", ssh_key_id="1")
    assert info.value.code == "invalid_input"


def test_unreachable_api(fake):
    endpoint = fake.endpoint
    fake.stop()
    with pytest.raises(ProviderError, match="Could not reach the Hetzner Cloud API") as info:
        HetznerProvider("good", endpoint=endpoint, retries=0).verify()
    assert info.value.code == "unavailable"
