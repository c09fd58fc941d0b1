"""Keystone: the app factory."""
from __future__ import annotations

from pathlib import Path

from flask import Flask, render_template
from htmx_flask import Htmx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from app.config import Config
from app.crypto import keyring
from app.extensions import csrf, db, login_manager, migrate

htmx = Htmx()


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` limited to 0..2**63-1 (a signed 64-bit id)."""

    def __init__(self, map, fixed_digits=0, min=0, max=2**63 - 1, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """WAL and a busy timeout: the web process and the worker write at once."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def create_app(config: dict | None = None, instance_path: str | None = None) -> Flask:
    base = Config(Path(instance_path) if instance_path else None)
    app = Flask(__name__, instance_path=base.INSTANCE_PATH, instance_relative_config=False)
    app.config.update(base.as_dict())
    if config:
        app.config.update(config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    # Ids in URLs stop at the largest id the database stores: /servers/99999999999999999999
    # is a 404 (no route matches), not an integer overflow in the database driver.
    app.url_map.converters["int"] = BoundedIntConverter

    keyring.configure(app.config["ENCRYPTION_KEYS"])
    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    csrf.init_app(app)
    htmx.init_app(app)

    from app import models  # noqa: F401  (register the tables)

    from app.security import init_security
    init_security(app)

    from app.blueprints import register_blueprints
    register_blueprints(app)

    from app.api import init_api, is_api_request, http_error
    init_api(app)

    from app.cli import register_cli
    register_cli(app)

    from app.templating import register_filters
    register_filters(app)

    from app import policy
    policy.check_declared(app)  # every endpoint declares its permission, or no app at all
    app.jinja_env.globals.update(policy.template_globals())
    from app.blueprints.members import my_organisations
    app.jinja_env.globals["my_organisations"] = my_organisations

    endpoints = frozenset(app.view_functions)

    @app.context_processor
    def _endpoints():
        return {"url_map_endpoints": endpoints}

    @app.errorhandler(404)
    def not_found(e):
        if is_api_request():
            return http_error(e)
        return render_template("errors/404.html"), 404

    @app.errorhandler(400)
    def bad_request(e):
        if is_api_request():
            return http_error(e)
        return render_template("errors/400.html", error=e), 400

    @app.errorhandler(HTTPException)
    def other_http_error(e):
        # /api/v1 answers every error in JSON; pages keep Werkzeug's own answers.
        return http_error(e) if is_api_request() else e

    return app
