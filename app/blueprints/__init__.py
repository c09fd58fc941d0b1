"""Blueprints: thin views, one module per area."""
from __future__ import annotations


def register_blueprints(app) -> None:
    from app.blueprints import backups
    from app.blueprints import (applications, auth, dashboard, deploys, environments,
                                hooks, members, notifications, onboarding, operations, registries, servers,
                                services, tokens, audit_log, two_factor)

    for module in (auth, dashboard, operations, servers, applications, environments, services,
                   registries, onboarding, deploys, tokens, backups, hooks,
                   notifications, members, two_factor, audit_log):
        app.register_blueprint(module.bp)
