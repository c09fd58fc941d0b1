"""The ``housekeeping`` operation of a server, and what starts it (issue 23).

Started (never twice at once per server: a second start joins the active one)

* after every successful environment deploy, for each of its servers (an end listener,
  :func:`operation_ended`, in :data:`app.operations.lifecycle.END_LISTENERS`);
* daily, by the worker's periodic tick (:func:`schedule_tick` beside the health check and
  the backups tick): every active server whose last housekeeping is a day old;
* at once when the metrics pass sees a disk over 85 % (:func:`disk_pressure`).

It takes no environment's lock (a deploy never waits behind it): an environment with a
deploy or rollback active while it runs keeps every ready artifact this time, so what a
running deploy may need is never removed. Steps: read facts (images,
containers, directories, disk), then remove stopped Keystone containers of removed
replicas, Keystone images no kept artifact is, directories of finished operations and gone
replicas, build cache above its cap, and the registry manifests of artifacts no
environment keeps. The result records what went and the space freed (``df`` before/after).
"""
from __future__ import annotations

import datetime as dt
import logging
import re

import sqlalchemy as sa

from app import redis_keys
from app import housekeeping as hk
from app.extensions import db
from app.models import (BuildArtifact, Environment, Operation, Server, Service, ServiceReplica)
from app.models.base import utcnow
from app.models.enums import (ArtifactStatus, OperationKind, OperationStatus, ServerStatus)
from app.operations import OperationContext, StepFailed, operation_handler, start_operation
from app.shell import housekeeping as hc

log = logging.getLogger(__name__)

TICK_INTERVAL = 600            # seconds between ticks of the daily schedule
DAILY = dt.timedelta(days=1)
PRESSURE_EVERY = 30 * 60       # a full disk starts housekeeping at most this often
ACTIVE = ("pending", "queued", "running")
_PATH_RE = re.compile(r"/[A-Za-z0-9._/-]{0,250}")


# --------------------------------------------------------------------------- starting

def active_housekeeping(server_id: int) -> Operation | None:
    return db.session.execute(
        sa.select(Operation).where(Operation.kind == OperationKind.HOUSEKEEPING.value,
                                   Operation.target_type == "server",
                                   Operation.target_id == int(server_id),
                                   Operation.status.in_(ACTIVE))
        .order_by(Operation.id.desc()).limit(1)).scalar_one_or_none()


def start_housekeeping(server: Server, *, user=None, reason: str = "manual",
                       enqueue: bool = True) -> Operation:
    """Start housekeeping on ``server``, or return the one not yet running (a pending or
    queued one will see the newest state when it starts)."""
    active = active_housekeeping(server.id)
    if active is not None and active.status.value in ("pending", "queued"):
        return active
    keys = [f"housekeeping:server/{server.id}"]
    return start_operation(OperationKind.HOUSEKEEPING, target_type="server",
                           target_id=server.id, organisation_id=server.organisation_id,
                           user=user, params={"reason": reason}, lock_keys=keys,
                           summary=f"Housekeeping on {server.name} ({reason})",
                           enqueue=enqueue)


def operation_ended(op: Operation) -> None:
    """End listener: a successful environment deploy -> housekeeping on its servers."""
    if op.kind != OperationKind.ENVIRONMENT_DEPLOY or op.status != OperationStatus.SUCCEEDED:
        return
    env = db.session.get(Environment, op.target_id)
    if env is None:
        return
    from app.deploys.service import environment_servers
    for server in environment_servers(env):
        if server.status == ServerStatus.ACTIVE:
            start_housekeeping(server, reason=f"after deploy #{op.id}")


def disk_pressure(server: Server, disk_percent: float) -> Operation | None:
    """The metrics pass saw ``disk_percent`` over the threshold: housekeeping at once (at
    most once per PRESSURE_EVERY per server). Never raises."""
    if disk_percent <= hk.DISK_PRESSURE_PERCENT or server.status != ServerStatus.ACTIVE:
        return None
    try:
        from app.operations import logstream
        if not logstream.redis_client().set(redis_keys.key("housekeeping", "pressure", server.id),
                                            "1", nx=True, ex=PRESSURE_EVERY):
            return None
        return start_housekeeping(server, reason=f"disk {disk_percent:.0f}% full")
    except Exception:  # noqa: BLE001 - the next pass tries again
        db.session.rollback()
        log.warning("could not start housekeeping on %s", server.name, exc_info=True)
        return None


# --------------------------------------------------------------------------- facts from the DB

def _artifact_facts(organisation_id: int):
    rows = db.session.execute(
        sa.select(BuildArtifact).join(Environment, Environment.id == BuildArtifact.environment_id)
        .where(Environment.application.has(organisation_id=organisation_id))).scalars().all()
    envs = db.session.execute(
        sa.select(Environment).where(Environment.application.has(
            organisation_id=organisation_id))).scalars().all()
    facts = [hk.ArtifactFact(a.id, a.environment_id, a.status.value,
                             (a.meta or {}).get("image_id"),
                             None if (a.meta or {}).get("external") else a.registry_ref)
             for a in rows]
    current = {e.id: e.current_artifact_id for e in envs}
    keep = {e.id: e.keep_artifacts for e in envs}
    kept = hk.kept_artifacts(facts, current, keep)
    busy = set(db.session.execute(sa.select(Operation.target_id).where(
        Operation.kind == OperationKind.ENVIRONMENT_DEPLOY.value,
        Operation.target_type == "environment", Operation.status.in_(ACTIVE))).scalars())
    kept |= {f.id for f in facts if f.environment_id in busy and f.status == "ready"}
    return rows, facts, kept


def _replica_statuses(server_id: int) -> dict[int, str]:
    rows = db.session.execute(sa.select(ServiceReplica.id, ServiceReplica.status)
                              .where(ServiceReplica.server_id == server_id)).all()
    return {rid: getattr(st, "value", st) for rid, st in rows}


def _used_dirs(server_id: int) -> set[str]:
    from app.models.enums import PRESENT_REPLICA_STATUSES
    rows = db.session.execute(sa.select(ServiceReplica).where(
        ServiceReplica.server_id == server_id)).scalars().all()
    return {str((r.config or {}).get("directory") or "").rstrip("/") for r in rows
            if r.status in PRESENT_REPLICA_STATUSES or r.status.value == "stopped"}


def _active_hashes() -> set[str]:
    return set(db.session.execute(sa.select(Operation.hash).where(
        Operation.status.in_(ACTIVE))).scalars())


# --------------------------------------------------------------------------- the operation

def _df(step, path: str) -> tuple[int, int]:
    res = step.run(hc.disk_usage(path), check=False, pty=False, timeout=60)
    return hk.parse_df_used(res.stdout or "")


@operation_handler(OperationKind.HOUSEKEEPING)
def housekeeping(ctx: OperationContext) -> None:
    server: Server = ctx.target
    if server is None:
        raise StepFailed("The server no longer exists.")
    result = {"images_removed": 0, "containers_removed": 0, "directories_removed": 0,
              "manifests_deleted": 0, "artifacts_pruned": [], "build_cache_pruned": False}
    with ctx.step("Read the server's images, containers and disk", server=server) as step:
        root = (step.run(hc.docker_root(), pty=False, timeout=60).stdout or "").strip()
        root = root if _PATH_RE.fullmatch(root) else "/"
        used_before, free_before = _df(step, root)
        images = hk.parse_images(step.run(hc.keystone_images(hk.IMAGE_LABEL), pty=False,
                                          timeout=300, quiet=True).stdout)
        containers = hk.parse_containers(step.run(hc.all_containers(), pty=False,
                                                  timeout=300, quiet=True).stdout)
        dirs = hk.parse_directories(step.run(hc.directories(hk.OPERATIONS_ROOT, hk.SERVICES_ROOT),
                                             check=False, pty=False, timeout=300,
                                             quiet=True).stdout)
        cache = hk.parse_build_cache(step.run(hc.build_cache_size(), check=False, pty=False,
                                              timeout=300).stdout)
        step.log(f"{len(images)} Keystone image(s), {len(containers)} container(s), "
                 f"{len(dirs)} Keystone director(y/ies), build cache {hk.human_bytes(cache)}, "
                 f"{hk.human_bytes(free_before)} free on {root}")
    rows, facts, kept = _artifact_facts(server.organisation_id)
    by_id = {a.id: a for a in rows}
    # Record image sizes where Keystone did not know them (the deploy-fit check reads them).
    ids_to_artifact = {(a.meta or {}).get("image_id"): a for a in rows if (a.meta or {}).get("image_id")}
    for image in images:
        a = ids_to_artifact.get(image.id)
        if a is not None and (a.meta or {}).get("size_bytes") != image.size and image.size:
            a.meta = {**(a.meta or {}), "size_bytes": image.size}
    db.session.commit()

    container_plan = hk.plan_containers(containers, _replica_statuses(server.id))
    with ctx.step("Remove stopped Keystone containers", server=server) as step:
        if not container_plan:
            step.unchanged("no stopped container of a removed replica")
        for r in container_plan:
            res = step.run(hc.remove_container(r.ref), check=False, pty=False, timeout=120)
            if res.exit_code == 0:
                result["containers_removed"] += 1
                step.log(f"removed {r.reason}")
        # Containers just removed no longer hold their images.
        gone = {r.ref for r in container_plan}
        containers = [c for c in containers if c.id not in gone or c.state not in hk.STOPPED_STATES]

    image_plan = hk.plan_images(images, containers, facts, kept)
    removed_artifacts: set[int] = set()
    with ctx.step(f"Remove old Keystone images (keep the running artifact and the newest "
                  f"{'/'.join(sorted({str(e) for e in _keeps(rows)})) or hk.DEFAULT_KEEP} "
                  f"per environment)", server=server) as step:
        step.log("kept artifacts: " + (", ".join(f"#{i}" for i in sorted(kept)) or "none"))
        if not image_plan:
            step.unchanged("no Keystone image to remove")
        for r in image_plan:
            step.run(hc.remove_image(r.references), check=False, pty=False, timeout=300)
            still = step.run(hc.image_exists(r.ref), check=False, pty=False, timeout=60,
                             quiet=True)
            if still.exit_code != 0:
                result["images_removed"] += 1
                if r.artifact_id is not None:
                    removed_artifacts.add(r.artifact_id)
            else:
                step.log(f"kept {r.ref[:19]}: docker refused to remove it")
                continue
            step.log(f"removed {r.ref[:19]} ({r.reason}, {hk.human_bytes(r.size)})")
    for artifact_id in removed_artifacts:
        a = by_id.get(artifact_id)
        if a is not None:
            meta = dict(a.meta or {})
            meta["present_on"] = [s for s in meta.get("present_on", []) if s != server.id]
            a.meta = meta
    db.session.commit()

    dir_plan = hk.plan_directories(dirs, active_hashes=_active_hashes(),
                                   service_ids=set(db.session.execute(sa.select(Service.id)).scalars()),
                                   used_dirs=_used_dirs(server.id), own_hash=ctx.hash,
                                   now=utcnow())
    with ctx.step("Remove directories of finished operations and gone replicas",
                  server=server) as step:
        if not dir_plan:
            step.unchanged("nothing older than an hour to remove")
        for r in dir_plan:
            res = step.run(hc.remove_directory(r.ref), check=False, pty=False, timeout=300)
            if res.exit_code == 0:
                result["directories_removed"] += 1
                step.log(f"removed {r.ref} ({r.reason})")

    excess = hk.build_cache_excess(cache)
    with ctx.step(f"Build cache (cap {hk.human_bytes(hk.BUILD_CACHE_CAP)})", server=server) as step:
        if not excess:
            step.unchanged(f"build cache {hk.human_bytes(cache)} is under the cap")
        else:
            step.run(hc.prune_build_cache(hk.BUILD_CACHE_CAP), check=False, pty=False,
                     timeout=900)
            result["build_cache_pruned"] = True

    _registry_retention(ctx, server, rows, facts, kept, result)

    with ctx.step("Space freed", server=server) as step:
        used_after, free_after = _df(step, root)
        freed = max(0, free_after - free_before)
        result.update({"freed_bytes": freed, "free_bytes": free_after,
                       "used_bytes": used_after, "kept_artifacts": sorted(kept)})
        step.log(f"{hk.human_bytes(freed)} freed: {hk.human_bytes(free_after)} free on {root} "
                 f"({result['images_removed']} image(s), {result['containers_removed']} "
                 f"container(s), {result['directories_removed']} director(y/ies) removed)")
    ctx.result.update(result)


def _keeps(rows) -> set[int]:
    envs = {a.environment_id for a in rows}
    return {e.keep_artifacts for e in db.session.execute(
        sa.select(Environment).where(Environment.id.in_(envs or {-1}))).scalars()}


def _registry_retention(ctx, server, rows, facts, kept, result) -> None:
    """Delete the manifests of artifacts no environment keeps; mark them pruned. A local-only
    artifact is pruned once no server has its image any more."""
    from app.registries.images import ImageError, delete_manifest, org_credentials
    by_id = {a.id: a for a in rows}
    prunable = hk.prunable_artifacts(facts, kept)
    with ctx.step("Registry retention: delete manifests of artifacts no environment keeps") as step:
        if not prunable:
            step.unchanged("every ready artifact is kept")
            return
        lookup = org_credentials(server.organisation_id)
        unsupported: set[str] = set()
        for fact in prunable:
            artifact = by_id[fact.id]
            if fact.registry_ref:
                registry = fact.registry_ref.partition("/")[0]
                if registry in unsupported:
                    continue
                try:
                    outcome = delete_manifest(fact.registry_ref, lookup)
                except ImageError as exc:
                    step.log(f"artifact #{fact.id}: {exc}")
                    continue
                if outcome == "unsupported":
                    unsupported.add(registry)
                    step.log(f"{registry} does not allow deleting manifests (enable "
                             "storage.delete): artifacts stay pullable there")
                    continue
                result["manifests_deleted"] += outcome == "deleted"
                step.log(f"artifact #{fact.id}: manifest {fact.registry_ref} {outcome}")
            elif (artifact.meta or {}).get("present_on"):
                continue   # still on another server: rollback there works
            artifact.status = ArtifactStatus.PRUNED
            artifact.meta = {**(artifact.meta or {}), "pruned_at": utcnow().isoformat(),
                             "pruned_by_operation_id": ctx.id}
            result["artifacts_pruned"].append(fact.id)
            db.session.commit()
        if not result["artifacts_pruned"]:
            step.unchanged("nothing could be pruned")


# --------------------------------------------------------------------------- the schedule

def tick_key(config=None) -> str:
    return redis_keys.key("housekeeping", "tick", config=config)


def due_servers(now: dt.datetime) -> list[Server]:
    """Active servers whose last housekeeping started a day or more ago (or never)."""
    last = (sa.select(Operation.target_id, sa.func.max(Operation.created_at).label("t"))
            .where(Operation.kind == OperationKind.HOUSEKEEPING.value,
                   Operation.target_type == "server")
            .group_by(Operation.target_id).subquery())
    rows = db.session.execute(
        sa.select(Server, last.c.t).outerjoin(last, last.c.target_id == Server.id)
        .where(Server.status == ServerStatus.ACTIVE)).all()
    return [s for s, t in rows if t is None or now - t >= DAILY]


def tick(now=None) -> dict:
    """Start the daily housekeeping that is due, and the control plane's own (log archive,
    Redis streams) once a day. Returns what it did."""
    now = now or utcnow()
    started = []
    for server in due_servers(now):
        if server.host_key_fingerprint:   # never pin a host key from a background job
            started.append(start_housekeeping(server, reason="daily").id)
    from app.housekeeping.control import control_plane_pass
    control = control_plane_pass(now)
    return {"started": started, "control": control}


def tick_job() -> dict:
    """RQ entry point (enqueued by ``keystone worker``); never raises into RQ's job data."""
    from app.jobs import _error, _in_app
    return _in_app("housekeeping tick failed", tick, _error)


def schedule_tick(app, conn, queue) -> bool:
    """Enqueue :func:`tick_job` unless one was enqueued in the last interval (any worker)."""
    if not conn.set(tick_key(app.config), "1", nx=True, ex=max(1, TICK_INTERVAL - 5)):
        return False
    queue.enqueue("app.housekeeping.handlers.tick_job", job_timeout=TICK_INTERVAL,
                  result_ttl=TICK_INTERVAL * 2, failure_ttl=3600,
                  description="keystone housekeeping tick")
    return True


__all__ = ["start_housekeeping", "operation_ended", "disk_pressure", "tick", "tick_job",
           "schedule_tick", "housekeeping"]
