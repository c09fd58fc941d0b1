"""A constant-rate HTTP/1.1 keep-alive load generator that counts what clients would see.

Used by ``bench.cutover`` and the deploy integration tests. Each worker
thread keeps ONE persistent connection and sends at a fixed pace (GETs and
POSTs mixed). What is counted:

* ``raw_resets``: every request that failed on the connection level (reset,
  closed, timed out), before any re-send -- what a client that never retries
  (wrk) would see.
* ``connection_errors``: failures left after the one re-send that browsers
  and curl make when a REUSED keep-alive connection closes before any byte
  of the response arrived -- for idempotent requests (GET) only. A POST is
  never re-sent.
* ``post_failures``: POSTs that failed on the connection level.
* ``non_2xx``: answers with a status outside 200-299 (a 502 from the gateway
  is one), with a histogram in ``statuses``.

``rps=0`` is a closed loop: every connection sends its next request as soon
as the answer to the last one arrived (wrk's model), which saturates the app.
``post_path`` sends POSTs elsewhere (e.g. ``/items``, which writes a row);
each POST carries a unique ``name`` and the names answered 2xx are kept in
``accepted_posts``, so a test can check the rows: none lost, none twice.
Latencies of answered requests are kept for ``latency_ms(q)``.

Only 127.0.0.0/8 targets are allowed (the sandbox network rules), and every
loop is bounded by ``max_seconds`` and ``max_requests``.
"""
from __future__ import annotations

import http.client
import ipaddress
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


class _NoResponseByte(Exception):
    """The connection closed/reset before the status line arrived."""


@dataclass
class LoadStats:
    requests: int = 0
    non_2xx: int = 0
    connection_errors: int = 0
    raw_resets: int = 0
    post_failures: int = 0
    resent: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)
    accepted_posts: list = field(default_factory=list)
    failed_posts: list = field(default_factory=list)
    samples: list = field(default_factory=list)  # the first non-2xx answers: (status, body)

    def latency_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        values = sorted(self.latencies)
        k = max(0, min(len(values) - 1, int(round(q * (len(values) - 1)))))
        return round(values[k] * 1000, 1)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "non_2xx": self.non_2xx,
                "connection_errors": self.connection_errors, "raw_resets": self.raw_resets,
                "post_failures": self.post_failures}


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address:port`` with SNI and certificate verification for ``server_name``."""

    def __init__(self, address: str, port: int, server_name: str, context, timeout: float):
        super().__init__(server_name, port, context=context, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class LoadGenerator:
    """``with LoadGenerator(port, host_header, rps=200): ...`` runs load for the block.

    ``tls_context`` (an ``ssl.SSLContext``) makes every connection HTTPS with SNI and
    certificate checks for ``host_header`` (TLS keep-alive connections)."""

    def __init__(self, port: int, host_header: str, *, rps: float = 200, connections: int = 8,
                 post_ratio: float = 0.3, path: str = "/", address: str = "127.0.0.1",
                 timeout: float = 10.0, max_seconds: float = 1800, max_requests: int = 2_000_000,
                 body_key=None, post_path: str | None = None, tls_context=None):
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError("load is only sent to 127.0.0.0/8")
        self.port, self.host_header, self.address = port, host_header, address
        self.rps, self.connections, self.post_ratio = float(rps), int(connections), post_ratio
        self.path, self.timeout = path, timeout
        self.post_path = post_path or path
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.body_key = body_key  # fn(bytes) -> str: counted in stats.bodies (e.g. the commit)
        self.tls_context = tls_context
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    # ------------------------------------------------------------------ one request
    def _send(self, conn: http.client.HTTPConnection, method: str,
              name: str = "bench") -> tuple[int, bytes]:
        body = f"keystone=bench&name={name}".encode() if method == "POST" else None
        headers = {"Host": self.host_header, "Connection": "keep-alive"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, self.post_path if method == "POST" else self.path, body=body,
                         headers=headers)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                ConnectionAbortedError, http.client.BadStatusLine) as exc:
            raise _NoResponseByte(type(exc).__name__) from exc
        data = resp.read()
        if resp.will_close:
            conn.close()
        return resp.status, data

    def _worker(self, index: int) -> None:
        rate = self.rps / self.connections
        interval = 1.0 / rate if rate > 0 else 0.0  # 0: closed loop
        rng = random.Random(index)
        conn: http.client.HTTPConnection | None = None
        nxt = time.monotonic() + rng.random() * interval
        deadline = self._started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            delay = nxt - time.monotonic()
            if delay > 0:
                if self._stop.wait(delay):
                    break
            nxt = nxt + interval if interval else time.monotonic()
            with self._lock:
                if self.stats.requests >= self.max_requests:
                    break
                seq = self.stats.requests
            method = "POST" if rng.random() < self.post_ratio else "GET"
            name = f"w{index}-{seq}-{rng.getrandbits(32):08x}"
            for attempt in (0, 1):
                if conn is None:
                    conn = self._connection()
                # http.client connects lazily: a socket here means an earlier answer kept it open.
                reused = conn.sock is not None
                t0 = time.monotonic()
                try:
                    status, data = self._send(conn, method, name)
                    elapsed = time.monotonic() - t0
                    key = self.body_key(data) if self.body_key else None
                    with self._lock:
                        self.stats.requests += 1
                        self.stats.statuses[status] += 1
                        self.stats.latencies.append(elapsed)
                        if not 200 <= status < 300:
                            self.stats.non_2xx += 1
                            if len(self.stats.samples) < 10:
                                self.stats.samples.append((status, data[:300]))
                            if method == "POST":
                                self.stats.failed_posts.append(name)
                        elif method == "POST":
                            self.stats.accepted_posts.append(name)
                        if key is not None:
                            self.stats.bodies[key] += 1
                    break
                except (_NoResponseByte, OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = None
                    before_any_byte = isinstance(exc, _NoResponseByte)
                    name = str(exc) if before_any_byte else type(exc).__name__
                    with self._lock:
                        self.stats.raw_resets += 1
                        self.stats.errors[name] += 1
                    if attempt == 0 and reused and before_any_byte and method == "GET":
                        with self._lock:
                            self.stats.resent += 1
                        continue  # what browsers and curl do, once
                    with self._lock:
                        self.stats.requests += 1
                        self.stats.connection_errors += 1
                        if method == "POST":
                            self.stats.post_failures += 1
                            self.stats.failed_posts.append(name)
                    break
        if conn is not None:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls_context is not None:
            return _TLSConnection(self.address, self.port, self.host_header, self.tls_context,
                                  self.timeout)
        return http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)

    # ------------------------------------------------------------------ control
    def start(self) -> "LoadGenerator":
        self._started = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True,
                                          name=f"load-{i}") for i in range(self.connections)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        return self.stats

    def __enter__(self) -> "LoadGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_http(port: int, host_header: str, path: str = "/", timeout: float = 60,
              ok=lambda status, body: 200 <= status < 300) -> tuple[int, bytes]:
    """Poll until ``ok(status, body)``; bounded by ``timeout``. Returns the last answer."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers={"Host": host_header})
            resp = conn.getresponse()
            last = (resp.status, resp.read())
            conn.close()
            if ok(*last):
                return last
        except (OSError, http.client.HTTPException, socket.timeout):
            pass
        time.sleep(0.25)
    return last
