"""Server-side speed of the pages a person looks at most.

Seeds one organisation with 200 environments, 1,000 services and 20,000
operations, and gives the measured environment 50 attachments (Postgres slices)
and 150 variables (SQLite in a temp dir, the real migration chain), then renders the
dashboard, an environment page and the operations list through the Flask test
client. Prints one JSON line: p95 and p50 milliseconds, the process's CPU milliseconds per
request (p50) and the SQL query count per page.
Run: python -m bench.dashboard [--runs 50] [--busy N]

``--busy N`` keeps N other processes spinning on the CPU while the pages are measured: a
load that is the same on every run (``--busy 1`` on this 2-core machine: one core taken,
a moderate load; ``--busy 2``: both, a saturated one). Without it the figures depend on
whatever else the machine does.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy import event

ENVS, SERVICES, OPERATIONS = 200, 1000, 20000


def seed(db, org_id: int, scale: float = 1.0) -> int:
    from app.models import (Application, Environment, Operation, Server, Service,
                            ServiceReplica)
    from app.models.enums import (DeployPolicy, OperationKind, OperationStatus,
                                  ServiceCategory)
    envs_n, services_n, ops_n = (max(2, int(ENVS * scale)), max(4, int(SERVICES * scale)),
                                 max(10, int(OPERATIONS * scale)))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    servers = [Server(organisation_id=org_id, name=f"srv-{i}", public_ip=f"203.0.113.{i}")
               for i in range(10)]
    db.session.add_all(servers)
    apps = [Application(organisation_id=org_id, name=f"app-{i}",
                        repository_url=f"git@example.com:acme/app-{i}.git") for i in range(50)]
    db.session.add_all(apps)
    db.session.flush()
    envs = [Environment(application_id=apps[i % 50].id, name=f"env-{i}") for i in range(envs_n)]
    db.session.add_all(envs)
    db.session.flush()
    services = []
    for i in range(services_n):
        env = envs[i % envs_n]
        services.append(Service(organisation_id=org_id, environment_id=env.id, name=f"svc-{i}",
                                category=ServiceCategory.APPLICATION, type="laravel",
                                driver_name="laravel",
                                deploy_policy=DeployPolicy.WITH_ENVIRONMENT))
    db.session.add_all(services)
    db.session.flush()
    db.session.add_all([ServiceReplica(service_id=s.id, server_id=servers[i % 10].id,
                                       container_name=f"c-{s.id}")
                        for i, s in enumerate(services)])
    rows = []
    kinds = list(OperationKind)
    statuses = [OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELLED]
    for i in range(ops_n):
        env = envs[i % envs_n]
        rows.append({"organisation_id": org_id, "hash": f"{i:016x}",
                     "kind": random.choice(kinds).value, "target_type": "environment",
                     "target_id": env.id, "status": random.choice(statuses).value,
                     "timeout_seconds": 1800, "lock_keys": [], "params": {}, "result": {},
                     "created_at": now - dt.timedelta(seconds=ops_n - i),
                     "updated_at": now, "started_at": now, "finished_at": now})
    db.session.execute(sa.insert(Operation.__table__), rows)
    target = envs[envs_n // 2]
    _attachments(db, org_id, target, servers[0], max(1, int(50 * scale)))
    db.session.commit()
    return target.id


def _attachments(db, org_id: int, env, server, n: int) -> None:
    """``n`` Postgres services, each with a slice attached to ``env`` and with its managed DB_* variables, plus
    ``n`` user variables: the environment page's attachments and variables components."""
    from app.models import EnvironmentAttachment, EnvironmentVariable, Service, ServiceSlice
    from app.models.enums import (AttachmentRole, DeployPolicy, ServiceCategory, SliceStatus,
                                  SliceType, VariableSource)
    for i in range(n):
        pg = Service(organisation_id=org_id, name=f"postgres-{i}", type="postgres",
                     category=ServiceCategory.DATABASE, driver_name="postgres",
                     server_id=server.id, deploy_policy=DeployPolicy.DEPENDENCY_ONLY)
        db.session.add(pg)
        db.session.flush()
        sl = ServiceSlice(service_id=pg.id, environment_id=env.id, name=f"db_{i}",
                          type=SliceType.POSTGRES_DATABASE, status=SliceStatus.READY,
                          config={"database": f"db_{i}", "username": f"u_{i}"},
                          credentials={"password": f"pw-{i}"})
        db.session.add(sl)
        db.session.flush()
        db.session.add(EnvironmentAttachment(
            environment_id=env.id, service_id=pg.id, service_slice_id=sl.id,
            role=AttachmentRole.DATABASE, env_prefix=f"DB{i}_" if i else None,
            is_primary=i == 0, config={}))
        for key, value, secret in ((f"DB{i}_DATABASE", f"db_{i}", False),
                                   (f"DB{i}_PASSWORD", f"pw-{i}", True)):
            db.session.add(EnvironmentVariable(
                environment_id=env.id, key=key, value=value, is_secret=secret,
                source=VariableSource.MANAGED_ATTACHMENT, service_slice_id=sl.id,
                overridable=False))
        db.session.add(EnvironmentVariable(environment_id=env.id, key=f"USER_{i}",
                                           value=f"v{i}", source=VariableSource.USER))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the seeded rows (query counts must not change)")
    parser.add_argument("--busy", type=int, default=0,
                        help="other processes kept spinning on the CPU meanwhile")
    args = parser.parse_args()
    with busy_processes(args.busy):
        result = measure(args.runs, args.scale)
    result["busy_processes"] = args.busy
    result["cpus"] = os.cpu_count()
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` processes that keep one core busy each until the block ends."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
             for _ in range(max(0, n))]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def measure(runs: int = 50, scale: float = 1.0) -> dict:
    from app import create_app
    from app.accounts import create_account
    from app.extensions import db
    from flask_migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'bench.db'}",
                          "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
                          "SECRET_KEY": "bench", "REDIS_URL": "redis://127.0.0.1:1/0",
                          "WTF_CSRF_ENABLED": False}, instance_path=str(tmp / "instance"))
        import logging
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with app.app_context():
            upgrade()
            user = create_account(organisation="Bench", email="bench@example.com",
                                  password="bench-password-1")
            env_id = seed(db, user.organisation.id, scale)
            user_id = user.id
            queries = {"n": 0}

            @event.listens_for(db.engine, "before_cursor_execute")
            def _count(*_a, **_k):
                queries["n"] += 1

        pages = {"dashboard": "/", "environment": f"/environments/{env_id}",
                 "operations": "/operations"}
        client = app.test_client()
        import time as _time

        from app.models import User
        from app.security import LAST_SEEN_AT, SIGNED_IN_AT
        with app.app_context():
            session_user_id = db.session.get(User, user_id).get_id()  # "<id>:<generation>"
        with client.session_transaction() as sess:
            sess["_user_id"] = session_user_id
            sess["_fresh"] = True
            sess[SIGNED_IN_AT] = sess[LAST_SEEN_AT] = int(_time.time())
        result = {"environments": int(ENVS * scale), "services": int(SERVICES * scale),
                  "operations": int(OPERATIONS * scale),
                  "attachments_on_page": max(1, int(50 * scale)),
                  "variables_on_page": 3 * max(1, int(50 * scale))}
        # As wsgi.py does once the app is created: what the process holds to start is frozen
        # (a full garbage collection walks only what the pages allocate since).
        gc.collect()
        gc.freeze()
        for name, url in pages.items():
            times, cpu = [], []
            for i in range(runs + 3):
                queries["n"] = 0
                c0, t0 = time.process_time(), time.perf_counter()
                resp = client.get(url)
                elapsed = (time.perf_counter() - t0) * 1000
                spent = (time.process_time() - c0) * 1000
                if resp.status_code != 200:
                    raise SystemExit(f"{url} answered {resp.status_code}")
                if i >= 3:  # warm-up
                    times.append(elapsed)
                    cpu.append(spent)
            times.sort()
            cpu.sort()
            result[f"{name}_p95_ms"] = round(times[int(len(times) * 0.95) - 1], 2)
            result[f"{name}_p50_ms"] = round(times[len(times) // 2], 2)
            # CPU time of this process per request: what the page costs, whatever else runs
            # on the machine (wall time under load is mostly waiting for a core).
            result[f"{name}_cpu_p50_ms"] = round(cpu[len(cpu) // 2], 2)
            result[f"{name}_queries"] = queries["n"]
        gc.unfreeze()
        with app.app_context():
            db.engine.dispose()
        return result


if __name__ == "__main__":
    main()
