"""Image references and tag -> digest resolution over the registry API v2.

The registry here is a small HTTP server speaking the distribution API's
auth handshake (401 + WWW-Authenticate, token endpoint, Docker-Content-Digest);
the real registry is exercised by tests/integration/test_drivers.py.
"""
from __future__ import annotations

import base64
import http.server
import json
import threading

import pytest

from app.registries.images import (Credentials, ImageError, MANIFEST_TYPES, parse_image,
                                registry_base_url, resolve_digest)

DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize("ref,registry,repo,tag", [
    ("postgres:18", "docker.io", "library/postgres", "18"),
    ("valkey/valkey:8", "docker.io", "valkey/valkey", "8"),
    ("caddy", "docker.io", "library/caddy", "latest"),
    ("127.0.0.1:5055/keystone-sandbox/postgres:18", "127.0.0.1:5055",
     "keystone-sandbox/postgres", "18"),
    ("ghcr.io/acme/shop:abc123", "ghcr.io", "acme/shop", "abc123"),
    ("localhost/x/y", "localhost", "x/y", "latest"),
])
def test_parse_image(ref, registry, repo, tag):
    image = parse_image(ref)
    assert (image.registry, image.repository, image.tag) == (registry, repo, tag)


def test_pinned_reference_names():
    assert parse_image("postgres:18").with_digest(DIGEST) == f"postgres@{DIGEST}"
    assert parse_image("valkey/valkey:8").with_digest(DIGEST) == f"valkey/valkey@{DIGEST}"
    assert parse_image("127.0.0.1:5055/a/b:1").with_digest(DIGEST) == f"127.0.0.1:5055/a/b@{DIGEST}"
    assert parse_image(f"a/b@{DIGEST}").digest == DIGEST


@pytest.mark.parametrize("bad", ["", "a b", "Postgres:18", "x:bad tag", "x@sha256:zz",
                                 "x:$(id)", "x;id", "-x"])
def test_bad_references(bad):
    with pytest.raises(ImageError):
        parse_image(bad)


def test_base_urls():
    assert registry_base_url("docker.io") == "https://registry-1.docker.io"
    assert registry_base_url("127.0.0.1:5055") == "http://127.0.0.1:5055"
    assert registry_base_url("localhost:5000") == "http://localhost:5000"
    assert registry_base_url("ghcr.io") == "https://ghcr.io"


class _Registry(http.server.BaseHTTPRequestHandler):
    mode = "bearer"
    seen: list = []

    def log_message(self, *a):  # quiet
        pass

    def _auth_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if self.mode == "basic":
            return auth == "Basic " + base64.b64encode(b"u:p").decode()
        if self.mode == "bearer":
            return auth == "Bearer tok-123"
        return True

    def do_GET(self):
        if self.path.startswith("/token"):
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"u:p").decode()
            assert "scope=repository%3Aacme%2Fshop%3Apull" in self.path
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(json.dumps({"token": "tok-123"} if ok else {}).encode())
            return
        self.do_HEAD(body=True)

    def do_HEAD(self, body=False):
        type(self).seen.append((self.command, self.path, self.headers.get("Accept")))
        if not self._auth_ok():
            self.send_response(401)
            if self.mode == "basic":
                self.send_header("WWW-Authenticate", 'Basic realm="r"')
            else:
                port = self.server.server_address[1]
                self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/token",'
                                 f'service="reg",scope="repository:acme/shop:pull"')
            self.end_headers()
            return
        if self.path != "/v2/acme/shop/manifests/1.0":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Docker-Content-Digest", DIGEST)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def fake_registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Registry.seen = []
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("mode", ["bearer", "basic", "none"])
def test_resolve_digest_answers_the_auth_challenge(fake_registry, mode):
    _Registry.mode = mode
    creds = lambda host: Credentials("u", "p")  # noqa: E731
    ref = f"127.0.0.1:{fake_registry}/acme/shop:1.0"
    assert resolve_digest(ref, creds) == DIGEST
    assert _Registry.seen[-1][0] == "HEAD" and _Registry.seen[-1][2] == MANIFEST_TYPES


def test_resolve_digest_errors_are_clear(fake_registry):
    _Registry.mode = "basic"
    with pytest.raises(ImageError, match="needs credentials"):
        resolve_digest(f"127.0.0.1:{fake_registry}/acme/shop:1.0")
    _Registry.mode = "none"
    with pytest.raises(ImageError, match="tag not found"):
        resolve_digest(f"127.0.0.1:{fake_registry}/acme/shop:2.0")
    with pytest.raises(ImageError, match="unreachable"):
        resolve_digest("127.0.0.1:1/acme/shop:1.0", timeout=2)
