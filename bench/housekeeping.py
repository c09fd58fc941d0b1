"""Benchmark: a server's disk growth over N deploys with housekeeping on, against off.

Why: issue 23 -- every deploy leaves an image (and build cache, directories) behind; a
server that deploys daily fills its disk unless something removes what rollback no longer
needs. One bed on the sandbox (one provisioned server, the sandbox registry, keep 5):

* "on": N deploys of tiny commits, and after each the housekeeping operation the deploy's
  end listener started (run inline, as the worker would);
* "off": N more deploys, their housekeeping never run.

Growth is measured with ``du`` of the server's Docker root and /home/keystone (the inner
engine's vfs storage: each image is a full copy, the sandbox's worst case), before and
after each phase; "on" runs first, so "off" starts from a housekept server. The DB size
after 10,000 operations is bench.housekeeping_db's. Prints one JSON line.

    python -m bench.housekeeping [--deploys 20] [--keep-artifacts 5] [--sandbox keystone-bench] [--keep]
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _du(server) -> int:
    out = server.exec("sh", "-c", "du -s -B1 -x /var/lib/docker /home/keystone 2>/dev/null "
                      "| awk '{s+=$1} END {print s}'", check=False).stdout.strip()
    return int(out or 0)


def _phase(bed, n: int, housekeeping: bool) -> dict:
    from app.extensions import db
    from app.housekeeping.handlers import active_housekeeping
    from app.sandbox.sample import push_new_commit
    server = bed.sandbox_servers[0]
    before = _du(server)
    t0 = time.monotonic()
    freed = 0
    for _ in range(n):
        push_new_commit(bed.sandbox.git)
        bed.deploy()
        op = active_housekeeping(bed.server_ids[0])
        if housekeeping and op is not None:
            freed += int((bed.run(op.id).result or {}).get("freed_bytes") or 0)
        elif op is not None:   # off: the operation the end listener started never runs
            from app.operations.lifecycle import finish
            from app.models.enums import OperationStatus
            finish(op.id, OperationStatus.CANCELLED, "housekeeping off (benchmark)")
        db.session.expire_all()
    after = _du(server)
    return {"deploys": n, "disk_before_mb": round(before / 1e6, 1),
            "disk_after_mb": round(after / 1e6, 1),
            "growth_mb": round((after - before) / 1e6, 1),
            "growth_per_deploy_mb": round((after - before) / 1e6 / max(1, n), 1),
            "reported_freed_mb": round(freed / 1e6, 1) if housekeeping else None,
            "wall_s": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.housekeeping")
    parser.add_argument("--deploys", type=int, default=20, help="deploys per phase")
    parser.add_argument("--keep-artifacts", type=int, default=5,
                        help="the environment's builds kept for rollback (default 5: with fewer "
                             "than 7 deploys per phase nothing is old enough to remove)")
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--sandbox", default="keystone-bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    args = parser.parse_args(argv)
    from bench.cutover import _testbed
    from app.extensions import db
    from app.models import Registry
    import sqlalchemy as sa
    t0 = time.monotonic()
    with _testbed(args, "bench-housekeeping", server_count=1) as (bed, _info):
        env = bed.env
        env.registry_id = db.session.execute(sa.select(Registry.id).where(
            Registry.organisation_id == bed.org_id)).scalar_one()
        env.keep_artifacts = args.keep_artifacts
        db.session.commit()
        on = _phase(bed, args.deploys, True)
        off = _phase(bed, args.deploys, False)
        keep = bed.env.keep_artifacts
    result = {"bench": "housekeeping", "deploys_per_phase": args.deploys,
              "keep_artifacts": keep, "on": on, "off": off,
              "wall_s": round(time.monotonic() - t0, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
