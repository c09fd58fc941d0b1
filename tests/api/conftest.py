"""The API tier: the real app on a migrated SQLite file and the embedded Redis (no
Docker). ``live`` serves the app from a werkzeug server in a thread, for what must talk
HTTP over a socket (schemathesis, the CLI)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from werkzeug.serving import make_server

from app.extensions import db as _db
from app.models.base import utcnow
from tests.conftest import make_app
from tests.factories import build_org


def deployable(graph):
    """Make the graph's environment pass the deploy checks: repository verified, the web
    service placed on the server."""
    graph.application.repository_known_hosts = "git.example.com ssh-ed25519 AAAA"
    graph.application.deploy_key_installed_at = utcnow()
    graph.web.server = graph.server
    _db.session.commit()
    return graph


@pytest.fixture()
def org(app):
    return deployable(build_org())


@dataclass
class Live:
    url: str
    app: object


@pytest.fixture()
def live(tmp_path, migrated_db_template, redis_url):
    """The app on a real socket (127.0.0.1, a free port), served by threads."""
    app = make_app(tmp_path, migrated_db_template, redis_url,
                   API_RATE_LIMIT="100000 per minute", API_SSE_MAX_SECONDS=5)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=30)
        with app.app_context():
            _db.session.remove()
            _db.engine.dispose()
