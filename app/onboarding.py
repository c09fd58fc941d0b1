"""The onboarding wizard's state (SPEC 19), derived from the database.

The wizard is resumable because each step's completion is read from what
exists (a server, a verified deploy key, a deployed environment...), not from
a cursor that can drift. Only "skipped" choices are stored, in
Organisation.onboarding_state.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.models import (Application, Environment, EnvironmentAttachment, Operation,
                        Organisation, Provider, Registry, Server, Service)
from app.models.enums import (AttachmentRole, EnvironmentStatus, OperationKind,
                              OperationStatus, ServerStatus)


@dataclass
class Step:
    key: str
    title: str
    description: str
    done: bool
    skippable: bool = False
    skipped: bool = False
    blocked_reason: str | None = None

    @property
    def complete(self) -> bool:
        return self.done or self.skipped


def _count(model, *where):
    return sa.select(sa.func.count()).select_from(model).where(*where).scalar_subquery()


def _progress(org_id: int):
    """What the checklist counts, in one query of counts (every page a person lands on asks
    it: an organisation with 200 environments must not load rows, nor send six queries)."""
    return db.session.execute(_progress_query(), {"org_id": org_id}).one()


@functools.cache
def _progress_query():
    """Built once (a statement of thirteen subqueries costs more to build than to run)."""
    org_id = sa.bindparam("org_id", type_=sa.Integer)
    apps = sa.select(Application.id).where(Application.organisation_id == org_id)
    envs = sa.select(Environment.id).where(Environment.application_id.in_(apps))
    roles = [sa.exists().where(EnvironmentAttachment.environment_id.in_(envs),
                               EnvironmentAttachment.role == role).label(role.value)
             for role in (AttachmentRole.DATABASE, AttachmentRole.GATEWAY,
                          AttachmentRole.CACHE, AttachmentRole.QUEUE)]
    return sa.select(
        _count(Server, Server.organisation_id == org_id).label("servers"),
        _count(Server, Server.organisation_id == org_id,
               Server.status == ServerStatus.ACTIVE).label("active"),
        _count(Provider, Provider.organisation_id == org_id).label("providers"),
        _count(Application, Application.organisation_id == org_id,
               Application.deploy_key_installed_at.is_not(None)).label("verified"),
        _count(Registry, Registry.organisation_id == org_id).label("registries"),
        _count(Environment, Environment.application_id.in_(apps)).label("envs"),
        _count(Environment, Environment.application_id.in_(apps),
               Environment.status == EnvironmentStatus.DEPLOYED).label("deployed"),
        sa.exists().where(EnvironmentAttachment.environment_id.in_(envs)).label("attachments"),
        *roles)


def steps_for(org: Organisation) -> list[Step]:
    skipped = set((org.onboarding_state or {}).get("skipped", []))
    n = _progress(org.id)
    servers, providers, verified, registries = n.servers, n.providers, n.verified, n.registries
    envs, deployed, active, attachments = n.envs, n.deployed, n.active, n.attachments
    services_done = bool(n.database and n.gateway and (n.cache or n.queue))
    multi = servers > 1
    return [
        Step("organisation", "Organisation", "Your organisation owns servers, apps and keys.",
             done=True),
        Step("provider", "Servers", "Connect Hetzner, add a server you already have over SSH, "
             "or use the local sandbox.", done=bool(providers or servers)),
        Step("repository", "Repository and deploy key", "Add your Laravel repository's SSH URL; "
             "add the deploy key Keystone shows as read-only; verify access.",
             done=bool(verified)),
        Step("registry", "Registry", "Optional for one server; required to run one build on "
             "several servers.", done=bool(registries), skippable=not multi,
             skipped="registry" in skipped and not multi,
             blocked_reason=("Your servers are more than one: a registry is required."
                             if multi and not registries else None)),
        Step("provision", "Provision the server", "Keystone hardens the server and installs "
             "Docker over SSH; the log streams live.", done=bool(active)),
        Step("application", "Application and environment", "Keystone creates a production "
             "environment with a web service.", done=bool(envs)),
        Step("services", "Postgres, Valkey, domain", "Attach a database, a cache/queue and a "
             "domain routed by the gateway.",
             # Each attachment is optional: the step is done when all three are there, or
             # when the person continues after attaching some ("skip" stores that choice).
             done=services_done or ("services" in skipped and bool(attachments)),
             skippable=True, skipped="services" in skipped and not attachments),
        Step("deploy", "First deploy", "Build, migrate, health-check, switch: the log streams "
             "live.", done=bool(deployed)),
    ]


def current_step(steps: list[Step]) -> Step | None:
    return next((s for s in steps if not s.complete), None)


def skip(org: Organisation, key: str) -> None:
    steps = {s.key: s for s in steps_for(org)}
    step = steps.get(key)
    if step is None or not step.skippable:
        raise ValueError("This step cannot be skipped.")
    state = dict(org.onboarding_state or {})
    state["skipped"] = sorted(set(state.get("skipped", [])) | {key})
    org.onboarding_state = state
    db.session.commit()


def route_url(route) -> str | None:
    """The public address a caddy_route slice answers on: scheme, host and port."""
    if route is None:
        return None
    config = route.config or {}
    host = config.get("hostname") or (config.get("hostnames") or [None])[0] or route.name
    port = config.get("public_port")
    scheme = config.get("scheme", "http")
    return f"{scheme}://{host}{':' + str(port) if port else ''}/"


def environment_url(env: Environment) -> str | None:
    """Where the environment answers: its gateway route, if it has one and something is live."""
    if env.current_artifact_id is None:
        return None
    route = next((a.service_slice for a in env.attachments
                  if a.role == AttachmentRole.GATEWAY and a.service_slice is not None), None)
    return route_url(route)


def live_url(org: Organisation) -> str | None:
    """Where the first deployed app answers (for the wizard's last page)."""
    from app.models import ServiceSlice
    from app.models.enums import SliceType
    route = db.session.execute(
        sa.select(ServiceSlice).join(Service, ServiceSlice.service_id == Service.id)
        .where(Service.organisation_id == org.id, ServiceSlice.type == SliceType.CADDY_ROUTE)
        .order_by(ServiceSlice.id)).scalars().first()
    return route_url(route)


def step_context(org: Organisation) -> dict:
    """What the step panels list: unverified apps, servers, environments, last deploy."""
    from sqlalchemy.orm import selectinload
    apps = db.session.execute(sa.select(Application).where(
        Application.organisation_id == org.id).order_by(Application.id)).scalars().all()
    servers = db.session.execute(sa.select(Server).where(
        Server.organisation_id == org.id).order_by(Server.id)).scalars().all()
    envs = db.session.execute(
        sa.select(Environment).join(Application).where(Application.organisation_id == org.id)
        .options(selectinload(Environment.application)).order_by(Environment.id)).scalars().all()
    from app.operations.lifecycle import latest_operation
    unverified = [a for a in apps if a.deploy_key_installed_at is None]
    verify_ops = {a.id: latest_operation(OperationKind.REPOSITORY_VERIFY, "application", a.id,
                                         org.id) for a in unverified}
    provision_ops = {s.id: latest_operation(OperationKind.SERVER_PROVISION, "server", s.id,
                                            org.id) for s in servers}
    return {"apps_unverified": unverified, "verify_ops": verify_ops,
            "provision_ops": provision_ops,
            "servers": servers, "environments": envs,
            "last_deploy": last_operation(org, OperationKind.ENVIRONMENT_DEPLOY)}


def last_operation(org: Organisation, kind: OperationKind) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.organisation_id == org.id, Operation.kind == kind,
                                   Operation.parent_id.is_(None))
        .order_by(Operation.id.desc()).limit(1)).scalar_one_or_none()


def fingerprint(org: Organisation) -> str:
    """What the wizard page shows that can change on its own (an operation ending, a server
    becoming active, a slice becoming ready): when it changes, the open wizard reloads and
    continues with the next step, so a person never clicks to find out that a step is done."""
    import hashlib

    from app.models import ServiceSlice
    steps = steps_for(org)
    current = current_step(steps)
    sandbox = (org.onboarding_state or {}).get("sandbox") or {}
    ops = db.session.execute(
        sa.select(Operation.id, Operation.status).where(
            Operation.organisation_id == org.id, Operation.parent_id.is_(None),
            Operation.kind.in_([OperationKind.REPOSITORY_VERIFY.value,
                                OperationKind.SERVER_PROVISION.value,
                                OperationKind.ENVIRONMENT_DEPLOY.value]))
        .order_by(Operation.id.desc()).limit(8)).all()
    servers = db.session.execute(sa.select(Server.id, Server.status).where(
        Server.organisation_id == org.id).order_by(Server.id)).all()
    slices = db.session.execute(
        sa.select(ServiceSlice.id, ServiceSlice.status).join(
            EnvironmentAttachment, EnvironmentAttachment.service_slice_id == ServiceSlice.id)
        .join(Environment).join(Application).where(Application.organisation_id == org.id)
        .order_by(ServiceSlice.id)).all()
    parts = [current.key if current else "live", sandbox.get("status"),
             [(i, str(st)) for i, st in ops], [(i, str(st)) for i, st in servers],
             [(i, str(st)) for i, st in slices],
             [s.key for s in steps if s.complete]]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


__all__ = ["Step", "fingerprint", "steps_for", "current_step", "skip", "live_url", "route_url",
           "environment_url", "last_operation", "OperationStatus"]
