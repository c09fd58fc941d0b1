"""The custom-server check: no port scanner (one message for closed and open-non-SSH
ports), rate-limited per user, and the submitted private key is never shown back."""
from __future__ import annotations

import socket
import threading

import sqlalchemy as sa

from app.extensions import db
from app.models import Server
from app.remote import generate_ed25519
from app.security import SERVER_CHECK_PER_USER
from tests.web.test_servers import _closed_port, _post


def _not_ssh_port():
    """A local port that accepts connections and answers like a web server."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], lambda: (stop.set(), srv.close())


def _check(client, csrf, port: int, key: str = ""):
    return _post(client, "/servers/custom/new", {
        "name": "box", "host": "127.0.0.1", "port": str(port), "user": "root",
        "private_key": key}, csrf, htmx=True)


def test_closed_and_open_non_ssh_ports_read_the_same(client, auth):
    auth.signup()
    csrf = auth.csrf()
    key = generate_ed25519()[0]
    closed = _closed_port()
    open_port, stop = _not_ssh_port()
    try:
        answers = {}
        for port in (closed, open_port):
            html = _check(client, csrf, port, key).get_data(as_text=True)
            answers[port] = html.replace(str(port), "PORT")
    finally:
        stop()
    assert answers[closed] == answers[open_port]
    assert "could not read an SSH host key from 127.0.0.1:PORT" in answers[closed]
    assert db.session.execute(sa.select(Server)).first() is None


def test_the_private_key_is_never_rendered_back(client, auth):
    auth.signup()
    csrf = auth.csrf()
    key = generate_ed25519()[0]
    body = key.strip().splitlines()[1]
    for extra in ({"name": "Bad Name"}, {"port": "70000"}, {"host": "bad host"}):
        for htmx in (True, False):
            resp = _post(client, "/servers/custom/new", {
                "name": "box", "host": "127.0.0.1", "port": "22", "user": "root",
                "private_key": key, **extra}, csrf, htmx=htmx)
            html = resp.get_data(as_text=True)
            assert body not in html and "BEGIN OPENSSH PRIVATE KEY" not in html, extra


def test_the_check_is_rate_limited_per_user(client, auth):
    auth.signup()
    csrf = auth.csrf()
    per_minute = int(SERVER_CHECK_PER_USER.split()[0])
    codes = [_check(client, csrf, 22, "not a key").status_code for _ in range(per_minute + 1)]
    assert codes[-1] == 429 and 429 not in codes[:-1]
