"""Attachments and environment variables (SPEC 12 and 13).

Attaching Postgres or Valkey to an environment creates the default slice,
generates its credentials and writes the managed variables (``DB_*`` /
``REDIS_*``, ``source=managed_attachment``, each with its ``overridable``
flag). The slice itself is created on the server by a ``slice_provision``
operation (:func:`start_slice_provision`), never by redeploying the service.

Generic over drivers: which roles a service can be attached in, the
variables a slice exports (with their ``overridable`` and ``secret`` flags)
and the settings an attachment recommends are the driver's declarations
(``attach_roles``, ``exports``/``env_exports``, ``recommended``); adding a
driver needs no edit here. Laravel settings that change behaviour
(``CACHE_STORE``, ``SESSION_DRIVER``, ``QUEUE_CONNECTION``) are only
*recommended* by an attachment; they are written by
:func:`apply_recommendations` when the user confirms.

Precedence when rendering a container's environment
(:func:`effective_environment`): system < managed < user, except that a
managed variable with ``overridable=False`` always wins. User variables are
never touched by regeneration.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import contains_eager, defer

from app.drivers import all_drivers, get_driver
from app.drivers.base import DriverError, ExportField
from app.drivers.envfile import EnvKeyError, validate_env_key, validate_env_value
from app.drivers.secrets import sql_identifier_name
from app.extensions import db
from app.models import (Environment, EnvironmentAttachment, EnvironmentVariable, Service,
                        ServiceSlice)
from app.models.enums import (AttachmentRole, EnvironmentStatus, SliceStatus, SliceType,
                              VariableSource)

__all__ = ["AttachmentError", "Recommendation", "attach", "attach_postgres", "attach_valkey",
           "attach_domain", "regenerate_managed_variables", "apply_recommendations",
           "recommendations_for", "set_user_variable", "delete_user_variable",
           "effective_environment", "queue_sync_warning", "validate_env_key", "EnvKeyError",
           "start_slice_provision", "request_slice_delete", "consumer_host", "consumer_endpoint",
           "variable_rows", "VariableRow", "is_managed_secret"]


class AttachmentError(ValueError):
    pass


@dataclass(frozen=True)
class Recommendation:
    key: str
    value: str
    current: str | None
    reason: str


# --------------------------------------------------------------------------- hosts

def consumer_endpoint(service: Service, consumer_server_id: int | None) -> tuple[str, int]:
    """``(host, port)`` by which an environment on ``consumer_server_id`` reaches ``service``
    (SPEC 14), read from the service's Endpoint rows (app.endpoints): the alias on the
    shared Docker network on the same server (or while the server is unknown); from another
    server, the private IP and published port (``expose_private`` on the service), or the
    public IP when the service's server explicitly allows the public fallback."""
    from app.endpoints import Unreachable, consumer_endpoint as lookup
    try:
        return lookup(service, consumer_server_id)
    except Unreachable as exc:
        raise AttachmentError(str(exc)) from None


def consumer_host(service: Service, consumer_server_id: int | None) -> str:
    """The host part of :func:`consumer_endpoint`."""
    return consumer_endpoint(service, consumer_server_id)[0]


def _environment_server_id(environment: Environment) -> int | None:
    for svc in environment.services:
        for replica in svc.replicas:
            return replica.server_id
        if svc.server_id:
            return svc.server_id
    return None


# --------------------------------------------------------------------------- attach

def _default_slice_name(environment: Environment) -> str:
    return sql_identifier_name(f"{environment.application.name}_{environment.name}", 50)


def _unique_slice_name(service: Service, slice_type: SliceType, base: str) -> str:
    taken = set(db.session.execute(sa.select(ServiceSlice.name).where(
        ServiceSlice.service_id == service.id, ServiceSlice.type == slice_type)).scalars())
    name, n = base, 2
    while name in taken:
        name = f"{base[:56]}_{n}"
        n += 1
    return name


def _attach(environment: Environment, service: Service, role: AttachmentRole,
            slice_type: SliceType, name: str | None) -> tuple[EnvironmentAttachment, ServiceSlice]:
    driver = get_driver(service)
    if slice_type not in driver.slice_types:
        raise AttachmentError(f"{service.name} ({service.type}) has no {slice_type.value} slices")
    if service.organisation_id != environment.application.organisation_id:
        raise AttachmentError("service and environment belong to different organisations")
    existing = db.session.execute(sa.select(EnvironmentAttachment).where(
        EnvironmentAttachment.environment_id == environment.id,
        EnvironmentAttachment.service_id == service.id,
        EnvironmentAttachment.role == role)).scalar_one_or_none()
    if existing is not None:
        raise AttachmentError(f"{service.name} is already attached to {environment.name} as "
                              f"{role.value}")
    name = name or _unique_slice_name(service, slice_type, _default_slice_name(environment))
    try:
        config, credentials = driver.new_slice_config(name)
    except (ValueError, DriverError) as exc:
        raise AttachmentError(str(exc)) from None
    has_primary = any(a.role == role and a.is_primary for a in environment.attachments)
    slice_ = ServiceSlice(service=service, environment=environment, name=name, type=slice_type,
                          status=SliceStatus.PENDING, config=config, credentials=credentials)
    db.session.add(slice_)
    attachment = EnvironmentAttachment(environment=environment, service=service,
                                       service_slice=slice_, role=role,
                                       is_primary=not has_primary)
    db.session.add_all([slice_, attachment])
    db.session.flush()
    regenerate_managed_variables(environment)
    return attachment, slice_


def attach(environment: Environment, service: Service, role: AttachmentRole | None = None,
           name: str | None = None) -> tuple[EnvironmentAttachment, ServiceSlice]:
    """Attach ``service`` in ``role`` (default: its driver's first): the slice, its
    credentials and the exported variables (flushes, no commit). Recommendations are separate.
    """
    driver = get_driver(service)
    if not driver.attach_roles or not driver.slice_types or driver.routes_environment:
        raise AttachmentError(f"{service.name} ({service.type}) cannot be attached this way")
    role = AttachmentRole(role or driver.attach_roles[0])
    if role not in driver.attach_roles:
        raise AttachmentError(f"a {driver.short_label or service.type} attachment is for the "
                              + " or the ".join(r.value for r in driver.attach_roles))
    return _attach(environment, service, role, driver.slice_types[0], name)


def attachable_slices(organisation_id: int, service_type: str,
                      environment: Environment | None = None) -> list[ServiceSlice]:
    """Existing slices an environment may attach instead of creating one (SPEC 12, advanced):
    ready, of a ``service_type`` service of the organisation, not attached elsewhere (made by
    hand on the service page, or released by another environment's detach)."""
    return attachable_slices_by_type(organisation_id, (service_type,), environment)[service_type]


def attachable_slices_by_type(organisation_id: int, service_types: Iterable[str],
                              environment: Environment | None = None
                              ) -> dict[str, list[ServiceSlice]]:
    """:func:`attachable_slices` of several service types, in one query."""
    service_types = tuple(service_types)
    rows = db.session.execute(  # one query, whatever the number of slices (services joined)
        _attachable_slices_query(),
        {"org_id": organisation_id, "types": list(service_types),
         "env_id": environment.id if environment is not None else None}).scalars().all()
    out: dict[str, list[ServiceSlice]] = {t: [] for t in service_types}
    for sl in rows:
        if sl.type in get_driver(sl.service).slice_types:
            out[sl.service.type].append(sl)
    return out


@functools.cache
def _attachable_slices_query():
    """:func:`attachable_slices_by_type`'s statement, built once (the environment page asks
    on every view); without an environment (``env_id`` NULL) only a slice of none is free."""
    attached = sa.select(EnvironmentAttachment.service_slice_id).where(
        EnvironmentAttachment.service_slice_id.is_not(None))
    env_id = sa.bindparam("env_id", type_=sa.Integer)
    free = sa.or_(ServiceSlice.environment_id.is_(None), sa.and_(
        env_id.is_not(None), ServiceSlice.environment_id == env_id))
    return (sa.select(ServiceSlice).join(Service, ServiceSlice.service_id == Service.id)
            .options(contains_eager(ServiceSlice.service).defer(Service.secrets),
                     defer(ServiceSlice.credentials))
            .where(Service.organisation_id == sa.bindparam("org_id", type_=sa.Integer),
                   Service.type.in_(sa.bindparam("types", expanding=True)),
                   ServiceSlice.status == SliceStatus.READY, free,
                   ServiceSlice.id.not_in(attached))
            .order_by(Service.name, ServiceSlice.name))


def attach_existing_slice(environment: Environment, slice_: ServiceSlice,
                          role: AttachmentRole | None = None
                          ) -> tuple[EnvironmentAttachment, ServiceSlice]:
    """Attach a slice that already exists (SPEC 12: "advanced users can select existing
    slices"): no new database or user, no operation; its variables are set at once
    (flushes, no commit). Only a ready slice that no environment uses."""
    service = slice_.service
    driver = get_driver(service)
    if service.organisation_id != environment.application.organisation_id:
        raise AttachmentError("service and environment belong to different organisations")
    if slice_ not in attachable_slices(service.organisation_id, service.type, environment):
        raise AttachmentError(f"{slice_.name} cannot be attached: only a ready slice that no "
                              "environment uses can be")
    role = AttachmentRole(role or driver.attach_roles[0])
    if role not in driver.attach_roles:
        raise AttachmentError(f"a {driver.short_label or service.type} attachment is for the "
                              + " or the ".join(r.value for r in driver.attach_roles))
    if any(a.service_id == service.id and a.role == role for a in environment.attachments):
        raise AttachmentError(f"{service.name} is already attached to {environment.name} as "
                              f"{role.value}")
    has_primary = any(a.role == role and a.is_primary for a in environment.attachments)
    slice_.environment = environment
    attachment = EnvironmentAttachment(environment=environment, service=service,
                                       service_slice=slice_, role=role,
                                       is_primary=not has_primary)
    db.session.add(attachment)
    db.session.flush()
    regenerate_managed_variables(environment)
    return attachment, slice_


def attach_postgres(environment: Environment, service: Service,
                    name: str | None = None) -> tuple[EnvironmentAttachment, ServiceSlice]:
    """Create the database+user slice, its password and the DB_* variables (flushes, no commit)."""
    return attach(environment, service, AttachmentRole.DATABASE, name)


def attach_valkey(environment: Environment, service: Service,
                  role: AttachmentRole = AttachmentRole.CACHE,
                  name: str | None = None) -> tuple[EnvironmentAttachment, ServiceSlice]:
    """Create the ACL-user slice and the REDIS_* variables; recommendations are separate."""
    return attach(environment, service, role, name)


def attach_domain(environment: Environment, gateway: Service, hostnames: list[str],
                  tls: str = "auto", redirect_from: list[str] | None = None,
                  hsts: bool = False) -> tuple[EnvironmentAttachment, ServiceSlice]:
    """A route slice on the gateway for the environment's web service.

    An environment may have several (www next to the apex, another name): one slice and
    one attachment each. ``redirect_from`` names hostnames answered with a permanent
    redirect to ``hostnames[0]`` (e.g. ``www.example.com`` -> ``example.com``). The
    slice_provision operation lists the environment's slots in the route before it
    installs it (:mod:`app.services_ops.slices`), so a domain attached after
    the first deploy answers at once.
    """
    driver = get_driver(gateway)
    if not driver.routes_environment or not driver.slice_types:
        raise AttachmentError(f"{gateway.name} ({gateway.type}) does not route domains")
    route_type, role = driver.slice_types[0], driver.attach_roles[0]
    if gateway.organisation_id != environment.application.organisation_id:
        raise AttachmentError("service and environment belong to different organisations")
    name = _unique_slice_name(gateway, route_type, _default_slice_name(environment))
    try:
        config, _ = driver.new_slice_config(name, hostnames, tls=tls,
                                            environment_id=environment.id,
                                            redirect_from=redirect_from,
                                            **({"hsts": True} if hsts else {}))
    except ValueError as exc:
        raise AttachmentError(str(exc)) from None
    taken = {h for s in gateway.slices if s.type == route_type
             and s.status != SliceStatus.DELETED
             for h in [*(s.config or {}).get("hostnames", []),
                       *(s.config or {}).get("redirect_from", [])]}
    clash = sorted(taken & {*config["hostnames"], *config.get("redirect_from", [])})
    if clash:
        raise AttachmentError(f"{', '.join(clash)} is already routed by this gateway")
    slice_ = ServiceSlice(service=gateway, environment=environment, name=name,
                          type=route_type, status=SliceStatus.PENDING, config=config)
    db.session.add(slice_)
    has_primary = any(a.role == role and a.is_primary
                      for a in environment.attachments)
    attachment = EnvironmentAttachment(environment=environment, service=gateway,
                                       service_slice=slice_, role=role,
                                       is_primary=not has_primary)
    db.session.add_all([slice_, attachment])
    db.session.flush()
    return attachment, slice_


# --------------------------------------------------------------------------- managed variables

def _managed_values(environment: Environment
                    ) -> dict[str, tuple[str, int | None, ExportField]]:
    """key -> (value, slice id, its declaration) from the primary attachment of each role."""
    server_id = _environment_server_id(environment)
    out: dict[str, tuple[str, int | None, ExportField]] = {}
    for att in sorted(environment.attachments, key=lambda a: (not a.is_primary, a.id or 0)):
        slice_ = att.service_slice
        if slice_ is None or slice_.status in (SliceStatus.DELETED, SliceStatus.DELETING):
            continue
        driver = get_driver(att.service)
        if not driver.exports:
            continue  # e.g. a route: nothing to export, and no host to compute
        fields = {f.key: f for f in driver.exports}
        host, port = consumer_endpoint(att.service, server_id)
        exports = driver.env_exports(att.service, slice_, host, port=port)
        prefix = (att.env_prefix or "") if not att.is_primary else ""
        for key, value in exports.items():
            full = f"{prefix}{key}"
            out.setdefault(full, (value, slice_.id, fields.get(key) or ExportField(key)))
    return out


def is_managed_secret(key: str) -> bool:
    """A key some driver exports as a secret (also under a non-primary attachment's prefix)."""
    return any(f.secret and key.endswith(f.key)
               for d in all_drivers().values() for f in d.exports)


def regenerate_managed_variables(environment: Environment) -> list[str]:
    """Bring managed_attachment rows in line with attachments; return the changed keys.

    User rows are never touched. Rows for recommendations the user applied
    (``service_slice_id`` NULL) are kept.
    """
    wanted = _managed_values(environment)
    rows = {v.key: v for v in environment.variables
            if v.source == VariableSource.MANAGED_ATTACHMENT}
    changed = []
    for key, (value, slice_id, declared) in wanted.items():
        row = rows.get(key)
        if row is None:
            row = EnvironmentVariable(environment=environment, key=key, value=value,
                                      source=VariableSource.MANAGED_ATTACHMENT,
                                      service_slice_id=slice_id,
                                      overridable=declared.overridable,
                                      is_secret=declared.secret)
            db.session.add(row)
            changed.append(key)
        elif row.value != value or row.service_slice_id != slice_id:
            row.value = value
            row.service_slice_id = slice_id
            changed.append(key)
    for key, row in rows.items():
        if key not in wanted and row.service_slice_id is not None:
            environment.variables.remove(row)  # delete-orphan: the row is deleted
            changed.append(key)
    db.session.flush()
    return changed


# --------------------------------------------------------------------------- recommendations

def recommendations_for(environment: Environment) -> list[Recommendation]:
    """What the attachments suggest (their drivers' ``recommended``), with the value in effect."""
    env = _EffectiveValues(environment)
    out: list[Recommendation] = []
    for att in environment.attachments:
        driver = get_driver(att.service)
        for key, value in driver.attach_recommendations(AttachmentRole(att.role)):
            if env.get(key) != value and not any(r.key == key for r in out):
                out.append(Recommendation(key, value, env.get(key),
                                          f"{att.service.name} is attached as {att.role}"))
    return out


def apply_recommendations(environment: Environment, keys: Iterable[str], *,
                          confirmed: bool) -> list[str]:
    """Write the confirmed recommendations as managed, overridable variables."""
    if not confirmed:
        raise AttachmentError("changing CACHE_STORE/CACHE_DRIVER, SESSION_DRIVER or QUEUE_CONNECTION changes "
                              "how the application behaves: confirm first")
    wanted = {r.key: r for r in recommendations_for(environment)}
    applied = []
    for key in keys:
        rec = wanted.get(key)
        if rec is None:
            continue
        row = _variable(environment, key, VariableSource.MANAGED_ATTACHMENT)
        if row is None:
            environment.variables.append(EnvironmentVariable(
                key=key, value=rec.value, source=VariableSource.MANAGED_ATTACHMENT,
                overridable=True))
        else:
            row.value = rec.value
        user_row = _variable(environment, key, VariableSource.USER)
        if user_row is not None:  # the user confirmed replacing their own value
            environment.variables.remove(user_row)
        applied.append(key)
    db.session.flush()
    return applied


def queue_sync_warning(environment: Environment) -> str | None:
    """The warning a deployed environment with QUEUE_CONNECTION=sync shows (SPEC 7)."""
    if environment.status != EnvironmentStatus.DEPLOYED:
        return None
    if _EffectiveValues(environment).get("QUEUE_CONNECTION", "").strip().lower() != "sync":
        return None
    return ("QUEUE_CONNECTION=sync runs every queued job inside the web request that dispatched "
            "it: slow jobs slow down pages and a failing job fails the request. Attach Valkey "
            "as the queue and add a worker service, or use the database queue.")


# --------------------------------------------------------------------------- user variables

def _variable(environment: Environment, key: str, source: VariableSource):
    return next((v for v in environment.variables if v.key == key and v.source == source), None)


def set_user_variable(environment: Environment, key: str, value: str,
                      is_secret: bool = False) -> EnvironmentVariable:
    """Create or update a user variable; refuses to shadow a non-overridable managed one."""
    validate_env_key(key)
    validate_env_value(key, value)
    managed = _variable(environment, key, VariableSource.MANAGED_ATTACHMENT)
    if managed is not None and not managed.overridable:
        raise AttachmentError(f"{key} is managed by an attachment and cannot be overridden: "
                              "change or detach the attachment instead")
    row = _variable(environment, key, VariableSource.USER)
    if row is None:
        row = EnvironmentVariable(environment=environment, key=key, value=value,
                                  source=VariableSource.USER, is_secret=is_secret)
        db.session.add(row)
    else:
        row.value = value
        row.is_secret = is_secret
    db.session.flush()
    return row


def delete_user_variable(environment: Environment, key: str) -> bool:
    row = _variable(environment, key, VariableSource.USER)
    if row is None:
        return False
    environment.variables.remove(row)
    db.session.flush()
    return True


@dataclass(frozen=True)
class VariableRow:
    """One key as the environment page shows it: the row in effect and what it shadows."""
    key: str
    variable: EnvironmentVariable
    shadowed: tuple[EnvironmentVariable, ...]

    @property
    def overrides(self) -> EnvironmentVariable | None:
        return self.shadowed[0] if self.shadowed else None


def _precedence(v: EnvironmentVariable) -> int:
    if v.source == VariableSource.SYSTEM:
        return 0
    if v.source == VariableSource.MANAGED_ATTACHMENT:
        return 1 if v.overridable else 3
    return 2


def variable_rows(environment: Environment) -> list[VariableRow]:
    """Per key, the variable :func:`effective_environment` uses and the ones it shadows."""
    by_key: dict[str, list[EnvironmentVariable]] = {}
    for v in environment.variables:
        by_key.setdefault(v.key, []).append(v)
    rows = []
    for key in sorted(by_key):
        ordered = sorted(by_key[key], key=_precedence, reverse=True)
        rows.append(VariableRow(key, ordered[0], tuple(ordered[1:])))
    return rows


class _EffectiveValues:
    """:func:`effective_environment`'s value of a few keys, reading (and so decrypting) only
    those: the page asks for the keys it recommends and leaves every other value, secrets
    included, unread (app.blueprints.environments.page loads them deferred)."""

    def __init__(self, environment: Environment) -> None:
        self._rows: dict[str, EnvironmentVariable] = {}
        for v in environment.variables:
            current = self._rows.get(v.key)
            if current is None or _precedence(v) >= _precedence(current):  # later wins, as there
                self._rows[v.key] = v

    def get(self, key: str, default: str | None = None) -> str | None:
        row = self._rows.get(key)
        return row.value if row is not None else default


def effective_environment(environment: Environment) -> dict[str, str]:
    """The variables a container of the environment gets (see module docstring)."""
    system, managed, user, locked = {}, {}, {}, {}
    for v in environment.variables:
        if v.source == VariableSource.SYSTEM:
            system[v.key] = v.value
        elif v.source == VariableSource.MANAGED_ATTACHMENT:
            (managed if v.overridable else locked)[v.key] = v.value
        else:
            user[v.key] = v.value
    return {**system, **managed, **user, **locked}


# --------------------------------------------------------------------------- operations

def _start_slice_operation(kind_name: str, slice_: ServiceSlice, user, summary: str, *,
                           params: dict | None = None, enqueue: bool = True):
    """A slice operation (target: the slice) under its service's lock."""
    from app.models.enums import OperationKind
    from app.operations import start_operation
    service = slice_.service
    return start_operation(OperationKind[kind_name], target_type="service_slice",
                           target_id=slice_.id, organisation_id=service.organisation_id,
                           user=user, lock_keys=[f"service:{service.id}"], params=params,
                           summary=summary, enqueue=enqueue)


def start_slice_provision(slice_: ServiceSlice, user=None, *, enqueue: bool = True):
    """Create the slice on its service's running replica (a slice_provision operation)."""
    return _start_slice_operation(
        "SLICE_PROVISION", slice_, user,
        f"Create {slice_.type} {slice_.name} on {slice_.service.name}", enqueue=enqueue)


def start_credential_rotation(slice_: ServiceSlice, user=None, *, enqueue: bool = True):
    """New credentials for a slice (a ``credential_rotation`` operation, SPEC 3): the
    driver re-keys the slice on the running replica and the managed variables follow."""
    if not slice_.credentials:
        raise AttachmentError("this slice has no credentials to rotate")
    if slice_.status != SliceStatus.READY:
        raise AttachmentError(f"the slice is {slice_.status.value}: only a ready slice is re-keyed")
    return _start_slice_operation(
        "CREDENTIAL_ROTATION", slice_, user,
        f"Rotate the credentials of {slice_.name} on {slice_.service.name}", enqueue=enqueue)


def start_gateway_reinstall(gateway: Service, user=None, *, enqueue: bool = True):
    """Reinstall a gateway's Caddyfile after a gateway-wide setting changed (ACME email):
    a route ``update`` on one of its live routes (the whole file is rendered and installed,
    validated, last good kept). None when the gateway routes nothing yet (the first route
    installs it)."""
    route = next((s for s in gateway.slices if s.type == SliceType.CADDY_ROUTE
                  and s.status == SliceStatus.READY), None)
    if route is None:
        return None
    return _start_slice_operation(
        "SLICE_CONFIGURE", route, user,
        f"Install {gateway.name}'s configuration (HTTPS settings)",
        params={"action": "update"}, enqueue=enqueue)


def request_slice_delete(slice_: ServiceSlice, *, confirm: str, drop_data: bool = False,
                         user=None, enqueue: bool = True):
    """Delete a slice after the user typed its name. Data is kept unless ``drop_data``.

    Without ``drop_data`` the slice is disabled (Postgres role NOLOGIN, Valkey
    user off) and its database/keys stay on the server.
    """
    if confirm != slice_.name:
        raise AttachmentError(f"type the slice name ({slice_.name}) to confirm the deletion")
    what = "and DROP its data" if drop_data else "keeping its data"
    return _start_slice_operation(
        "SLICE_CONFIGURE", slice_, user, f"Delete {slice_.name} on {slice_.service.name} {what}",
        params={"action": "delete", "drop_data": bool(drop_data), "confirm": confirm},
        enqueue=enqueue)
