"""Server metrics (issue 17 section 4): what each server's CPU, memory, disk and containers do.

Every METRICS_INTERVAL seconds ``keystone worker`` enqueues ONE RQ job,
:func:`app.jobs.collect_metrics` (the same mechanism as the health check, app.health),
which runs in a work horse and, per active server, opens one SSH connection and runs ONE
command (:func:`app.shell.metrics_probe`): /proc/stat, /proc/meminfo, /proc/loadavg,
``df`` of / and ``docker stats --no-stream``. Parsing (:func:`parse_probe`) is pure; the
sample is stored as a minute row and folded into its hour's row (a running mean), minute
rows older than 24 h and hour rows older than 30 days are deleted (:func:`store`).

Like the health check it is not an operation: it changes nothing on a server and one
operation per server per minute would bury the operations list.

The server page draws small SVG charts (:func:`sparkline`, server-rendered, no script);
the dashboard warns about a disk over 90 % or memory over 95 % (:func:`warnings_for`).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from markupsafe import Markup, escape

from app import redis_keys
from app.models.base import utcnow
from app.models.metrics import HOUR, MINUTE, ServerMetric

log = logging.getLogger(__name__)

METRICS_INTERVAL = 60            # seconds between samples
MINUTE_RETENTION = dt.timedelta(hours=24)
HOUR_RETENTION = dt.timedelta(days=30)
DISK_WARN = 90.0                 # percent
MEMORY_WARN = 95.0               # percent
FIELDS = ("cpu_percent", "mem_used_mb", "mem_total_mb", "disk_used_gb", "disk_total_gb",
          "load1", "load5", "load15")


def lock_key(config=None) -> str:
    return redis_keys.key("metrics", "lock", config=config)


def schedule_key(config=None) -> str:
    return redis_keys.key("metrics", "scheduled", config=config)


# --------------------------------------------------------------------------- parsing

@dataclass
class Sample:
    cpu_percent: float
    mem_used_mb: float
    mem_total_mb: float
    disk_used_gb: float
    disk_total_gb: float
    load1: float
    load5: float
    load15: float
    containers: dict[str, dict[str, float]] = field(default_factory=dict)
    cores: int | None = None  # online CPUs (``nproc``): the capacity resource limits share

    @property
    def mem_percent(self) -> float:
        return 100.0 * self.mem_used_mb / self.mem_total_mb if self.mem_total_mb else 0.0

    @property
    def disk_percent(self) -> float:
        return 100.0 * self.disk_used_gb / self.disk_total_gb if self.disk_total_gb else 0.0


class ProbeError(ValueError):
    """The probe's output lacks a section it must have."""


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for raw in (text or "").splitlines():
        line = raw.rstrip("\r")
        if line.startswith("==") and re.fullmatch(r"==[a-z0-9]+", line):
            current = line[2:]
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def parse_cpu_line(line: str) -> tuple[int, int]:
    """(busy, total) jiffies from /proc/stat's first line (``cpu user nice system idle ...``)."""
    parts = line.split()
    if not parts or parts[0] != "cpu" or len(parts) < 5:
        raise ProbeError(f"not a /proc/stat cpu line: {line[:60]!r}")
    values = [int(v) for v in parts[1:11] if v.isdigit()]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest and guest_nice are already counted in user and nice.
    total = sum(values[:8])
    return total - idle, total


def cpu_percent(before: str, after: str) -> float:
    b_busy, b_total = parse_cpu_line(before)
    a_busy, a_total = parse_cpu_line(after)
    dt_total = a_total - b_total
    if dt_total <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * (a_busy - b_busy) / dt_total))


def parse_meminfo(lines: list[str]) -> tuple[float, float]:
    """(used MiB, total MiB): used = MemTotal - MemAvailable (what the kernel could not free)."""
    kb: dict[str, int] = {}
    for line in lines:
        m = re.fullmatch(r"(\w+):\s+(\d+)(?:\s+kB)?\s*", line)
        if m:
            kb[m.group(1)] = int(m.group(2))
    if "MemTotal" not in kb:
        raise ProbeError("no MemTotal in /proc/meminfo")
    total = kb["MemTotal"]
    available = kb.get("MemAvailable",
                       kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0))
    return (total - available) / 1024.0, total / 1024.0


def parse_loadavg(line: str) -> tuple[float, float, float]:
    parts = line.split()
    if len(parts) < 3:
        raise ProbeError(f"not /proc/loadavg: {line[:60]!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


def parse_df(lines: list[str]) -> tuple[float, float]:
    """(used GiB, size GiB) of ``df -P -k``'s data line (used + available: what root can use
    is not what users can; the percentage df shows is used / (used + avail))."""
    for line in lines[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[2].isdigit() and parts[3].isdigit():
            used, avail = int(parts[2]), int(parts[3])
            return used / 1024 / 1024, (used + avail) / 1024 / 1024
    raise ProbeError("no data line in df output")


_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_size(text: str) -> float:
    """Bytes of a Docker size (``12.5MiB``, ``1.2GB``, ``0B``)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text or "")
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = m.group(2).lower() or "b"
    if unit not in _UNITS:
        raise ValueError(f"unknown unit in {text!r}")
    return float(m.group(1)) * _UNITS[unit]


def parse_docker_stats(lines: list[str]) -> dict[str, dict[str, float]]:
    """name -> {"cpu": percent, "mem_mb": MiB} from ``docker stats --no-stream`` lines
    formatted ``{{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}`` (``12.5MiB / 1.9GiB``)."""
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, cpu, mem = (p.strip() for p in parts)
        if not name or name == "--":
            continue
        try:
            cpu_value = float(cpu.rstrip("%")) if cpu not in ("", "--") else 0.0
            used = mem.split("/")[0]
            mem_mb = parse_size(used) / 1024 / 1024 if used.strip() not in ("", "--") else 0.0
        except ValueError:
            continue
        out[name] = {"cpu": round(cpu_value, 2), "mem_mb": round(mem_mb, 1)}
    return out


def parse_probe(text: str) -> Sample:
    """A :class:`Sample` from :func:`app.shell.metrics_probe`'s output."""
    s = _sections(text)
    for name in ("stat", "stat2", "meminfo", "loadavg", "df"):
        if not s.get(name):
            raise ProbeError(f"the probe's output has no {name} section")
    used, total = parse_meminfo(s["meminfo"])
    disk_used, disk_total = parse_df(s["df"])
    l1, l5, l15 = parse_loadavg(s["loadavg"][0])
    return Sample(cpu_percent=round(cpu_percent(s["stat"][0], s["stat2"][0]), 2),
                  mem_used_mb=round(used, 1), mem_total_mb=round(total, 1),
                  disk_used_gb=round(disk_used, 3), disk_total_gb=round(disk_total, 3),
                  load1=l1, load5=l5, load15=l15,
                  containers=parse_docker_stats(s.get("docker", [])),
                  cores=parse_nproc(s.get("nproc", [])))


def parse_nproc(lines: list[str]) -> int | None:
    """``nproc``'s one number, or None (an older probe, a system without nproc)."""
    for line in lines:
        if re.fullmatch(r"[1-9][0-9]{0,4}", line.strip()):
            return int(line.strip())
    return None


def capacity_facts(facts: dict | None, sample: Sample) -> dict | None:
    """``server.facts`` with the server's capacity (cores, memory) from ``sample``, or None
    when it is already recorded: the services' resource limits are shown against it."""
    facts = dict(facts or {})
    capacity = {"cores": sample.cores, "mem_total_mb": round(sample.mem_total_mb)}
    if sample.cores is None or facts.get("capacity") == capacity:
        return None
    facts["capacity"] = capacity
    return facts


# --------------------------------------------------------------------------- storage, roll-up

def minute_of(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


def hour_of(when: dt.datetime) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def fold(hour_row: ServerMetric, sample: Sample) -> None:
    """Fold ``sample`` into an hour row's running mean (containers too)."""
    n = hour_row.samples or 0
    for name in FIELDS:
        old = getattr(hour_row, name) or 0.0
        setattr(hour_row, name, (old * n + getattr(sample, name)) / (n + 1))
    merged: dict[str, dict[str, float]] = {}
    old_c = hour_row.containers or {}
    for cname in set(old_c) | set(sample.containers):
        a = old_c.get(cname, {"cpu": 0.0, "mem_mb": 0.0})
        b = sample.containers.get(cname, {"cpu": 0.0, "mem_mb": 0.0})
        merged[cname] = {k: round((a.get(k, 0.0) * n + b.get(k, 0.0)) / (n + 1), 2)
                         for k in ("cpu", "mem_mb")}
    hour_row.containers = merged
    hour_row.samples = n + 1


def store(session, server_id: int, sample: Sample, now: dt.datetime | None = None,
          prune: bool = True) -> ServerMetric:
    """Record ``sample`` as the minute row of ``now`` and fold it into the hour row; delete
    what is past retention. A second sample in the same minute replaces the first (the hour
    keeps both: a rare double pass is not worth a rescan)."""
    now = now or utcnow()
    minute = minute_of(now)
    values = {name: getattr(sample, name) for name in FIELDS}
    row = session.execute(sa.select(ServerMetric).where(
        ServerMetric.server_id == server_id, ServerMetric.resolution == MINUTE,
        ServerMetric.taken_at == minute)).scalar_one_or_none()
    if row is None:
        row = ServerMetric(server_id=server_id, resolution=MINUTE, taken_at=minute, samples=1,
                           containers=sample.containers, **values)
        session.add(row)
    else:
        for k, v in values.items():
            setattr(row, k, v)
        row.containers = sample.containers
    hour = hour_of(now)
    hrow = session.execute(sa.select(ServerMetric).where(
        ServerMetric.server_id == server_id, ServerMetric.resolution == HOUR,
        ServerMetric.taken_at == hour)).scalar_one_or_none()
    if hrow is None:
        hrow = ServerMetric(server_id=server_id, resolution=HOUR, taken_at=hour, samples=0,
                            containers={}, **{k: 0.0 for k in FIELDS})
        session.add(hrow)
    fold(hrow, sample)
    if prune:
        prune_old(session, now, server_id)
    return row


def prune_old(session, now: dt.datetime, server_id: int | None = None) -> None:
    cond = [] if server_id is None else [ServerMetric.server_id == server_id]
    session.execute(sa.delete(ServerMetric).where(
        ServerMetric.resolution == MINUTE, ServerMetric.taken_at < now - MINUTE_RETENTION,
        *cond).execution_options(synchronize_session=False))
    session.execute(sa.delete(ServerMetric).where(
        ServerMetric.resolution == HOUR, ServerMetric.taken_at < now - HOUR_RETENTION,
        *cond).execution_options(synchronize_session=False))


def series(session, server_id: int, resolution: str = MINUTE,
           now: dt.datetime | None = None) -> list[ServerMetric]:
    now = now or utcnow()
    span = MINUTE_RETENTION if resolution == MINUTE else HOUR_RETENTION
    return list(session.execute(sa.select(ServerMetric).where(
        ServerMetric.server_id == server_id, ServerMetric.resolution == resolution,
        ServerMetric.taken_at >= now - span).order_by(ServerMetric.taken_at)).scalars())


def latest(session, server_ids: list[int]) -> dict[int, ServerMetric]:
    """The newest minute row of each server (for the dashboard's warnings)."""
    if not server_ids:
        return {}
    newest = (sa.select(ServerMetric.server_id, sa.func.max(ServerMetric.taken_at).label("t"))
              .where(ServerMetric.server_id.in_(server_ids), ServerMetric.resolution == MINUTE)
              .group_by(ServerMetric.server_id).subquery())
    rows = session.execute(sa.select(ServerMetric).join(
        newest, sa.and_(ServerMetric.server_id == newest.c.server_id,
                        ServerMetric.taken_at == newest.c.t))
        .where(ServerMetric.resolution == MINUTE)).scalars()
    return {r.server_id: r for r in rows}


def warnings_for(row) -> list[str]:
    """The dashboard's sentences for one server's latest sample (empty when all is well)."""
    if row is None:
        return []
    out = []
    if row.disk_percent > DISK_WARN:
        out.append(f"disk {row.disk_percent:.0f}% full "
                   f"({row.disk_used_gb:.1f} of {row.disk_total_gb:.1f} GiB)")
    if row.mem_percent > MEMORY_WARN:
        out.append(f"memory {row.mem_percent:.0f}% used "
                   f"({row.mem_used_mb:.0f} of {row.mem_total_mb:.0f} MiB)")
    return out


# --------------------------------------------------------------------------- charts

def sparkline(values: list[float], *, label: str, maximum: float | None = None,
              width: int = 240, height: int = 48, unit: str = "%") -> Markup:
    """A small SVG line chart of ``values`` (oldest first), drawn here: no script, CSP-safe.

    The y axis runs from 0 to ``maximum`` (or the largest value); the title and the
    ``aria-label`` say the last value so the chart is readable without seeing it.
    """
    pts = [float(v) for v in values if v is not None]
    top = maximum if maximum is not None else max(pts or [1.0])
    top = top if top > 0 else 1.0
    last = f"{pts[-1]:.1f}{unit}" if pts else "no data"
    title = f"{label}: {last}"
    parts = [f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" data-chart="{escape(label)}">',
             f"<title>{escape(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" '
             f'stroke="currentColor" stroke-opacity="0.15"/>']
    if pts:
        n = len(pts)
        step = width / (n - 1) if n > 1 else 0.0

        def y(v: float) -> float:
            return height - 2 - (min(v, top) / top) * (height - 4)

        coords = " ".join(f"{(i * step if n > 1 else width / 2):.1f},{y(v):.1f}"
                          for i, v in enumerate(pts))
        parts.append(f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" '
                     f'points="{coords}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def charts(rows: list[ServerMetric]) -> list[tuple[str, Markup, str]]:
    """(label, svg, last value as text) for the server page."""
    if not rows:
        return []
    last = rows[-1]
    return [
        ("CPU", sparkline([r.cpu_percent for r in rows], label="CPU", maximum=100.0),
         f"{last.cpu_percent:.0f}%"),
        ("Memory", sparkline([r.mem_percent for r in rows], label="Memory", maximum=100.0),
         f"{last.mem_percent:.0f}% of {last.mem_total_mb:.0f} MiB"),
        ("Disk", sparkline([r.disk_percent for r in rows], label="Disk", maximum=100.0),
         f"{last.disk_percent:.0f}% of {last.disk_total_gb:.1f} GiB"),
        ("Load", sparkline([r.load1 for r in rows], label="Load", unit=""),
         f"{last.load1:.2f} {last.load5:.2f} {last.load15:.2f}"),
    ]


# --------------------------------------------------------------------------- I/O

@dataclass(frozen=True)
class Target:
    """What the probe needs of a server, as plain values (threads never touch the session)."""

    id: int
    name: str
    host: str
    port: int
    user: str
    key: str = field(repr=False)
    fingerprint: str


def targets(servers) -> list[Target]:
    out = []
    for s in servers:
        host = s.public_ip or s.private_ip
        key = s.organisation.management_key_private if s.organisation else None
        if host and key and s.host_key_fingerprint:  # never pin a host key from a background job
            out.append(Target(s.id, s.name, host, int(s.ssh_port or 22), s.management_user, key,
                              s.host_key_fingerprint))
    return out


def collect_server(target: Target, pool, *, timeout: float = 45) -> Sample | None:
    """One SSH round trip: the probe's output parsed, or None (logged) when it failed."""
    from app.remote import RemoteError
    from app.shell import metrics_probe
    try:
        conn = pool.get(target.host, target.port, target.user, target.key, target.fingerprint)
        res = conn.run(metrics_probe(), timeout=timeout, pty=False)
    except RemoteError as exc:
        log.warning("metrics: %s unreachable: %s", target.name, type(exc).__name__)
        return None
    try:
        return parse_probe(res.stdout)
    except (ProbeError, ValueError) as exc:
        log.warning("metrics: %s: unreadable probe output (%s)", target.name, exc)
        return None


def collect_metrics() -> dict:
    """One pass over every active server: sample, store, roll up. Counts for logs and tests."""
    from concurrent.futures import ThreadPoolExecutor

    from app.extensions import db
    from app.models import Server
    from app.models.enums import ServerStatus
    from app.remote import Connection, ConnectionPool

    servers = db.session.execute(sa.select(Server).where(
        Server.status == ServerStatus.ACTIVE)).scalars().all()
    todo = targets(servers)
    db.session.commit()  # no transaction held across SSH
    counts = {"servers": 0, "failed": 0, "handshakes": 0}

    def one(target: Target):
        # A pool per server: the pool's lock would put every handshake in one line.
        pool = ConnectionPool(factory=Connection, connect_timeout=10, keepalive=5,
                              dead_peer_timeout=20)
        try:
            return target.id, collect_server(target, pool), pool.handshakes
        finally:
            pool.close()

    # In parallel: a probe takes ~2 s (docker stats samples), so 100 servers one after the
    # other would not fit in the minute.
    with ThreadPoolExecutor(max_workers=16) as ex:
        results = list(ex.map(one, todo))
    now = utcnow()
    by_id = {s.id: s for s in servers}
    for server_id, sample, handshakes in results:
        counts["handshakes"] += handshakes
        if sample is None:
            counts["failed"] += 1
            continue
        store(db.session, server_id, sample, now, prune=False)
        facts = capacity_facts(by_id[server_id].facts, sample)
        if facts is not None:
            by_id[server_id].facts = facts
        counts["servers"] += 1
    prune_old(db.session, now)
    db.session.commit()
    from app.housekeeping import DISK_PRESSURE_PERCENT
    from app.housekeeping.handlers import disk_pressure
    for server_id, sample, _ in results:
        if sample is not None and sample.disk_percent > DISK_PRESSURE_PERCENT:
            # Over 85 %: housekeeping at once, before the disk fills (issue 23).
            if disk_pressure(by_id[server_id], sample.disk_percent) is not None:
                counts["housekeeping_started"] = counts.get("housekeeping_started", 0) + 1
        if sample is not None and sample.disk_percent > DISK_WARN:
            counts.setdefault("disk_alerts", 0)
            counts["disk_alerts"] += alert_disk(by_id[server_id], sample)
    return counts


DISK_ALERT_EVERY = 6 * 3600
"""A full disk is announced once per server in this many seconds, not every minute."""


def alert_disk(server, sample: Sample) -> int:
    """``disk.nearly_full`` to the organisation's channels, at most once per server per
    DISK_ALERT_EVERY (a Redis key with that TTL); 1 when sent. Never raises."""
    from app import redis_keys
    from app.notifications import notify
    from app.operations import logstream
    try:
        if not logstream.redis_client().set(redis_keys.key("alert", "disk", server.id), "1",
                                            nx=True, ex=DISK_ALERT_EVERY):
            return 0
    except Exception:  # noqa: BLE001 - Redis down: the dashboard still warns
        return 0
    notify(server.organisation_id, "disk.nearly_full", {
        "server": server.name, "server_id": server.id,
        "disk_percent": round(sample.disk_percent, 1),
        "disk_used_gb": round(sample.disk_used_gb, 1),
        "disk_total_gb": round(sample.disk_total_gb, 1)})
    return 1
