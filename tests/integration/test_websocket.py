"""Laravel Reverb behind the same domain, on real sandbox servers (no mocks).

An environment with a web service and a websocket service (``php artisan reverb:start``; the
sample app's stand-in in app/sandbox/sample_app/app/ReverbStandIn.php) is deployed; then,
through the real Caddy gateway on the server's published port 80 with the route's Host header:
a raw-socket RFC 6455 client (below) opens ``/app/{key}``, gets ``pusher:connection_established``
from the websocket replica, pings, subscribes, ``POST /apps/1/events`` answers 200 ``{}`` and
the event arrives; ``/`` is still served by web. A second deploy of a new commit moves the
websocket paths to the new replica with no gateway configuration change and no failed HTTP
request or websocket connect during it.

The tests run in file order and build on each other (one module-scoped testbed).
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import struct
import threading
import time

import pytest

from app.sandbox.testbed import describe, wait_until
from bench.loadgen import LoadGenerator
from tests.integration.testbeds import commit_of, running_testbed

pytestmark = pytest.mark.integration

APP_KEY = "ks-reverb-key"
CADDYFILE = "/home/keystone/gateway/Caddyfile"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------- a websocket client

class WebSocketClosed(Exception):
    def __init__(self, code=None, reason=""):
        super().__init__(f"websocket closed: {code} {reason}")
        self.code, self.reason = code, reason


class PusherSocket:
    """A raw-socket RFC 6455 client (masked frames; text, close, ping/pong) speaking Pusher."""

    def __init__(self, port: int, host_header: str, path: str = f"/app/{APP_KEY}",
                 address: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((address, port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path}?protocol=7&client=keystone-test&version=8.4.0 HTTP/1.1\r\n"
                           f"Host: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        try:
            while b"\r\n\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"closed during the handshake: {self.buf!r}")
                self.buf += chunk
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.headers = {k.strip().lower(): v.strip() for k, v in
                            (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            if self.status != 101:
                raise ConnectionError(f"handshake answered {lines[0]!r}: {self.buf[:200]!r}")
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if self.headers.get("sec-websocket-accept") != accept:
                raise ConnectionError("wrong Sec-WebSocket-Accept")
        except BaseException:
            self.sock.close()
            raise

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed(None, "EOF")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        mask = self._need(4) if b1 & 0x80 else None
        payload = self._need(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return b0 & 0x0F, payload

    def send(self, event: str, data=None, **extra) -> None:
        self._send_frame(0x1, json.dumps({"event": event, "data": data or {}, **extra}).encode())

    def recv(self, timeout: float = 10.0) -> dict:
        """The next Pusher message (its ``data`` JSON-decoded); WebSocketClosed on close/EOF."""
        self.sock.settimeout(timeout)
        while True:
            opcode, payload = self._recv_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise WebSocketClosed(code, payload[2:].decode(errors="replace"))
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x1:
                msg = json.loads(payload)
                if isinstance(msg.get("data"), str):
                    try:
                        msg["data"] = json.loads(msg["data"])
                    except ValueError:
                        pass
                return msg

    def close(self) -> None:
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def connect(bed, path: str = f"/app/{APP_KEY}") -> tuple[PusherSocket, dict]:
    """A websocket through the gateway and its connection_established data."""
    ws = PusherSocket(bed.http_port(), bed.hostname, path)
    msg = ws.recv()
    assert msg["event"] == "pusher:connection_established", msg
    return ws, msg["data"]


def established(bed) -> dict | None:
    try:
        ws, data = connect(bed)
    except (OSError, ConnectionError, WebSocketClosed, AssertionError):
        return None
    ws.close()
    return data


def post_event(bed, name: str, channel: str, data: dict) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", bed.http_port(), timeout=10)
    try:
        conn.request("POST", "/apps/1/events",
                     body=json.dumps({"name": name, "channel": channel, "data": json.dumps(data)}),
                     headers={"Host": bed.hostname, "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def container_hostname(bed, name: str) -> str:
    return bed.sandbox_servers[0].exec("docker", "inspect", "--format", "{{.Config.Hostname}}",
                                       name).stdout.strip()


def caddyfile_hash(bed) -> str:
    return bed.sandbox_servers[0].exec("sha256sum", CADDYFILE).stdout.split()[0]


def all_logs(op) -> str:
    return describe(op)


class WebsocketProbe:
    """Opens a websocket through the gateway every 0.25 s across a deploy; records who answered."""

    def __init__(self, bed):
        self.bed = bed
        self.answers: list[tuple[float, str, str]] = []  # (time, hostname, commit)
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                ws, data = connect(self.bed)
                ws.send("pusher:ping")
                pong = ws.recv()
                ws.close()
                if pong["event"] != "pusher:pong":
                    raise AssertionError(pong)
                self.answers.append((time.time(), data["hostname"], data["commit"]))
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.errors.append((time.time(), f"{type(exc).__name__}: {exc}"))
            self._stop.wait(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


# --------------------------------------------------------------------------- fixture

@pytest.fixture(scope="module")
def bed(sandbox, provisioned_servers, tmp_path_factory, migrated_db_template, redis_url):
    with running_testbed(sandbox, tmp_path_factory, migrated_db_template, redis_url, "websocket",
                         server_count=1, websocket=True,
                         extra_env={"REVERB_APP_KEY": APP_KEY}) as tb:
        yield tb


def running_replicas(bed, service_id):
    from app.extensions import db
    from app.models import Service
    db.session.expire_all()
    svc = db.session.get(Service, service_id)
    return [r for r in svc.replicas if r.status.value == "running"]


# --------------------------------------------------------------------------- tests

def test_first_deploy_routes_reverb_paths_to_the_websocket_service(bed, sandbox):
    from app.sandbox.sample import push_new_commit
    head = push_new_commit(sandbox.git)
    op = bed.deploy()
    assert op.result["commit"] == head
    (web,) = running_replicas(bed, bed.web_id)
    (wsr,) = running_replicas(bed, bed.ws_id)
    assert wsr.config["role"] == "websocket" and wsr.config["slot"] == "blue"
    assert wsr.health_status.value == "healthy"
    logs = all_logs(op)
    # Our own health check of the websocket replica is Reverb's /up; like Reverb, the server
    # has no Keystone ready handler, so the gateway checks /up on the websocket slots.
    assert f"Health check {wsr.container_name}" in logs
    assert "the gateway checks /up on the websocket slots" in logs
    # The first deploy routed the domain: web slots + Reverb's paths to the websocket slots.
    assert "slice_configure" in [c.kind.value for c in op.children]
    text = bed.sandbox_servers[0].exec("cat", CADDYFILE).stdout
    assert "@websocket path /app/* /apps/*" in text and "handle @websocket {" in text, text
    assert f"websocket-{bed.ws_id}-blue.internal:8080 websocket-{bed.ws_id}-green.internal:8080" \
        in text, text
    ws_block = text.split("handle @websocket {", 1)[1].split("\thandle {", 1)[0]
    assert "health_uri /up" in ws_block and "health_uri /.keystone/ready" not in ws_block, text
    assert text.count("health_uri /.keystone/ready") == 1 and "stream_close_delay" in text

    # A websocket through the gateway is answered by the websocket replica.
    data = wait_until(lambda: established(bed), 15)
    assert data, "no websocket through the gateway"
    ws, data = connect(bed)
    try:
        assert data["commit"] == head
        assert data["hostname"] == container_hostname(bed, wsr.container_name)
        assert data["activity_timeout"] == 30 and "." in data["socket_id"]
        ws.send("pusher:ping")
        assert ws.recv()["event"] == "pusher:pong"
        ws.send("pusher:subscribe", {"channel": "orders"})
        sub = ws.recv()
        assert (sub["event"], sub["channel"]) == ("pusher_internal:subscription_succeeded",
                                                  "orders")
        # The Pusher HTTP API (/apps/*) goes to the same service; the event reaches the socket.
        status, body = post_event(bed, "OrderShipped", "orders", {"id": 7})
        assert (status, json.loads(body)) == (200, {})
        event = ws.recv()
        assert (event["event"], event["channel"], event["data"]) == \
            ("OrderShipped", "orders", {"id": 7})
    finally:
        ws.close()
    # A wrong app key: Pusher error 4001, as Reverb answers.
    bad = PusherSocket(bed.http_port(), bed.hostname, "/app/not-the-key")
    try:
        err = bad.recv()
        assert err["event"] == "pusher:error" and err["data"]["code"] == 4001
    finally:
        bad.close()
    # Everything else is still the web service.
    status, body = bed.get("/")
    assert status == 200, body
    page = json.loads(body)
    assert page["commit"] == head
    assert page["hostname"] == container_hostname(bed, web.container_name) != data["hostname"]
    status, body = bed.get("/app")  # not a Reverb path: web's 404
    assert status == 404
    bed.first_commit = head
    bed.first_ws_hostname = data["hostname"]


def test_new_commit_moves_websockets_without_a_gateway_change(bed, sandbox):
    from app.sandbox.sample import push_new_commit
    old_commit = bed.first_commit
    before = caddyfile_hash(bed)
    (old_ws,) = running_replicas(bed, bed.ws_id)
    held, data = connect(bed)  # an open connection on the old replica, across the deploy
    assert data["hostname"] == bed.first_ws_hostname
    new_commit = push_new_commit(sandbox.git)
    load = LoadGenerator(bed.http_port(), bed.hostname, rps=40, connections=4,
                         body_key=commit_of, max_seconds=600)
    try:
        with WebsocketProbe(bed) as probe, load:
            op = bed.deploy()
            time.sleep(2)
        stats = load.stats
        assert op.result["commit"] == new_commit != old_commit
        # No gateway configuration change: the first deploy listed both slots of both services.
        kinds = [c.kind.value for c in op.children]
        assert "slice_configure" not in kinds and "gateway_cutover" in kinds, kinds
        assert caddyfile_hash(bed) == before
        # HTTP through the gateway: zero errors, old then new commit.
        assert stats.requests > 50
        assert (stats.non_2xx, stats.connection_errors, stats.post_failures) == (0, 0, 0), stats
        assert set(stats.bodies) <= {old_commit, new_commit}
        # Websocket connects during the deploy: none failed, they moved to the new replica.
        (new_ws,) = running_replicas(bed, bed.ws_id)
        new_host = container_hostname(bed, new_ws.container_name)
        assert new_ws.id != old_ws.id and new_ws.config["slot"] == "green"
        assert not probe.errors, probe.errors
        assert len(probe.answers) > 10
        hosts = [h for _, h, _ in probe.answers]
        assert hosts[0] == bed.first_ws_hostname and hosts[-1] == new_host, hosts
        assert {c for _, _, c in probe.answers} <= {old_commit, new_commit}
        # The old replica was stopped (no drain signal: new connections meanwhile went to either
        # replica, none failed); its open connection was closed (1001) and a client
        # reconnecting gets the new replica.
        logs = all_logs(op)
        assert f"Stop {old_ws.container_name}" in logs
        assert "open connections are closed at SIGTERM" in logs
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                held.recv(timeout=30)
        assert closed.value.code == 1001, closed.value
        data = wait_until(lambda: established(bed), 10)
        assert data and data["commit"] == new_commit and data["hostname"] == new_host
        assert bed.containers(service_id=bed.ws_id) == [new_ws.container_name]
        assert bed.commit_served() == new_commit
    finally:
        held.close()
