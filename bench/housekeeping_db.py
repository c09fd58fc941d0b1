"""Benchmark: the control plane's database after 10,000 operations, before and after the
log retention (app.housekeeping.control.archive_old_logs) moves old step logs out.

A fresh SQLite database (the default install) at head; 10,000 finished deploy-like
operations of 6 steps each, every step with a log shaped like a real one (docker build
and compose lines with ids and digests that do not repeat). Then every operation is made
older than the retention, the archive runs, and ``VACUUM`` returns the freed pages.
Prints one JSON line.

    python -m bench.housekeeping_db [--operations 10000] [--lines 40]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

TEMPLATES = [
    "Step {n}/14 : RUN composer install --no-dev --optimize-autoloader",
    " ---> Running in {h12}",
    " ---> {h12}",
    "Removing intermediate container {h12}",
    "Successfully built {h12}",
    "{ts} ks-web-{sid}-blue-op{op}  | [{ts}] NOTICE: ready to handle connections",
    "digest: sha256:{h64} size: {size}",
    "{h12}: Pushed",
    "Container ks-web-{sid}-green-op{op}  Started",
    "$ docker compose --project-name ks-svc-{sid}-blue-op{op} up -d --no-build",
]


def _log(rng: random.Random, lines: int, op: int) -> str:
    out = []
    for n in range(lines):
        t = rng.choice(TEMPLATES)
        out.append(t.format(n=n % 14 + 1, h12=rng.getrandbits(48).to_bytes(6, "big").hex(),
                            h64=rng.getrandbits(256).to_bytes(32, "big").hex(),
                            ts=f"2026-12-02T12:{n % 60:02d}:{rng.randint(0, 59):02d}Z",
                            sid=rng.randint(1, 40), op=op, size=rng.randint(500, 9000)))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.housekeeping_db")
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lines", type=int, default=40, help="log lines per step")
    args = parser.parse_args(argv)
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade
    import sqlalchemy as sa

    from app import create_app
    from app.extensions import db
    from app.housekeeping.control import archive_old_logs
    from app.models import Operation, OperationStep
    from app.models.base import utcnow

    work = Path(tempfile.mkdtemp(prefix="keystone-bench-db-"))
    path = work / "keystone.db"
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
                      "ENCRYPTION_KEYS": [Fernet.generate_key().decode()], "SECRET_KEY": "bench",
                      "REDIS_URL": "redis://127.0.0.1:1/0"}, instance_path=str(work / "i"))
    rng = random.Random(23)
    with app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organisations (id, name, slug, onboarding_state, "
                                 "created_at, updated_at) VALUES (1, 'o', 'o', '{}', "
                                 "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        when = utcnow() - dt.timedelta(days=1)
        t0 = time.monotonic()
        ops_table, steps_table = Operation.__table__, OperationStep.__table__
        for start in range(0, args.operations, 500):
            ops, steps = [], []
            for i in range(start, min(args.operations, start + 500)):
                op_id = i + 1
                ops.append({"id": op_id, "organisation_id": 1, "hash": os.urandom(16).hex(),
                            "kind": "environment_deploy", "target_type": "environment",
                            "target_id": 1, "status": "succeeded", "timeout_seconds": 3600,
                            "lock_keys": [], "params": {}, "result": {"commit": "a" * 40},
                            "summary": f"Deploy shop/production #{op_id}",
                            "started_at": when, "finished_at": when,
                            "created_at": when, "updated_at": when})
                for n in range(args.steps):
                    steps.append({"operation_id": op_id, "name": f"step {n}", "order": n + 1,
                                  "status": "succeeded", "logs": _log(rng, args.lines, op_id),
                                  "error_logs": "", "is_cleanup": False,
                                  "script": "docker compose up -d", "created_at": when,
                                  "updated_at": when})
            with db.engine.begin() as conn:
                conn.execute(ops_table.insert(), ops)
                conn.execute(steps_table.insert(), steps)
        fill_s = time.monotonic() - t0
        with db.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
        hot = path.stat().st_size
        log_bytes = db.session.execute(sa.select(sa.func.sum(sa.func.length(
            OperationStep.logs)))).scalar() or 0
        t1 = time.monotonic()
        out = archive_old_logs(now=utcnow(), days=0, batch=2000)
        archive_s = time.monotonic() - t1
        db.session.remove()
        with db.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
        after = path.stat().st_size
        db.engine.dispose()
    result = {"bench": "housekeeping_db", "database": "sqlite", "operations": args.operations,
              "steps": args.operations * args.steps, "log_mb": round(log_bytes / 1e6, 1),
              "db_mb": round(hot / 1e6, 1),
              "db_after_archive_mb": round(after / 1e6, 1),
              "steps_archived": out["steps_archived"], "archive_s": round(archive_s, 1),
              "fill_s": round(fill_s, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
