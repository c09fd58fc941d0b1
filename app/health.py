"""Periodic health of replicas (issue 13, defect 9): what runs is what the pages show.

Every HEALTH_INTERVAL seconds ``keystone worker`` enqueues ONE RQ job,
:func:`app.jobs.check_health`, which runs in a work horse (SSH never opens in
the worker process itself) and, per server that has replicas Keystone thinks
are running, opens ONE SSH connection (the pinned host key, the ``keystone``
login) and runs ONE command: ``docker inspect`` of every Keystone-managed
container there. Each :class:`ServiceReplica` then gets its container state,
Docker health and restart count; a replica whose container is gone or exited is
marked failed (and so are the Endpoint rows it serves, SPEC 14: their health follows
the replica's at every pass), one that restarts in a loop (Docker says ``restarting``, or the
restart count grew since the last check) is flagged. The environment and
service pages show both.

Why not an operation: the check changes nothing on any server (it only reads
``docker inspect``), and one operation per server per minute would bury the
operations list (1,440 rows a day per server) under rows nobody asked for. What
it finds is recorded on the replica rows (``container_state``,
``restart_count``, ``checked_at``) and logged by the worker; a change a user
makes stays an operation.

The parsing and the judgement are pure (:func:`parse_inspect`,
:func:`assess`) and unit-tested; :func:`check_server` does the I/O.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.endpoints import retire_endpoints_of_gone_replicas, set_replica_endpoint_health
from app.extensions import db
from app.models import Server, ServiceReplica
from app.models.base import utcnow
from app.models.enums import ReplicaStatus
from app.models.service import REMOVED_BY_KEYSTONE
from app.remote import Connection, ConnectionPool, RemoteError
from app import redis_keys
from app.shell import Command, cmd

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 60          # seconds between checks
FIELD_SEP = "\x1f"            # unit separator: never in a container name or a Docker state

# One line per container: name, id, state, running, restart count, health, exit code, replica label.
INSPECT_FORMAT = FIELD_SEP.join([
    "{{.Name}}", "{{.Id}}", "{{.State.Status}}", "{{.State.Running}}", "{{.RestartCount}}",
    "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", "{{.State.ExitCode}}",
    '{{index .Config.Labels "dev.keystone.replica"}}',
])
# A constant script; the format is its positional argument (never pasted in).
_INSPECT_ALL_SH = ('ids=$(docker ps -aq --filter label=dev.keystone.managed=true) || exit 2; '
                   '[ -z "$ids" ] && exit 0; '
                   'docker inspect --format "$1" $ids')

# What a replica's container can be, as the pages say it.
GONE = "gone"
CRASH_LOOP = "crash_loop"
BAD_STATES = ("exited", "dead", "restarting", GONE, CRASH_LOOP)


def lock_key(config=None) -> str:
    """Held while a health pass runs: never two at once (per installation)."""
    return redis_keys.key("health", "lock", config=config)


def schedule_key(config=None) -> str:
    """Set when a health pass was enqueued; its TTL spaces the passes."""
    return redis_keys.key("health", "scheduled", config=config)


def inspect_all_command() -> Command:
    """``docker inspect`` of every Keystone-managed container on the server, one command."""
    return cmd("sh", "-c", _INSPECT_ALL_SH, "sh", INSPECT_FORMAT)


@dataclass(frozen=True)
class ContainerState:
    name: str
    id: str
    status: str          # created / running / restarting / paused / exited / dead
    running: bool
    restart_count: int
    health: str          # healthy / unhealthy / starting / none
    exit_code: int
    replica_id: int | None


def parse_inspect(text: str) -> dict[str, ContainerState]:
    """Container name -> state, from :func:`inspect_all_command`'s output.

    Lines that do not have the expected shape (a login banner, a warning) are
    skipped, never guessed at.
    """
    out: dict[str, ContainerState] = {}
    for line in (text or "").splitlines():
        parts = line.strip("\r").split(FIELD_SEP)
        if len(parts) != 8:
            continue
        name, cid, status, running, restarts, health, code, replica = parts
        name = name.strip().lstrip("/")
        if not name or not restarts.strip().isdigit():
            continue
        try:
            exit_code = int(code.strip())
        except ValueError:
            exit_code = 0
        rid = replica.strip()
        out[name] = ContainerState(
            name=name, id=cid.strip(), status=status.strip().lower(),
            running=running.strip() == "true", restart_count=int(restarts.strip()),
            health=health.strip().lower() or "none", exit_code=exit_code,
            replica_id=int(rid) if rid.isdigit() else None)
    return out


@dataclass(frozen=True)
class Assessment:
    """What one check concludes about one replica."""

    status: str               # ReplicaStatus value: running / failed
    health: str               # HealthStatus value
    container_state: str      # running / exited / restarting / gone / crash_loop / ...
    restart_count: int | None
    problem: str | None       # the sentence the pages show, None when all is well


def assess(state: ContainerState | None, previous_restarts: int | None) -> Assessment:
    """Judge a replica from its container's state and the restart count seen last time
    (None before the first check: a deploy starts containers with none)."""
    if state is None:
        return Assessment("failed", "unhealthy", GONE, previous_restarts,
                          "its container is gone (removed outside Keystone?)")
    restarts = state.restart_count
    grew = restarts - (previous_restarts or 0)
    if state.status == "restarting" or (grew >= 2 and state.health != "healthy"):
        return Assessment("running", "unhealthy", CRASH_LOOP, restarts,
                          f"it restarts in a loop ({restarts} restarts, last exit code "
                          f"{state.exit_code})")
    if not state.running:
        what = "died" if state.status in ("exited", "dead") else f"is {state.status}"
        return Assessment("failed", "unhealthy", state.status or "exited", restarts,
                          f"its container {what} (exit code {state.exit_code})")
    if grew > 0:
        return Assessment("running", _health(state.health), "running", restarts,
                          f"it restarted {grew} time{'s' if grew != 1 else ''} since the last "
                          f"check ({restarts} in all)")
    return Assessment("running", _health(state.health), "running", restarts, None)


def _health(docker_health: str) -> str:
    return {"healthy": "healthy", "unhealthy": "unhealthy", "starting": "starting"}.get(
        docker_health, "healthy")  # no Docker health check: running is all there is to know


def replica_problem(replica) -> str | None:
    """The sentence the pages show for a replica, from what the last check recorded."""
    cfg = replica.config or {}
    return cfg.get("health_problem")


# --------------------------------------------------------------------------- I/O

def check_server(server, replicas, pool, *, timeout: float = 60) -> dict[int, Assessment]:
    """One SSH connection and one command for ``server``; an assessment per replica."""
    host = server.public_ip or server.private_ip
    key = server.organisation.management_key_private if server.organisation else None
    if not host or not key or not server.host_key_fingerprint:
        return {}  # never pin a host key from a background check
    try:
        conn = pool.get(host, int(server.ssh_port or 22), server.management_user, key,
                        server.host_key_fingerprint)
        res = conn.run(inspect_all_command(), timeout=timeout, pty=False)
    except RemoteError as exc:
        log.warning("health: %s unreachable: %s", server.name, type(exc).__name__)
        return {}
    if res.exit_code not in (0,):
        log.warning("health: docker inspect on %s exited %s", server.name, res.exit_code)
        return {}
    states = parse_inspect(res.stdout)
    return {r.id: assess(states.get(r.container_name), r.restart_count) for r in replicas}


def check_health(app=None) -> dict:
    """One pass over every server with live replicas. Returns counts (for logs and tests)."""
    import sqlalchemy as sa


    watched = (ReplicaStatus.RUNNING, ReplicaStatus.FAILED)
    rows = db.session.execute(sa.select(ServiceReplica).where(
        ServiceReplica.status.in_(watched))).scalars().all()
    # A failed replica is watched only when this check marked it (it may come back).
    # Not one Keystone removed itself (a failed deploy's replica): there is nothing to watch.
    rows = [r for r in rows if r.status == ReplicaStatus.RUNNING
            or (r.container_state and r.container_state != REMOVED_BY_KEYSTONE)]
    by_server: dict[int, list] = {}
    for r in rows:
        by_server.setdefault(r.server_id, []).append(r)
    servers = {s.id: s for s in db.session.execute(
        sa.select(Server).where(Server.id.in_(list(by_server) or [-1]))).scalars()}
    retire_endpoints_of_gone_replicas()
    db.session.commit()  # no transaction held across SSH
    pool = ConnectionPool(factory=Connection, connect_timeout=10, keepalive=5,
                          dead_peer_timeout=20)
    counts = {"servers": 0, "replicas": 0, "problems": 0, "handshakes": 0, "endpoints": 0}
    try:
        for server_id, replicas in by_server.items():
            server = servers.get(server_id)
            if server is None:
                continue
            found = check_server(server, replicas, pool)
            if not found:
                continue
            counts["servers"] += 1
            now = utcnow()
            for r in replicas:
                a = found.get(r.id)
                if a is None:
                    continue
                counts["replicas"] += 1
                counts["problems"] += a.problem is not None
                # Only if a deploy did not change the row meanwhile (it owns its replicas).
                cfg = {**(r.config or {}), "health_problem": a.problem}
                res = db.session.execute(sa.update(ServiceReplica).where(
                    ServiceReplica.id == r.id, ServiceReplica.status == r.status).values(
                    status=ReplicaStatus(a.status), health_status=a.health,
                    container_state=a.container_state, restart_count=a.restart_count,
                    checked_at=now, config=cfg).execution_options(synchronize_session=False))
                if res.rowcount:
                    # The endpoints this replica serves (SPEC 14) say what the check saw:
                    # attachments and upstreams read their health from there.
                    counts["endpoints"] += set_replica_endpoint_health(
                        r.id, a.health if a.status == "running" else "unhealthy")
                if a.problem:
                    log.warning("health: %s on %s: %s", r.container_name, server.name,
                                a.problem)
            db.session.commit()
        counts["handshakes"] = pool.handshakes
    finally:
        pool.close()
    return counts
