"""Managed services (Postgres 18, Valkey 8, the Caddy gateway, SPEC 9-13): creating one
on a server. The services views, the attachments component (a "New ... on <server>"
choice) and the sandbox testbed share it; it never commits or starts an operation.
"""
from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.orm import defer

from app.drivers import drivers
from app.extensions import db
from app.models import Server, Service
from app.sandbox.images import STAND_IN_RUNS
from app.scoping import current_org_id, org_query
from app.services_ops.create import build_service


def sandbox_image(server: Server | None, service_type: str) -> str | None:
    """Sandbox servers pull the stand-in images from the sandbox registry when it has them."""
    if server is None:
        return None
    return ((server.facts or {}).get("images") or {}).get(service_type)


def stand_in_note(service_type: str, server: Server | None, image: str | None = None) -> str:
    """" (sandbox stand-in: PostgreSQL 15)" when the sandbox's stand-in image is what runs."""
    stand_in = sandbox_image(server, service_type)
    if not stand_in or service_type not in STAND_IN_RUNS or (image and image != stand_in):
        return ""
    return f" (sandbox stand-in: {STAND_IN_RUNS[service_type]})"


def name_taken(name: str) -> bool:
    """An organisation-level service (no environment) of this name exists already."""
    return db.session.execute(sa.select(Service.id).where(
        Service.organisation_id == current_org_id(), Service.environment_id.is_(None),
        Service.name == name)).first() is not None


def free_name(base: str) -> str:
    """``base``, else ``base-2``, ``base-3``, ... whichever is free."""
    name, n = base, 2
    while name_taken(name):
        name = f"{base[:58]}-{n}"
        n += 1
    return name


def new_service(service_type: str, server: Server, name: str, image: str | None = None,
                expose_private: bool = False) -> Service:
    """A service of an offered driver placed on ``server`` (flushed, not committed).

    Raises DriverError (GatewayConflict: a second gateway on one server) or ImageError.
    """
    image = (image or "").strip() or sandbox_image(server, service_type)
    with db.session.no_autoflush:
        service = build_service(service_type, server, name, organisation_id=current_org_id(),
                                settings={"image": image or "", "expose_private": expose_private})
    db.session.add(service)
    db.session.flush()
    return service


def service_stand_in(service: Service) -> str:
    """:func:`stand_in_note` of a service (a template global: ``service_stand_in(s)``)."""
    return stand_in_note(service.type, service.server, (service.config or {}).get("image"))


def org_servers() -> list[Server]:
    """The organisation's servers, for choosing one: their one-time bootstrap login stays
    encrypted until something reads it."""
    return db.session.execute(
        org_query(Server).options(defer(Server.bootstrap_private_key),
                                  defer(Server.bootstrap_password))
        .order_by(Server.name)).scalars().all()


# What a list of services to choose from reads (name, driver, placement, settings); any
# other column loads on access. Their driver secrets stay encrypted.
LISTED_COLUMNS = (Service.id, Service.organisation_id, Service.environment_id, Service.server_id,
                  Service.name, Service.category, Service.type, Service.driver_name,
                  Service.status, Service.config)


@functools.cache
def _choice_queries():
    org = sa.bindparam("org_id", type_=sa.Integer)
    services = (sa.select(Service.id, Service.name, Service.type, Service.server_id,
                          Service.config)
                .where(Service.organisation_id == org,
                       Service.type.in_(sa.bindparam("types", expanding=True)))
                .order_by(Service.name))
    servers = (sa.select(Server.id, Server.name, Server.status, Server.facts)
               .where(Server.organisation_id == org).order_by(Server.name))
    return services, servers


def org_choice_rows() -> tuple[list, list]:
    """The organisation's services of the drivers Keystone offers (Postgres, Valkey, Caddy)
    and its servers, by name, for choosing one: rows of the columns a choice reads (id,
    name, type, server_id, config; id, name, status, facts), no ORM objects, the statements
    built once (the attach forms on every environment page)."""
    services_q, servers_q = _choice_queries()
    org_id = current_org_id()
    services = db.session.execute(services_q, {"org_id": org_id,
                                               "types": list(drivers.offered())}).all()
    servers = db.session.execute(servers_q, {"org_id": org_id}).all()
    return services, servers


