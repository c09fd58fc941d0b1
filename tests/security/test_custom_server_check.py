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


def _check(client, csrf, port: int, key: str = "", name: str = "box"):
    return _post(client, "/servers/custom/new", {
        "name": name, "host": "127.0.0.1", "port": str(port), "user": "root",
        "private_key": key}, csrf, htmx=True)


def test_closed_and_open_non_ssh_ports_read_the_same(client, auth):
    """The form only starts a host_key_scan; what the scan reports (operation error and the
    host-key page) reads the same for a closed port and an open port that is not SSH."""
    from app.jobs import run_operation
    from app.models import Operation
    auth.signup()
    csrf = auth.csrf()
    key = generate_ed25519()[0]
    closed = _closed_port()
    open_port, stop = _not_ssh_port()
    try:
        answers, errors = {}, {}
        for name, port in (("closed", closed), ("open", open_port)):
            resp = _check(client, csrf, port, key, name=name)
            server = db.session.execute(sa.select(Server).where(Server.name == name)).scalar_one()
            op = db.session.execute(sa.select(Operation).where(
                Operation.target_id == server.id)).scalar_one()
            assert run_operation(op.id) == "failed"
            db.session.expire_all()
            errors[port] = op.error.replace(str(port), "PORT")
            html = client.get(resp.headers["HX-Redirect"], headers={"HX-Request": "true"}
                              ).get_data(as_text=True)
            answers[port] = (html.replace(str(port), "PORT").replace(f"/{server.id}/", "/ID/")
                             .replace(f"#{op.id}", "#OP").replace(f"/{op.id}\"", "/OP\"")
                             .replace(name, "NAME"))
    finally:
        stop()
    assert errors[closed] == errors[open_port]
    assert answers[closed] == answers[open_port]
    assert "could not read an SSH host key from 127.0.0.1:PORT" in answers[closed]
    assert all(s.host_key_fingerprint is None
               for s in db.session.execute(sa.select(Server)).scalars())


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
