"""Deploys do only what changed (issue 20.4): what each kind of deploy skips, and where the
time of a deploy goes.

    python -m bench.deploy_phases [--sandbox keystone-bench] [--keep]

On a sandbox server provisioned by Keystone (the same bed as bench.cutover, one server, a
Caddy gateway, Postgres and Valkey attached), after a first deploy that is not measured:

1. **vars only**: one variable changes, then a deploy. Expected: the artifact is reused, no
   build and no fetch (only ``git ls-remote``), the web replica is redeployed.
2. **no change**: a deploy right after. Expected: nothing deployed, no remote command beyond
   reading facts (``docker image inspect``), under 1 s of Keystone time.
3. **PHP only**: a commit changing application files only (not composer.json/.lock), then a
   deploy. Expected: a build whose ``composer install`` layer comes from the cache (the
   build log's ``Using cache`` right after the dependency step).
4. **vars only, no migrations**: case 1 with the web service's migrations disabled: the
   new replica's creation has no migrations to overlap (Keystone's own time unhelped).

Every deploy runs through the operations engine; its per-phase seconds are read from the
operation's result (``phases``/``timing``, what the operation page shows). ``overhead_s`` is
the time a deploy adds beyond the build, the pulls, the migrations and the health wait.
Prints ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _tree(op_id: int) -> list:
    """The operation and all its descendants."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import Operation
    ids, frontier = [op_id], [op_id]
    while frontier:
        frontier = db.session.execute(sa.select(Operation.id).where(
            Operation.parent_id.in_(frontier))).scalars().all()
        ids += frontier
    return db.session.execute(sa.select(Operation).where(Operation.id.in_(ids))).scalars().all()


def _steps(op_id: int) -> list:
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import OperationStep
    ids = [o.id for o in _tree(op_id)]
    return db.session.execute(sa.select(OperationStep).where(
        OperationStep.operation_id.in_(ids)).order_by(OperationStep.id)).scalars().all()


def remote_commands(op_id: int) -> list[str]:
    """Every command the deploy ran on a server (the steps' recorded scripts)."""
    out = []
    for step in _steps(op_id):
        if step.server_id is not None and step.script:
            out += [line for line in step.script.splitlines() if line.strip()]
    return out


def composer_layer_cached(build_log: str) -> bool | None:
    """True when the classic builder took the dependency step (``RUN composer install ...
    --no-scripts``) from its cache; None when the log has no such step."""
    lines = build_log.splitlines()
    for i, line in enumerate(lines):
        if " : RUN composer install" in line and "--no-scripts" in line:
            following = " ".join(lines[i + 1:i + 3])
            return "Using cache" in following
    return None


def _deploy(bed) -> dict:
    from app.extensions import db
    started = time.monotonic()
    op = bed.deploy()
    wall = time.monotonic() - started
    db.session.expire_all()
    steps = _steps(op.id)
    names = [s.name for s in steps]
    build = next((s for s in steps if s.name == "Build image"), None)
    result = op.result or {}
    return {"op": op, "wall_s": round(wall, 2), "operation_s": round(op.duration_seconds or 0, 2),
            "phases": result.get("phases", {}), "timing": result.get("timing", {}),
            "noop": bool(result.get("noop")), "changed": result.get("changed_services", []),
            "built": build is not None, "fetched": "Fetch source" in names,
            "resolved": any(n.startswith("Resolve ") for n in names),
            "reused": "Reuse build artifact" in names,
            "build_log": build.logs if build is not None else "",
            "commands": remote_commands(op.id), "steps": _step_seconds(steps)}


def timeline(op_id: int) -> list[str]:
    """Every operation and step of a deploy as ``+start..+end name``, in start order:
    what ran when (``--timeline`` prints it to stderr)."""
    ops = _tree(op_id)
    t0 = min(o.started_at for o in ops if o.started_at)
    rows = []
    for o in ops:
        if o.started_at:
            rows.append((o.started_at, o.finished_at, f"[{o.kind.value}]"))
    for s in _steps(op_id):
        if s.started_at:
            rows.append((s.started_at, s.finished_at, f"  {s.name}"))
    out = []
    for start, end, name in sorted(rows, key=lambda r: r[0]):
        a = (start - t0).total_seconds()
        b = (end - t0).total_seconds() if end else float("nan")
        out.append(f"+{a:6.3f} .. +{b:6.3f}  {name}")
    return out


def _step_seconds(steps) -> list:
    """``[[name, seconds], ...]`` of the deploy's steps, slowest first: where the time went."""
    out = []
    for s in steps:
        if s.started_at and s.finished_at:
            out.append([s.name, round((s.finished_at - s.started_at).total_seconds(), 3)])
    return sorted(out, key=lambda x: -x[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy_phases")
    parser.add_argument("--sandbox", default="keystone-bench")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox up afterwards")
    parser.add_argument("--timeline", action="store_true",
                        help="print each measured deploy's operations and steps to stderr")
    parser.add_argument("--bare", action="store_true",
                        help="bring the sandbox up with its bare server (as the test tiers do)")
    args = parser.parse_args(argv)
    args.servers = 1

    from app.extensions import db
    from app.models import EnvironmentVariable
    from app.models.enums import VariableSource
    from app.sandbox.sample import push_new_commit
    from bench.cutover import _testbed

    out: dict = {"bench": "deploy_phases", "servers": 1}
    t0 = time.monotonic()
    load = [round(x, 2) for x in os.getloadavg()]
    with _testbed(args, "bench-deploy-phases", server_count=1) as (bed, info):
        push_new_commit(info.git)
        first = _deploy(bed)  # routes the slots, builds: not measured
        out["first_deploy_s"] = first["operation_s"]

        def variable_changed(key: str, label: str) -> dict:
            db.session.add(EnvironmentVariable(environment_id=bed.env_id, key=key,
                                               value=str(time.time_ns()),
                                               source=VariableSource.USER))
            db.session.commit()
            deployed = _deploy(bed)
            if args.timeline:
                print(f"{label}:", *timeline(deployed["op"].id), sep="\n", file=sys.stderr)
            return deployed

        # 1. Only a variable changed.
        v = variable_changed("BENCH_MARK", "vars only")
        out["vars_only"] = {
            "ok": v["reused"] and not v["built"] and not v["fetched"] and not v["noop"],
            "artifact_reused": v["reused"], "built": v["built"], "fetched": v["fetched"],
            "resolved_with_ls_remote": v["resolved"], "redeployed": v["changed"],
            "operation_s": v["operation_s"], "overhead_s": v["timing"].get("overhead_s"),
            "overhead_without_drain_window_s":
                v["timing"].get("overhead_without_drain_window_s"),
            "phases": v["phases"], "remote_commands": len(v["commands"]),
            "slowest_steps": v["steps"][:12]}

        # 2. Nothing changed.
        n = _deploy(bed)
        beyond_facts = [c for c in n["commands"] if not c.startswith("docker image inspect")]
        out["no_change"] = {
            "ok": n["noop"] and not beyond_facts and not n["built"],
            "noop": n["noop"], "operation_s": n["operation_s"], "wall_s": n["wall_s"],
            "remote_commands": len(n["commands"]), "beyond_facts": beyond_facts,
            "phases": n["phases"]}

        # 3. Only application (PHP) files changed: composer.json/.lock as they were.
        push_new_commit(info.git)
        p = _deploy(bed)
        cached = composer_layer_cached(p["build_log"])
        out["php_only"] = {
            "ok": p["built"] and cached is True, "built": p["built"],
            "composer_layer_cached": cached,
            "cached_steps": p["build_log"].count("Using cache"),
            "operation_s": p["operation_s"], "build_s": p["phases"].get("build"),
            "overhead_s": p["timing"].get("overhead_s"),
            "overhead_without_drain_window_s":
                p["timing"].get("overhead_without_drain_window_s"),
            "phases": p["phases"], "timing": p["timing"]}

        # 4. Only a variable changed, with the migrations disabled: nothing for the new
        # replica's creation to overlap, so Keystone's own time shows without that help.
        from app.models import Service
        web = db.session.get(Service, bed.web_id)
        web.config = {**(web.config or {}), "migration_mode": "disabled"}
        w = variable_changed("BENCH_MARK_2", "vars only, no migrations")
        out["vars_only_no_migrations"] = {
            "ok": w["reused"] and not w["built"] and "migrate" not in w["phases"],
            "operation_s": w["operation_s"], "overhead_s": w["timing"].get("overhead_s"),
            "overhead_without_drain_window_s":
                w["timing"].get("overhead_without_drain_window_s"),
            "phases": w["phases"], "remote_commands": len(w["commands"])}
    out["ok"] = all(out[k]["ok"] for k in ("vars_only", "no_change", "php_only",
                                           "vars_only_no_migrations"))
    out["load_before"] = load
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
