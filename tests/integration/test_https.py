"""HTTPS for real (issue 22): certificates from the sandbox's ACME CA, on every gateway.

One bed on both sandbox servers (one deploy of the web service). The gateways are pointed
at the sandbox's Pebble (``acme_ca`` / ``acme_ca_root``, the only difference from Let's
Encrypt); pebble-challtestsrv answers Pebble's DNS questions with the sandbox servers'
private addresses. Every client here trusts Pebble's issuing root and nothing else.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import uuid

import pytest

from app.sandbox.testbed import wait_until
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def acme(sandbox):
    assert sandbox.acme is not None, "the sandbox has no ACME CA"
    return sandbox.acme


@pytest.fixture(scope="module")
def hbed(sandbox, acme, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    from app.drivers.caddy.tls import gateway_acme_config
    started = time.monotonic()
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "https",
                         server_count=2,
                         gateway_config={**gateway_acme_config(acme.directory_url,
                                                               acme.server_root_pem),
                                         "acme_email": "ops@example.com",
                                         # Caddy reads its renewal check cadence once, when
                                         # the process starts (its certificate cache).
                                         "renew_interval": "3s"}) as tb:
        tb.deploy()
        print(f"\nhttps bed set up and deployed in {time.monotonic() - started:.1f}s")
        yield tb


def tls_context(acme) -> ssl.SSLContext:
    """A client that trusts Pebble's issuing root and nothing else."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=acme.issuing_root())
    ctx.check_hostname = True
    return ctx


class _Conn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:PORT with SNI and certificate check for ``host``."""

    def __init__(self, host: str, port: int, context, timeout: float = 10):
        super().__init__(host, port, context=context, timeout=timeout)
        self._addr = ("127.0.0.1", port)

    def connect(self):
        sock = socket.create_connection(self._addr, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def https_get(host: str, port: int, ctx, path: str = "/"):
    conn = _Conn(host, port, ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        cert = conn.sock.getpeercert()
        return resp.status, resp.read(), cert
    finally:
        conn.close()


def serves_https(host: str, port: int, acme, timeout: float = 90):
    """Poll until the gateway on ``port`` answers ``host`` with a certificate Pebble issued."""
    last = {}

    def check():
        try:
            status, body, cert = https_get(host, port, tls_context(acme))
        except (OSError, ssl.SSLError) as exc:
            last["error"] = repr(exc)
            return None
        return (status, body, cert) if status == 200 else None

    got = wait_until(check, timeout=timeout, interval=1)
    assert got, f"{host} on :{port} never served a Pebble certificate: {last}"
    return got


def attach_https(bed, host: str, gateway_indexes, **kw):
    """Attach ``host`` (tls auto) on the given gateways, then install every route."""
    from app.attachments import attach_domain, start_slice_provision
    from app.extensions import db
    from app.models import Service
    routes = []
    for i in gateway_indexes:
        gateway = db.session.get(Service, bed.gateway_ids[i])
        _, route = attach_domain(bed.env, gateway, [host], tls="auto", **kw)
        db.session.commit()
        routes.append(route)
    for route in routes:  # both slices exist first: each gateway knows its peers
        bed.run(start_slice_provision(route, enqueue=False).id)
    return routes


def test_certificate_from_pebble_redirect_and_status_page(hbed, acme, sandbox):
    from app.certificates import check_gateway
    from app.extensions import db
    from app.models import User
    from tests.conftest import sign_in
    host = f"shop-{uuid.uuid4().hex[:6]}.test"
    acme.set_a(host, [sandbox.servers[0].private_ip])
    attach_https(hbed, host, [0], hsts=True)

    status, body, cert = serves_https(host, sandbox.servers[0].https_port, acme)
    assert json.loads(body)["commit"]
    assert ((("commonName", host),),) == cert["subject"] or \
        ("DNS", host) in cert["subjectAltName"], cert
    issuer = dict(x[0] for x in cert["issuer"])
    assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer

    # HSTS was opted into for this name.
    conn = _Conn(host, sandbox.servers[0].https_port, tls_context(acme))
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert resp.getheader("Strict-Transport-Security") == "max-age=31536000"
    resp.read()
    conn.close()

    # Plain HTTP answers with a permanent redirect to HTTPS (Caddy's automatic redirect).
    plain = http.client.HTTPConnection("127.0.0.1", sandbox.servers[0].http_port, timeout=10)
    plain.request("GET", "/some/page?x=1", headers={"Host": host})
    resp = plain.getresponse()
    assert resp.status in (301, 308), resp.status
    assert resp.getheader("Location") == f"https://{host}/some/page?x=1"
    plain.close()

    # The status, read from the gateway's Caddy over SSH, on the gateway's page.
    rows = {r.hostname: r for r in check_gateway(hbed.gateway_ids[0])}
    row = rows[host]
    assert row.issuer.startswith("Pebble Intermediate CA") and row.not_after is not None
    assert row.last_attempt_at is not None and not row.last_error
    app = db.get_app() if hasattr(db, "get_app") else None
    from flask import current_app
    client = current_app.test_client()
    sign_in(client, db.session.get(User, hbed.user_id))
    page = client.get(f"/services/{hbed.gateway_ids[0]}").get_data(as_text=True)
    assert "Pebble Intermediate CA" in page and row.not_after.strftime("%Y-%m-%d %H:%M") in page
    assert f'data-cert-host="{host}"' in page
    del app


def test_two_gateways_serve_a_valid_certificate_for_the_same_name(hbed, acme, sandbox):
    host = f"multi-{uuid.uuid4().hex[:6]}.test"
    # Pebble validates every order of this name at the SECOND server only: the first
    # gateway's HTTP-01 challenges land on a gateway that did not start the order.
    acme.set_a(host, [sandbox.servers[1].private_ip])
    attach_https(hbed, host, [0, 1])
    serials = []
    for server in sandbox.servers[:2]:
        status, body, cert = serves_https(host, server.https_port, acme)
        assert status == 200 and json.loads(body)["commit"]
        serials.append(cert["serialNumber"])
    assert serials[0] != serials[1]  # each gateway holds its own certificate
    log = hbed.gateway_log(0)
    assert "certificate obtained successfully" in log and host in log


class _Load:
    """Keep-alive HTTPS clients hammering one gateway; every error or non-200 is counted."""

    def __init__(self, host: str, port: int, ctx, clients: int = 4, max_seconds: float = 120):
        self.host, self.port, self.ctx = host, port, ctx
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.serials: set[str] = set()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + max_seconds  # bounded: stops by itself
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self):
        conn = None
        mine = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                if conn is None:
                    conn = _Conn(self.host, self.port, self.ctx)
                    conn.connect()
                    serial = conn.sock.getpeercert()["serialNumber"]
                    with self.lock:
                        self.serials.add(serial)
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                mine += 1
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors.append(f"status {resp.status}")
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failed += 1
                    self.errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
            # Every 20th request opens a new connection: new handshakes see the new certificate.
            if conn is not None and mine % 20 == 0:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_a_forced_renewal_under_load_loses_nothing(hbed, acme, sandbox):
    """The gateway is told to renew at once (Caddy's renewal_window_ratio near 1, checked
    every 3 s): a real renewal by Caddy's own maintenance, under keep-alive HTTPS load."""
    from app.attachments import start_slice_provision
    from app.extensions import db
    from app.models import Service
    host = f"renew-{uuid.uuid4().hex[:6]}.test"
    acme.set_a(host, [sandbox.servers[0].private_ip])
    (route,) = attach_https(hbed, host, [0])
    port = sandbox.servers[0].https_port
    _, _, cert = serves_https(host, port, acme)
    first = cert["serialNumber"]

    gateway = db.session.get(Service, hbed.gateway_ids[0])
    normal = dict(gateway.config)
    # The renewal settings go in first (a reload, as any route change: measured elsewhere,
    # bench.cutover); the load then runs across the renewals Caddy does by itself.
    gateway.config = {**normal, "renewal_window_ratio": 0.9999999}
    db.session.commit()
    hbed.run(start_slice_provision(route, enqueue=False).id)
    ctx = tls_context(acme)
    with _Load(host, port, ctx) as load:
        assert wait_until(lambda: load.ok > 20, timeout=30, interval=0.2), load.errors[:5]
        start = set(load.serials)
        # One certificate first served while the load ran is the renewal the issue asks
        # for (on a loaded 2-core machine Caddy's own maintenance may take a minute or two).
        renewed = wait_until(lambda: len(load.serials - start - {first}) >= 1, timeout=180,
                             interval=0.5)
        before_end = load.ok
        assert wait_until(lambda: load.ok > before_end + 20, timeout=30, interval=0.2)
    gateway = db.session.get(Service, hbed.gateway_ids[0])
    gateway.config = normal
    db.session.commit()
    hbed.run(start_slice_provision(route, enqueue=False).id)
    print(f"\nrenewal under load: {load.ok} ok, {load.failed} failed, "
          f"{len(load.serials)} certificates seen")
    assert renewed, f"no renewal seen: serials {load.serials}"
    assert load.failed == 0, load.errors[:10]
    log = hbed.gateway_log(0)
    assert "certificate renewed successfully" in log
