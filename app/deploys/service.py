"""Deploy actions on rows, shared by the views, the CLI, the tests and the benchmark.

* :func:`start_deploy` -- refuse early what cannot work (several servers and
  no registry, ...), then start ONE ``environment_deploy`` operation holding
  the ``environment:<id>`` lock (queued behind a running one, or refused).
* :func:`add_role_service` -- the one-click dedicated worker (or websocket)
  service: the same artifact, another command, deployed with the environment.
* :func:`set_embedded_worker` -- a queue worker inside the web replicas (not
  for production).
"""
from __future__ import annotations

import sqlalchemy as sa

from app.app_key import ensure_app_key
from app.builds.plan import check_build_plan
from app.extensions import db
from app.models import BuildArtifact, Environment, Operation, Server, Service
from app.models.enums import DeployPolicy, OperationKind, ServerStatus, ServiceCategory
from app.operations import start_operation
from app.sandbox_servers import apply_sandbox_build_defaults


class DeployBlocked(Exception):
    """The deploy cannot start; ``problems`` carry the fixes (app.builds.plan.BuildProblem)."""

    def __init__(self, message: str, problems=()):
        super().__init__(message)
        self.problems = list(problems)


class RoleError(ValueError):
    pass


def app_services(env: Environment) -> list[Service]:
    """The environment's Laravel runtime services (web, worker, websocket)."""
    return [s for s in env.services if s.category == ServiceCategory.APPLICATION]


def service_server_ids(service: Service) -> list[int]:
    """Where a service runs: ``config.server_ids``, else its server, else its replicas' servers."""
    cfg = service.config or {}
    ids = [int(i) for i in cfg.get("server_ids") or []]
    if not ids and service.server_id:
        ids = [service.server_id]
    if not ids:
        ids = sorted({r.server_id for r in service.replicas
                      if r.status.value not in ("removed", "stopped")})
    return list(dict.fromkeys(ids))


def environment_servers(env: Environment) -> list[Server]:
    ids: list[int] = []
    for service in app_services(env):
        if service.deploy_policy == DeployPolicy.WITH_ENVIRONMENT:
            ids.extend(service_server_ids(service))
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    servers = db.session.execute(sa.select(Server).where(Server.id.in_(ids))).scalars().all()
    by_id = {s.id: s for s in servers}
    return [by_id[i] for i in ids if i in by_id]


def build_problems(env: Environment, servers: list[Server], artifact: BuildArtifact | None):
    """Problems that block the deploy before anything runs (app.builds.plan's check)."""
    problems = check_build_plan(env, servers)
    if artifact is not None:
        # A rollback reuses a built image: repository access is not needed again.
        problems = [p for p in problems
                    if p.code not in ("repository", "deploy_key", "repository_unverified")]
    return problems


FRESH_METRICS = 15 * 60   # seconds: an older disk sample says nothing about now


def disk_problems(env: Environment, servers: list[Server],
                  artifact: BuildArtifact | None) -> list[str]:
    """A deploy that would not fit is refused before it starts (issue 23): the image's size
    (the rollback target's, else the running build's, recorded by housekeeping) against
    each server's free disk in its latest metrics sample. Unknown numbers never refuse."""
    import datetime as dt

    from app.housekeeping import deploy_fits
    from app.metrics import latest
    from app.models.base import utcnow
    source = artifact or env.current_artifact
    size = int((source.meta or {}).get("size_bytes") or 0) if source is not None else 0
    if not size:
        return []
    rows = latest(db.session, [s.id for s in servers])
    out = []
    for server in servers:
        row = rows.get(server.id)
        if row is None or utcnow() - row.taken_at > dt.timedelta(seconds=FRESH_METRICS):
            continue
        free = int(max(0.0, row.disk_total_gb - row.disk_used_gb) * 1024 ** 3)
        fits, text = deploy_fits(free, size)
        if not fits:
            out.append(f"the image would not fit on {server.name}: it {text}. Housekeeping "
                       "has been started there; deploy again when it has freed space.")
            try:
                from app.housekeeping.handlers import start_housekeeping
                start_housekeeping(server, reason="a deploy did not fit")
            except Exception:  # noqa: BLE001 - the refusal stands either way
                db.session.rollback()
    return out


def place_unplaced_services(env: Environment) -> list[Server]:
    """A new environment's web service is on no server yet (nothing in the UI places it): at
    its first deploy put its application services on the server of its gateway, else on the
    organisation's first active server. Returns the servers now used (none: still blocked)."""
    gateways = [a.service.server for a in env.attachments
                if a.service is not None and a.service.type == "caddy" and a.service.server is not None
                and a.service.server.status == ServerStatus.ACTIVE]
    server = gateways[0] if gateways else db.session.execute(
        sa.select(Server).where(Server.organisation_id == env.application.organisation_id,
                                Server.status == ServerStatus.ACTIVE)
        .order_by(Server.id).limit(1)).scalar_one_or_none()
    if server is None:
        return []
    for service in env.services:
        if service.category == ServiceCategory.APPLICATION and service.server is None \
                and not service.replicas:
            service.server = server
    db.session.flush()
    return environment_servers(env)


def start_deploy(env: Environment, user=None, *, artifact: BuildArtifact | None = None,
                 on_conflict: str = "queue", force: bool = False, enqueue: bool = True,
                 commit_sha: str | None = None) -> Operation:

    servers = environment_servers(env) or place_unplaced_services(env)
    if not servers:
        raise DeployBlocked("Nothing to deploy: the environment has no application service "
                            "placed on a server.")
    if artifact is None:
        apply_sandbox_build_defaults(env, servers)
    problems = build_problems(env, servers, artifact)
    if problems:
        raise DeployBlocked("Deploy blocked: " + " ".join(str(p) for p in problems), problems)
    too_full = disk_problems(env, servers, artifact)
    if too_full:
        raise DeployBlocked("Deploy refused: " + " ".join(too_full))
    if artifact is not None and len(servers) > 1 and not artifact.registry_ref:
        raise DeployBlocked("That build was never pushed to a registry, so the other servers "
                            "cannot pull it: deploy a new build instead.")
    # An environment created before Keystone generated APP_KEY gets one now, once
    # (never replaced; rotating is an explicit action): app.app_key.
    ensure_app_key(env)
    params: dict = {"force": bool(force)}
    if artifact is not None:
        params.update(artifact_id=artifact.id, rollback=True)
        summary = f"Roll back {env.application.name}/{env.name} to {artifact.commit_sha[:12]}"
    else:
        if commit_sha:
            params["commit_sha"] = commit_sha
        summary = f"Deploy {env.application.name}/{env.name} ({env.branch})"
    return start_operation(OperationKind.ENVIRONMENT_DEPLOY, target_type="environment",
                           target_id=env.id, organisation_id=env.application.organisation_id,
                           user=user, params=params, lock_keys=[f"environment:{env.id}"],
                           summary=summary, on_conflict=on_conflict, enqueue=enqueue)


def primary_web(env: Environment) -> Service | None:
    webs = [s for s in app_services(env) if "web" in (s.process_roles or [])]
    return webs[0] if webs else None


def add_role_service(env: Environment, role: str) -> Service:
    """A dedicated ``worker`` or ``websocket`` service: same artifact, placed like the web."""
    if role not in ("worker", "websocket"):
        raise RoleError("role must be worker or websocket")
    web = primary_web(env)
    if web is None:
        raise RoleError("Add a web service first: workers run the web service's build.")
    taken = {s.name for s in env.services}
    name = role
    n = 2
    while name in taken:
        name = f"{role}-{n}"
        n += 1
    config: dict = {"role": role, "migration_mode": "disabled"}
    servers = service_server_ids(web)
    if servers:
        config["server_ids"] = servers
    if role == "worker":
        config["stop_grace_seconds"] = 70  # queue:work --timeout=60 finishes its job first
    service = Service(organisation_id=env.application.organisation_id, environment_id=env.id,
                      name=name, category=ServiceCategory.APPLICATION, type="laravel",
                      driver_name="laravel", deploy_policy=DeployPolicy.WITH_ENVIRONMENT,
                      process_roles=[role], server_id=web.server_id, config=config,
                      version_track=web.version_track or "")
    db.session.add(service)
    db.session.commit()
    return service


def set_embedded_worker(service: Service, enabled: bool) -> None:
    if "web" not in (service.process_roles or []):
        raise RoleError("Only a web service can embed a worker.")
    cfg = dict(service.config or {})
    if enabled:
        cfg["embedded_worker"] = True
    else:
        cfg.pop("embedded_worker", None)
    service.config = cfg
    service.desired_revision = (service.desired_revision or 1) + 1
    db.session.commit()
