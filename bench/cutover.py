"""Zero-downtime benchmark: constant keep-alive load through real Keystone deploys.

    python -m bench.cutover --deploys 10 --rps 200

Brings up a sandbox (default name ``keystone-bench``: servers with their own
Docker Engine over SSH, a registry, a git host), builds a Keystone world on
it through Keystone's own code (app.sandbox.testbed: the sample Laravel-shaped
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

    python -m bench.cutover --https

The same over TLS: the gateways get their certificate for the route's name from the
sandbox's ACME CA (Pebble; ``acme_ca``/``acme_ca_root`` on the gateways, the only
difference from Let's Encrypt), and every load connection is an HTTPS keep-alive
connection to the gateway's published port 443 with SNI, verifying the certificate
against Pebble's root alone. Adds ``https: true`` and ``certificate_issuer``.

    python -m bench.cutover --saturate

The harder bed (issue 12): the app saturated. A web replica, a queue worker and
the scheduler; 32 keep-alive connections in a closed loop (no rate limit, each
sends its next request when the last answer arrived) on ``/``, which opens a
Postgres connection and increments a Redis key per request, plus 4 closed-loop
connections POSTing ``/items`` (one row per request, each with a unique name);
every build runs on the same server. 5 deploys of new commits, then 1 deploy of
a commit whose ``/up`` fails (expected to fail; the old version keeps serving).
Afterwards every POST answered 2xx is looked up in the table: ``lost_posts``
(answered but missing) and ``duplicated_posts`` (stored twice). The gateway's
own log is searched for "no upstreams available" (``gateway_no_upstream``).
Prints the usual JSON plus ``achieved_rps``, ``latency_p99_ms``,
``failed_deploys_expected`` and ``failed_deploys_unexpected``.
"""
from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def _testbed(args, queue: str, **options):
    """A Keystone world on the bench sandbox, inside an app context; torn down after.

    Its own SQLite file and embedded Redis in a temp dir, the sandbox ``args.sandbox``
    (left up with ``--keep``) provisioned by Keystone, and a set-up
    :class:`app.sandbox.testbed.Testbed` deploying as the ``keystone`` user.
    """
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade

    from app import create_app, embedded_redis
    from app.sandbox.testbed import Testbed, provision_sandbox_servers
    from app.extensions import db
    from app.sandbox import Sandbox

    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix=f"keystone-{queue}-"))
    redis_proc = embedded_redis.start(work / "redis.sock", work / "redis")
    sb = Sandbox(name=args.sandbox, state_dir=root / "instance" / "sandbox" / args.sandbox)
    info = sb.up(servers=max(2, args.servers), bare=getattr(args, "bare", False), stand_ins=True)
    if getattr(args, "https", False):
        # The route's name resolves (for Pebble's validation) to the first server.
        from app.drivers.caddy.tls import gateway_acme_config
        options["hostname"] = f"bench-{time.time_ns() % 10**9:09d}.test"
        options["tls"] = "auto"
        options["gateway_config"] = gateway_acme_config(info.acme.directory_url,
                                                        info.acme.server_root_pem)
        info.acme.set_a(options["hostname"], [s.private_ip for s in info.servers[:1]])
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{work / 'keystone.db'}",
                      "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
                      "SECRET_KEY": "bench", "REDIS_URL": f"unix://{work / 'redis.sock'}",
                      "RQ_QUEUE": queue}, instance_path=str(work / "instance"))
    with app.app_context():
        upgrade()
        # The servers as Keystone provisions a real one (keystone user, UFW, fail2ban).
        provision_sandbox_servers(info, max(2, args.servers))
        bed = Testbed(info, **options)
        try:
            bed.setup()
            yield bed, info
        finally:
            bed.cleanup()
            db.session.remove()
            if not args.keep:
                sb.down()
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


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
    parser.add_argument("--https", action="store_true",
                        help="the route gets a certificate from the sandbox's ACME CA and the "
                             "load uses TLS keep-alive connections (issue 22)")
    parser.add_argument("--saturate", action="store_true",
                        help="closed-loop load on / plus POST /items, a worker, builds on the "
                             "same server; 5 deploys and 1 failing deploy (issue 12)")
    args = parser.parse_args(argv)
    if args.saturate:
        return saturate(args)
    if not 1 <= args.deploys <= 100 or not 0 < args.rps <= 2000:
        parser.error("--deploys 1..100, --rps 1..2000")

    from app.sandbox.sample import push_new_commit
    from bench.loadgen import LoadGenerator

    result: dict = {}
    started = time.monotonic()
    with _testbed(args, "bench-cutover", server_count=args.servers) as (bed, info):
        push_new_commit(info.git)  # a good head, whatever an earlier run left there
        bed.deploy()  # the first deploy routes the slots; it is not measured
        port, tls, issuer = bed.http_port(), None, None
        if args.https:
            port = bed.sandbox_servers[0].https_port
            tls, issuer = _https_ready(info.acme, port, bed.hostname)
        load = LoadGenerator(port, bed.hostname, rps=args.rps, path=args.path,
                             connections=args.connections, max_seconds=args.max_seconds,
                             tls_context=tls)
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
        if args.https:
            result.update({"https": True, "certificate_issuer": issuer})
        if stats.errors:
            result["error_kinds"] = dict(stats.errors)
        if failed:
            result["failures"] = failed[:5]
        if set(stats.statuses) - {200}:
            result["statuses"] = {str(k): v for k, v in stats.statuses.items()}
    print(json.dumps(result))
    return 0 if result and not result.get("deploys_failed") else 1


def _https_ready(acme, port: int, hostname: str, timeout: float = 120):
    """Wait until the gateway serves ``hostname`` with a certificate Pebble issued; return a
    client context trusting Pebble's issuing root alone, and the certificate's issuer."""
    import http.client
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=acme.issuing_root())
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=hostname) as s:
                    issuer = dict(x[0] for x in s.getpeercert()["issuer"]).get("commonName")
                    return ctx, issuer
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            last = exc
        time.sleep(1)
    raise RuntimeError(f"no certificate for {hostname} on :{port}: {last!r}")


def saturate(args) -> int:
    """``--saturate``: see the module docstring."""
    from app.deploys.gateway_health import no_upstream_lines
    from app.sandbox.sample import push_broken_commit, push_new_commit
    from bench.loadgen import LoadGenerator

    good_deploys = 5 if args.deploys == 10 else args.deploys  # 10 is the throttled default
    args.servers = 1
    result: dict = {}
    with _testbed(args, "bench-saturate", server_count=1, worker=True) as (bed, info):
        push_new_commit(info.git)
        bed.deploy()  # routes the slots; not measured
        since = time.time()
        gets = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/",
                             connections=args.connections, post_ratio=0.0,
                             max_seconds=args.max_seconds, timeout=30)
        posts = LoadGenerator(bed.http_port(), bed.hostname, rps=0, path="/",
                              post_path="/items", connections=4, post_ratio=1.0,
                              max_seconds=args.max_seconds, timeout=30)
        durations: list[float] = []
        unexpected: list[str] = []
        expected_failed = 0
        load_started = time.monotonic()
        with gets, posts:
            time.sleep(5)
            plan = ["good"] * good_deploys + ["broken"]
            for i, kind in enumerate(plan):
                (push_broken_commit if kind == "broken" else push_new_commit)(info.git)
                t0 = time.monotonic()
                op = bed.deploy(expect=None)
                durations.append(time.monotonic() - t0)
                ok = op.status.value == "succeeded"
                if kind == "broken" and not ok:
                    expected_failed += 1
                elif kind == "broken" or not ok:
                    unexpected.append(f"{kind} #{op.id}: {op.status.value}: {op.error}")
                print(f"deploy {i + 1}/{len(plan)} ({kind}): {op.status.value} in "
                      f"{durations[-1]:.1f}s; {gets.stats.requests} GETs, "
                      f"{posts.stats.requests} POSTs", file=sys.stderr)
            time.sleep(5)
        load_seconds = time.monotonic() - load_started
        push_new_commit(info.git)  # leave a good head behind
        g, p = gets.stats, posts.stats
        stored = bed.psql("SELECT name, count(*) FROM sample_items WHERE name LIKE 'w%' "
                          "GROUP BY name")
        counts = {}
        for line in stored.splitlines():
            name, _, n = line.partition("|")
            counts[name] = int(n or 0)
        lost = [n for n in p.accepted_posts if counts.get(n, 0) == 0]
        duplicated = [n for n, c in counts.items() if c > 1]
        no_upstream = no_upstream_lines(bed.gateway_log(0, since))
        latencies = g.latencies + p.latencies
        p99 = None
        if latencies:
            latencies.sort()
            p99 = round(latencies[min(len(latencies) - 1,
                                      int(round(0.99 * (len(latencies) - 1))))] * 1000, 1)
        statuses = g.statuses + p.statuses
        result = {
            "requests": g.requests + p.requests, "gets": g.requests, "posts": p.requests,
            "non_2xx": g.non_2xx + p.non_2xx,
            "connection_errors": g.connection_errors + p.connection_errors,
            "raw_resets": g.raw_resets + p.raw_resets, "post_failures": p.post_failures,
            "lost_posts": len(lost), "duplicated_posts": len(duplicated),
            "gateway_no_upstream": len(no_upstream),
            "deploys": len(durations), "failed_deploys_expected": expected_failed,
            "failed_deploys_unexpected": len(unexpected),
            "deploy_p50_s": _pct(durations, 0.5), "deploy_p95_s": _pct(durations, 0.95),
            "achieved_rps": round((g.requests + p.requests) / max(load_seconds, 1e-9), 1),
            "latency_p99_ms": p99, "load_seconds": round(load_seconds, 1),
            "connections": args.connections, "post_connections": 4, "path": "/",
            "post_path": "/items", "servers": 1, "builds_on_serving_server": True}
        if set(statuses) - {200, 201}:
            result["statuses"] = {str(k): v for k, v in statuses.items()}
        if g.errors or p.errors:
            result["error_kinds"] = dict(g.errors + p.errors)
        if unexpected:
            result["failures"] = unexpected[:5]
    print(json.dumps(result))
    bad = [k for k in ("non_2xx", "connection_errors", "post_failures", "lost_posts",
                       "duplicated_posts", "gateway_no_upstream", "failed_deploys_unexpected")
           if result.get(k)]
    return 0 if result and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
