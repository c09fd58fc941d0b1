"""Parallel fan-out benchmark (issue 20 part 1): the same change deployed to 1 and to 4 servers.

    python -m bench.fanout [--servers 4] [--sandbox keystone-bench-fanout] [--keep]

Brings up a sandbox with ``--servers`` servers (provisioned by Keystone: the ``keystone``
user, UFW on), then for 1 server and for all of them builds a Keystone world on it
(app.sandbox.testbed: the sample app, Postgres, Valkey, a gateway per server), deploys
commit A once (warm-up, untimed) and times two changes, each the same on both beds:

* ``code``: commit B (pushed once before both beds): resolve, build, pull, start, health,
  gateway-confirmed cutover -- the whole deploy operation;
* ``config``: one environment variable added: the artifact is reused, so this is the
  per-server work and the cutover alone.

The 4-server bed builds once, pushes to the sandbox registry and pulls on every server
(side by side); the 1-server bed builds on its server. Prints ONE JSON line: wall
seconds of each deploy on 1 and N servers, their ratios (goal <= 1.3), the seconds of
the per-server phase (the ``service_deploy`` child: every server's start + health check)
and the load average while it ran. Each deploy is bounded by the operation's time limit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _timed_deploy(bed, **kw) -> tuple[float, float]:
    """(wall seconds of the deploy operation, seconds of its per-server phase)."""
    started = time.monotonic()
    op = bed.deploy(**kw)
    wall = time.monotonic() - started
    phase = sum(c.duration_seconds or 0 for c in op.children if c.kind.value == "service_deploy")
    return round(wall, 1), round(phase, 1)


def _measure(args, count: int, commits: tuple[str, str], keep: bool) -> dict:
    from app.extensions import db
    from app.models import EnvironmentVariable
    from app.models.enums import VariableSource
    from bench.cutover import _testbed
    opts = argparse.Namespace(**{**vars(args), "keep": keep})
    with _testbed(opts, f"bench-fanout-{count}", server_count=count) as (bed, _info):
        bed.deploy(commit_sha=commits[0])                     # warm-up: A everywhere
        code = _timed_deploy(bed, commit_sha=commits[1])      # A -> B
        db.session.add(EnvironmentVariable(environment_id=bed.env_id, key="FANOUT_BENCH",
                                           value=str(time.time_ns()),
                                           source=VariableSource.USER))
        db.session.commit()
        config = _timed_deploy(bed, commit_sha=commits[1])    # B with one more variable
        return {"code": code, "config": config}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout")
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--sandbox", default="keystone-bench-fanout")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    args = parser.parse_args(argv)
    if args.servers < 2:
        parser.error("--servers must be at least 2")
    from pathlib import Path

    from app.sandbox import Sandbox
    from app.sandbox.sample import push_new_commit
    root = Path(__file__).resolve().parents[1]
    sb = Sandbox(name=args.sandbox, state_dir=root / "instance" / "sandbox" / args.sandbox)
    info = sb.up(servers=args.servers, bare=False, stand_ins=True)
    commits = (push_new_commit(info.git), push_new_commit(info.git))
    load = [os.getloadavg()]
    one = _measure(args, 1, commits, keep=True)
    load.append(os.getloadavg())
    many = _measure(args, args.servers, commits, keep=args.keep)
    load.append(os.getloadavg())
    n = args.servers
    out = {
        "servers": [1, n],
        "code_change_seconds": {"1": one["code"][0], str(n): many["code"][0]},
        "config_change_seconds": {"1": one["config"][0], str(n): many["config"][0]},
        "ratio": round(many["code"][0] / one["code"][0], 2),
        "ratio_config_change": round(many["config"][0] / one["config"][0], 2),
        "per_server_phase_seconds": {"code": {"1": one["code"][1], str(n): many["code"][1]},
                                     "config": {"1": one["config"][1],
                                                str(n): many["config"][1]}},
        "concurrency": int(os.environ.get("KEYSTONE_DEPLOY_CONCURRENCY", "10")),
        "load_average_1m": [round(x[0], 1) for x in load],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
