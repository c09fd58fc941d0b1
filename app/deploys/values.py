"""What a deploy knows about an environment before it changes anything: the values each
replica gets (variables, attachments, per-server overrides), which are secret, and the
snapshot the planner reads (app/deploys/planning.py)."""
from __future__ import annotations

from app.attachments import consumer_endpoint, effective_environment, is_managed_secret
from app.deploys.planning import (EnvironmentSnapshot, ReplicaFact, SchedulerFact, ServiceFact,
                                  config_hash, health_settings)
from app.deploys.service import app_services, primary_web, service_server_ids
from app.drivers import get_driver
from app.models import BuildArtifact, Environment, Service
from app.models.enums import VariableSource


def server_overrides(environment: Environment, server_id: int,
                     values: dict[str, str]) -> dict[str, str]:
    """Managed endpoint variables as seen from ``server_id`` (SPEC 14).

    The environment's DB_HOST / REDIS_HOST name the dependency's Docker alias,
    which only resolves on the dependency's own server; a replica on another
    server gets the private IP instead (the service must be exposed on the
    private network). A value the user set themselves is left alone.
    """
    user_keys = {v.key for v in environment.variables if v.source == VariableSource.USER}
    out: dict[str, str] = {}
    for att in environment.attachments:
        svc, sl = att.service, att.service_slice
        if svc is None or sl is None or svc.server_id in (None, server_id):
            continue
        try:
            host, port = consumer_endpoint(svc, server_id)
            driver = get_driver(svc)
            local_host, local_port = consumer_endpoint(svc, None)
            local = driver.env_exports(svc, sl, local_host, port=local_port)
            remote = driver.env_exports(svc, sl, host, port=port)
        except Exception:  # noqa: BLE001 - not reachable from there: keep the alias
            continue
        for key, value in remote.items():
            if local.get(key) != value and key in values and key not in user_keys:
                out[key] = value
    return out


def replica_environment(service: Service, values: dict[str, str],
                        server_id: int | None = None) -> dict[str, str]:
    """What a replica of ``service`` gets: the environment's variables plus Keystone's own."""
    env = dict(values)
    if server_id is not None and service.environment is not None:
        env.update(server_overrides(service.environment, server_id, values))
    health = health_settings(service.config, service.name)
    env["KEYSTONE_HEALTH_PATH"] = health["path"]
    cfg = service.config or {}
    if cfg.get("embedded_worker") and "web" in (service.process_roles or []):
        env["KEYSTONE_EMBEDDED_WORKER"] = "1"
    interval = cfg.get("scheduler_interval")
    if interval:
        env["KEYSTONE_SCHEDULER_INTERVAL"] = str(int(interval))
    return env


def environment_values(env: Environment) -> dict[str, str]:
    return dict(effective_environment(env))


# Values that are secret whatever their flag says (Laravel's encryption key).
ALWAYS_SECRET_KEYS = frozenset({"APP_KEY"})


def environment_secrets(env: Environment) -> list[str]:
    """Every secret a deploy of ``env`` can see, for redaction: the variables marked
    secret, the managed credentials (DB_PASSWORD, REDIS_PASSWORD, prefixed or not),
    APP_KEY, and the password of the environment's registry."""
    values = [v.value for v in env.variables
              if v.value and (v.is_secret or is_managed_secret(v.key)
                              or v.key in ALWAYS_SECRET_KEYS)]
    registry = getattr(env, "container_registry", None)
    if registry is not None and getattr(registry, "password", None):
        values.append(registry.password)
    return values


def service_config_hash(s, values: dict[str, str]) -> str:
    """What a replica of ``s`` runs besides its image. The replica count is not in it (a
    scale adds or removes replicas without replacing the others: service_scale); the
    resource limits are (Docker applies them when a container is created)."""
    return config_hash(s.config or {}, s.process_roles or [], replica_environment(s, values),
                       {"cpus": s.default_cpu_limit, "memory_mb": s.default_memory_limit_mb})


def snapshot(env: Environment, values: dict[str, str]) -> EnvironmentSnapshot:
    services = []
    for s in app_services(env):
        cfg = s.config or {}
        replicas = tuple(ReplicaFact(
            id=r.id, server_id=r.server_id, container_name=r.container_name,
            slot=(r.config or {}).get("slot"), image_digest=r.image_digest,
            status=r.status.value, health=r.health_status.value,
            revision=(r.config or {}).get("revision"),
            config_hash=(r.config or {}).get("config_hash"),
            index=int((r.config or {}).get("index") or 0)) for r in s.replicas)
        services.append(ServiceFact(
            id=s.id, name=s.name, deploy_policy=s.deploy_policy.value,
            roles=tuple(s.process_roles or ["web"]), desired_revision=s.desired_revision,
            config_hash=service_config_hash(s, values),
            server_ids=tuple(service_server_ids(s)), replicas=replicas, config=cfg,
            category=s.category.value, desired_replicas=s.desired_replicas))
    target = env.scheduler_target_service_id
    if target is None:
        web = primary_web(env)
        target = web.id if web else None
    deps = tuple(sorted({a.service.name for a in env.attachments if a.service is not None}))
    return EnvironmentSnapshot(
        environment_id=env.id, services=tuple(services), dependencies=deps,
        scheduler=SchedulerFact(enabled=env.scheduler_enabled, mode=env.scheduler_mode.value,
                                target_service_id=target,
                                runner_replica_id=env.scheduler_replica_id))


def stdout_text(result) -> str:
    """A command result's stdout, stripped ('' for none)."""
    return (getattr(result, "stdout", "") or "").strip()


def last_line(result) -> str:
    """The last non-blank line of a command result's stdout."""
    lines = [ln.strip() for ln in stdout_text(result).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def commit_details(artifact: BuildArtifact) -> dict:
    """The fetched commit's subject and author, for the deployment history (issue 17.6)."""
    info = (artifact.meta or {}).get("commit") or {}
    return {"commit_message": info.get("message"), "commit_author": info.get("author")} \
        if info else {}

