"""Blueprints: thin views, one module per area."""
from __future__ import annotations


def register_blueprints(app) -> None:
    from app.blueprints import auth, dashboard

    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    # Areas added by later work register themselves here.
    for name in ("operations", "servers", "applications", "environments", "services",
                 "registries", "onboarding", "deploys", "tokens"):
        try:
            module = __import__(f"app.blueprints.{name}", fromlist=["bp"])
        except ModuleNotFoundError as exc:
            if exc.name == f"app.blueprints.{name}":
                continue
            raise
        app.register_blueprint(module.bp)
