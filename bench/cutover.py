"""Zero-downtime benchmark: constant keep-alive load through real Keystone deploys.

    python -m bench.cutover --deploys 10 --rps 200

Brings up a sandbox (default name ``keystone-bench``: servers with their own
Docker Engine over SSH, a registry, a git host), builds a Keystone world on
it through Keystone's own code (app.deploys.testbed: the sample Laravel-shaped
app, Postgres and Valkey attached, a Caddy gateway routing a domain), deploys
once, then sends constant load to the gateway on 127.0.0.1 (the server's
published port 80, the route's Host header; HTTP/1.1 keep-alive connections,
30% POST, ``--path`` /up by default) while it pushes a new commit and runs a full environment deploy
through the operations engine, ``--deploys`` times in a row.

Prints ONE JSON line: requests, non_2xx, connection_errors (failures left
after the one re-send browsers/curl make when a reused keep-alive connection
closes before any response byte, GETs only), raw_resets (every reset seen,
before any re-send), post_failures, deploys, p50/p95 deploy seconds (the
whole operation: resolve, build, migrate, start, health, cutover) and the
same for the cutover child alone. Every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q * (len(values) - 1)))))
    return round(values[k], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cutover")
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--path", default="/up",
                        help="what the load requests: /up (the app's health route, default) or / "
                             "(the sample's page: a Postgres connection and a Redis INCR per "
                             "request, about 70 requests/s on a 2-core machine while it builds)")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--sandbox", default="keystone-bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument("--max-seconds", type=float, default=3600)
    args = parser.parse_args(argv)
    if not 1 <= args.deploys <= 100 or not 0 < args.rps <= 2000:
        parser.error("--deploys 1..100, --rps 1..2000")

    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from app import create_app, embedded_redis
    from app.deploys.testbed import Testbed
    from app.extensions import db
    from app.sandbox import Sandbox
    from app.sandbox.sample import push_new_commit
    from bench.loadgen import LoadGenerator

    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="keystone-bench-cutover-"))
    redis_proc = embedded_redis.start(work / "redis.sock", work / "redis")
    sb = Sandbox(name=args.sandbox, state_dir=root / "instance" / "sandbox" / args.sandbox)
    info = sb.up(servers=max(2, args.servers), bare=False, stand_ins=True)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{work / 'keystone.db'}",
                      "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
                      "SECRET_KEY": "bench", "REDIS_URL": f"unix://{work / 'redis.sock'}",
                      "RQ_QUEUE": "bench-cutover"}, instance_path=str(work / "instance"))
    result: dict = {}
    started = time.monotonic()
    with app.app_context():
        upgrade()
        bed = Testbed(info, server_count=args.servers)
        try:
            bed.setup()
            push_new_commit(info.git)  # a good head, whatever an earlier run left there
            bed.deploy()  # the first deploy routes the slots; it is not measured
            load = LoadGenerator(bed.http_port(), bed.hostname, rps=args.rps, path=args.path,
                                 connections=args.connections, max_seconds=args.max_seconds)
            load_started = time.monotonic()
            durations: list[float] = []
            cutovers: list[float] = []
            failed: list[str] = []
            with load:
                time.sleep(2)
                for i in range(args.deploys):
                    if time.monotonic() - started > args.max_seconds:
                        break
                    push_new_commit(info.git)
                    t0 = time.monotonic()
                    op = bed.deploy(expect=None)
                    durations.append(time.monotonic() - t0)
                    if op.status.value != "succeeded":
                        failed.append(f"#{op.id}: {op.error}")
                    for child in op.children:
                        if child.kind.value == "gateway_cutover" and child.duration_seconds:
                            cutovers.append(child.duration_seconds)
                    print(f"deploy {i + 1}/{args.deploys}: {op.status.value} in "
                          f"{durations[-1]:.1f}s; {load.stats.requests} requests so far",
                          file=sys.stderr)
                time.sleep(2)
            load_seconds = time.monotonic() - load_started
            stats = load.stats
            result = {**stats.as_dict(), "deploys": len(durations) - len(failed),
                      "deploys_failed": len(failed),
                      "deploy_p50_s": _pct(durations, 0.5), "deploy_p95_s": _pct(durations, 0.95),
                      "cutover_p50_s": _pct(cutovers, 0.5), "cutover_p95_s": _pct(cutovers, 0.95),
                      "rps_target": args.rps,
                      "rps_achieved": round(stats.requests / max(load_seconds, 1e-9), 1),
                      "load_seconds": round(load_seconds, 1), "connections": args.connections,
                      "path": args.path,
                      "servers": args.servers}
            if stats.errors:
                result["error_kinds"] = dict(stats.errors)
            if failed:
                result["failures"] = failed[:5]
            if set(stats.statuses) - {200}:
                result["statuses"] = {str(k): v for k, v in stats.statuses.items()}
        finally:
            bed.cleanup()
            db.session.remove()
            if not args.keep:
                sb.down()
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
    print(json.dumps(result))
    return 0 if result and not result.get("deploys_failed") else 1


if __name__ == "__main__":
    sys.exit(main())
