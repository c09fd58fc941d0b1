"""Control-plane CPU cost of server metrics for 100 servers (issue 17 section 4).

    python -m bench.metrics [--servers 100] [--passes 5] [--sandbox NAME]

What one minute costs Keystone's own processes, measured as process CPU time
(``time.process_time``, all threads):

* ``store``: parsing 100 servers' probe outputs (realistic text: /proc/stat, /proc/meminfo,
  /proc/loadavg, df, ``docker stats`` of 12 containers) and storing them with the roll-up
  (minute row, hourly running mean, pruning) in a database already holding a full day of
  minute samples and 30 days of hourly rows for every server (SQLite in a temp dir, the real
  migration chain). Averaged over ``--passes`` passes.
* ``ssh``: the round trip, on sandbox servers over real SSH: a fresh connection (handshake,
  key exchange, authentication) plus the probe command, as :func:`app.metrics.collect_metrics`
  does each minute; measured ``--ssh-samples`` times on a sandbox server and scaled to
  ``--servers``. With ``--sandbox`` omitted the sandbox ``keystone-bench`` is used if it
  runs; if none runs, ``ssh_cpu_seconds_per_server`` is null and the total is the store part.

Prints ONE JSON line: servers, cpu_percent_of_one_core (of the 60 s interval), and the parts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 60.0


def probe_text(rng: random.Random, containers: int = 12) -> str:
    user, system, idle = rng.randint(10**6, 10**7), rng.randint(10**5, 10**6), 10**8
    lines = ["==stat", f"cpu  {user} 0 {system} {idle} 5000 0 300 0 0 0", "==meminfo"]
    total = 4_000_000
    lines += [f"MemTotal:       {total} kB", f"MemFree:         {rng.randint(10**5, 10**6)} kB",
              f"MemAvailable:   {rng.randint(10**6, 3 * 10**6)} kB"]
    lines += [f"{k}:  {rng.randint(0, 10**6)} kB" for k in
              ("Buffers", "Cached", "SwapCached", "Active", "Inactive", "SwapTotal", "SwapFree",
               "Dirty", "Writeback", "AnonPages", "Mapped", "Shmem", "Slab", "SReclaimable",
               "SUnreclaim", "KernelStack", "PageTables", "CommitLimit", "Committed_AS",
               "VmallocTotal", "VmallocUsed", "HugePages_Total", "Hugepagesize", "DirectMap4k")]
    lines += ["==loadavg", f"{rng.random():.2f} {rng.random():.2f} {rng.random():.2f} 3/412 9981",
              "==df", "Filesystem     1024-blocks     Used Available Capacity Mounted on",
              f"/dev/sda1         80000000 {rng.randint(10**7, 6 * 10**7)} 20000000  60% /",
              "==docker"]
    for i in range(containers):
        lines.append(f"keystone_service_{i}_web_{rng.randint(1, 9)}\t{rng.random() * 50:.2f}%\t"
                     f"{rng.random() * 500:.1f}MiB / 3.8GiB")
    lines += ["==stat2", f"cpu  {user + 900} 0 {system + 300} {idle + 4800} 5000 0 300 0 0 0"]
    return "\n".join(lines) + "\n"


def seed_history(db, server_ids: list[int], now: dt.datetime) -> int:
    """A full day of minute rows and 30 days of hour rows per server (what retention keeps)."""
    from app.models import ServerMetric
    base = {"cpu_percent": 5.0, "mem_used_mb": 1000.0, "mem_total_mb": 4000.0,
            "disk_used_gb": 20.0, "disk_total_gb": 80.0, "load1": 0.3, "load5": 0.2,
            "load15": 0.1, "containers": {f"c{i}": {"cpu": 1.0, "mem_mb": 50.0}
                                          for i in range(12)}}
    rows = 0
    for sid in server_ids:
        batch = [{"server_id": sid, "resolution": "minute", "samples": 1,
                  "taken_at": now - dt.timedelta(minutes=m), **base} for m in range(1, 1440)]
        batch += [{"server_id": sid, "resolution": "hour", "samples": 60,
                   "taken_at": (now - dt.timedelta(hours=h)).replace(minute=0), **base}
                  for h in range(1, 720)]
        db.session.execute(sa.insert(ServerMetric.__table__), batch)
        rows += len(batch)
    db.session.commit()
    return rows


def measure_store(servers: int, passes: int) -> dict:
    from flask_migrate import upgrade

    from app import create_app, metrics
    from app.accounts import create_account
    from app.extensions import db
    from app.models import Server
    rng = random.Random(17)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'bench.db'}",
                          "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
                          "SECRET_KEY": "bench", "REDIS_URL": "redis://127.0.0.1:1/0"},
                         instance_path=str(tmp / "instance"))
        import logging
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with app.app_context():
            upgrade()
            user = create_account(organisation="Bench", email="bench@example.com",
                                  password="bench-password-1")
            srv = [Server(organisation_id=user.organisation.id, name=f"srv-{i}",
                          public_ip=f"10.0.{i // 250}.{i % 250}") for i in range(servers)]
            db.session.add_all(srv)
            db.session.commit()
            ids = [s.id for s in srv]
            start = metrics.minute_of(dt.datetime(2026, 12, 2, 12, 0))
            seeded = seed_history(db, ids, start)
            texts = [[probe_text(rng) for _ in ids] for _ in range(passes)]
            cpu = []
            for p in range(passes):
                now = start + dt.timedelta(minutes=p)
                t0 = time.process_time()
                for sid, text in zip(ids, texts[p]):
                    metrics.store(db.session, sid, metrics.parse_probe(text), now, prune=False)
                metrics.prune_old(db.session, now)
                db.session.commit()
                cpu.append(time.process_time() - t0)
            db.session.remove()
            db.engine.dispose()
    return {"store_cpu_seconds_per_pass": round(sum(cpu) / len(cpu), 4),
            "seeded_rows": seeded}


def measure_ssh(sandbox: str | None, samples: int) -> dict:
    """CPU seconds of one fresh connection + probe on a sandbox server, or None."""
    from app.metrics import Target, collect_server
    from app.remote import Connection, ConnectionPool
    from app.sandbox import Sandbox
    name = sandbox or "keystone-bench"
    try:
        info = Sandbox(name=name, state_dir=ROOT / "instance" / "sandbox" / name).status()
        server = next(s for s in info.servers if s.has_docker)
    except Exception:  # noqa: BLE001 - no such sandbox running
        return {"ssh_cpu_seconds_per_server": None, "ssh_wall_seconds_per_server": None,
                "ssh_sandbox": None}
    target = Target(0, server.name, server.host, server.ssh_port, server.user,
                    server.root_key_path.read_text(), server.host_key_fingerprint)
    cpu, wall = [], []
    for _ in range(samples):
        pool = ConnectionPool(factory=Connection, connect_timeout=10)
        t0, w0 = time.process_time(), time.monotonic()
        try:
            sample = collect_server(target, pool)
        finally:
            pool.close()
        cpu.append(time.process_time() - t0)
        wall.append(time.monotonic() - w0)
        if sample is None:
            raise RuntimeError(f"the probe failed on {server.name}")
    return {"ssh_cpu_seconds_per_server": round(sorted(cpu)[len(cpu) // 2], 4),
            "ssh_wall_seconds_per_server": round(sorted(wall)[len(wall) // 2], 3),
            "ssh_sandbox": name}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--sandbox", default=None)
    parser.add_argument("--ssh-samples", type=int, default=10)
    args = parser.parse_args()
    result = {"servers": args.servers}
    result.update(measure_store(args.servers, args.passes))
    result.update(measure_ssh(args.sandbox, args.ssh_samples))
    per_minute = result["store_cpu_seconds_per_pass"]
    if result["ssh_cpu_seconds_per_server"] is not None:
        per_minute += result["ssh_cpu_seconds_per_server"] * args.servers
    result["cpu_seconds_per_minute"] = round(per_minute, 3)
    result["cpu_percent_of_one_core"] = round(100.0 * per_minute / INTERVAL, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
