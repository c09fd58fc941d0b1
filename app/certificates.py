"""Certificate status of every gateway (issue 22): what Caddy holds, read from the server.

Caddy issues and renews by itself (automatic HTTPS); Keystone only reads what it has. Per
gateway, one SSH round trip runs :func:`probe_command`: the certificate files in the
gateway's storage (``/data/caddy/certificates/<CA>/<name>/<name>.crt``, the caddy_data
volume) and the ``tls.*`` lines of the gateway's own log (obtain / renew attempts and
their errors). :func:`parse_probe` is pure; :func:`store` keeps one
:class:`~app.models.GatewayCertificate` row per (gateway, hostname).

Like the metrics pass it is not an operation (it changes nothing on a server): the worker
enqueues :func:`app.jobs.check_certificates` every CERT_INTERVAL, and the gateway page's
"Check now" enqueues it for one gateway; views only read the rows.

A certificate that expires within WARN_DAYS while its renewal fails shows a warning on the
gateway page and sends ``certificate.expiring`` through notifications, once a day.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field

import sqlalchemy as sa

from app import redis_keys
from app.models.base import utcnow

log = logging.getLogger(__name__)

CERT_INTERVAL = 3600
WARN_DAYS = 14
ALERT_EVERY = 24 * 3600
CERT_MARK = "=== keystone-cert "
LOG_MARK = "=== keystone-tls-log"
# Constant scripts: nothing user-typed is in them; the container name is one quoted argument.
_CERTS_SCRIPT = ('for f in /data/caddy/certificates/*/*/*.crt; do [ -f "$f" ] || continue; '
                 f'echo "{CERT_MARK}$f"; cat "$f"; done; echo "{LOG_MARK}"')
LOG_TAIL = "5000"
_TLS_LOGGER_RE = re.compile(r'"logger":\s*"tls\.(?:obtain|renew|issuance\.acme)')


def probe_command(container: str):
    """Certificates in the gateway's storage, then the TLS lines of its recent log."""
    from app.shell import CONTAINER_NAME_RE, Raw, and_then, cmd, or_else, pipe
    if not CONTAINER_NAME_RE.fullmatch(container or ""):
        raise ValueError(f"not a container name: {container!r}")
    return and_then(
        cmd("docker", "exec", container, "sh", "-c", _CERTS_SCRIPT),
        # Caddy logs on stderr; one grep keeps the TLS lines only.
        or_else(pipe(cmd("docker", "logs", "--tail", LOG_TAIL, container, Raw("2>&1")),
                     cmd("grep", "-E", '"logger":"tls[.]')), cmd("true")))


@dataclass
class CertInfo:
    hostname: str
    issuer: str | None = None
    serial: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    ca_dir: str | None = None
    last_attempt_at: dt.datetime | None = None
    last_error: str | None = None


@dataclass
class Probe:
    certs: dict[str, CertInfo] = field(default_factory=dict)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _parse_cert(pem: str) -> tuple[str | None, str, dt.datetime, dt.datetime]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    cert = x509.load_pem_x509_certificates(pem.encode())[0]  # the leaf; the chain follows
    cns = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    issuer = (cns[0].value if cns else None) or (orgs[0].value if orgs else None)
    return (str(issuer)[:255] if issuer else None, format(cert.serial_number, "x")[:80],
            _naive_utc(cert.not_valid_before_utc), _naive_utc(cert.not_valid_after_utc))


def parse_probe(text: str) -> Probe:
    """The probe's output -> one CertInfo per hostname (pure). Unreadable parts are skipped."""
    probe = Probe()
    body, _, logs = text.partition(LOG_MARK)
    for chunk in body.split(CERT_MARK)[1:]:
        path, _, pem = chunk.partition("\n")
        parts = path.strip().split("/")
        if len(parts) < 3:
            continue
        ca_dir, host = parts[-3], parts[-2]
        try:
            issuer, serial, nb, na = _parse_cert(pem)
        except (ValueError, IndexError):
            continue
        old = probe.certs.get(host)
        if old is None or (old.not_after or dt.datetime.min) < na:
            probe.certs[host] = CertInfo(host, issuer, serial, nb, na, ca_dir)
    for line in logs.splitlines():
        if not _TLS_LOGGER_RE.search(line):
            continue
        try:
            entry = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        host = entry.get("identifier") or (entry.get("identifiers") or [None])[0]
        ts = entry.get("ts")
        if not isinstance(host, str) or not isinstance(ts, (int, float)):
            continue
        when = dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None)
        info = probe.certs.setdefault(host, CertInfo(host))
        msg = str(entry.get("msg", ""))
        if entry.get("level") == "error" or "error" in entry:
            info.last_error = f"{msg}: {entry.get('error', '')}".strip(": ")[:2000]
            info.last_attempt_at = max(info.last_attempt_at or when, when)
        elif msg in ("obtaining certificate", "renewing certificate",
                     "certificate obtained successfully", "certificate renewed successfully"):
            info.last_attempt_at = max(info.last_attempt_at or when, when)
            if "successfully" in msg:
                info.last_error = None
    return probe


def renewal_failing(row) -> bool:
    """Expires within WARN_DAYS and the last obtain/renew attempt failed."""
    if row.not_after is None or not row.last_error:
        return False
    return row.not_after - utcnow() < dt.timedelta(days=WARN_DAYS)


def store(session, service_id: int, hostnames: list[str], probe: Probe, now=None) -> list:
    """Upsert one row per hostname the gateway routes (certificate or not); drop the rest."""
    from app.models import GatewayCertificate
    now = now or utcnow()
    rows = {r.hostname: r for r in session.execute(sa.select(GatewayCertificate).where(
        GatewayCertificate.service_id == service_id)).scalars()}
    out = []
    for host in hostnames:
        info = probe.certs.get(host) or CertInfo(host)
        row = rows.pop(host, None)
        if row is None:
            row = GatewayCertificate(service_id=service_id, hostname=host, checked_at=now)
            session.add(row)
        row.issuer, row.serial = info.issuer, info.serial
        row.not_before, row.not_after = info.not_before, info.not_after
        if info.last_attempt_at is not None:  # the log is a window: keep what it forgot
            row.last_attempt_at, row.last_error = info.last_attempt_at, info.last_error
        row.checked_at = now
        out.append(row)
    for row in rows.values():
        session.delete(row)
    return out


def https_hostnames(service) -> list[str]:
    """The names a gateway should hold a certificate for (routes with tls auto)."""
    from app.drivers import get_driver
    names: list[str] = []
    for route in get_driver(service.type).routes(service.slices):
        if route.tls == "auto":
            names += [h for h in route.all_hostnames if not h.startswith("*.")]
    return sorted(set(names))


def check_gateway(service_id: int, *, timeout: float = 60) -> list:
    """Read one gateway's certificates over SSH and store them. Runs in a job."""
    from app.extensions import db
    from app.metrics import targets
    from app.models import Server, Service
    from app.models.enums import ReplicaStatus
    from app.remote import Connection, ConnectionPool, RemoteError
    service = db.session.get(Service, service_id)
    if service is None or service.type != "caddy":
        return []
    server = db.session.get(Server, service.server_id)
    container = next((r.container_name for r in service.replicas
                      if r.status == ReplicaStatus.RUNNING), None)
    hostnames = https_hostnames(service)
    todo = targets([server]) if server is not None else []
    db.session.commit()  # no transaction held across SSH
    if not todo or container is None:
        return []
    pool = ConnectionPool(factory=Connection, connect_timeout=10, keepalive=5,
                          dead_peer_timeout=20)
    try:
        t = todo[0]
        conn = pool.get(t.host, t.port, t.user, t.key, t.fingerprint)
        res = conn.run(probe_command(container), timeout=timeout, pty=False)
    except RemoteError as exc:
        log.warning("certificates: gateway %s unreachable: %s", service_id, type(exc).__name__)
        return []
    finally:
        pool.close()
    rows = store(db.session, service_id, hostnames, parse_probe(res.stdout))
    db.session.commit()
    for row in rows:
        if renewal_failing(row):
            alert_expiring(service, row)
    return rows


def check_all() -> dict:
    """Every running gateway, one after the other (an hourly pass)."""
    from app.extensions import db
    from app.models import Service
    ids = db.session.execute(sa.select(Service.id).where(Service.type == "caddy")).scalars().all()
    counts = {"gateways": 0, "certificates": 0}
    for sid in ids:
        rows = check_gateway(sid)
        counts["gateways"] += 1
        counts["certificates"] += sum(1 for r in rows if r.not_after)
    return counts


def alert_expiring(service, row) -> int:
    """``certificate.expiring`` at most once per gateway and name per ALERT_EVERY."""
    from app.notifications import notify
    from app.operations import logstream
    try:
        if not logstream.redis_client().set(
                redis_keys.key("alert", "cert", service.id, row.hostname), "1", nx=True,
                ex=ALERT_EVERY):
            return 0
    except Exception:  # noqa: BLE001 - Redis down: the page still warns
        return 0
    notify(service.organisation_id, "certificate.expiring", {
        "gateway": service.name, "service_id": service.id, "hostname": row.hostname,
        "not_after": row.not_after.isoformat() + "Z" if row.not_after else None,
        "error": (row.last_error or "")[:500]})
    return 1


def lock_key(config=None) -> str:
    return redis_keys.key("certificates", "lock", config=config)


def schedule_key(config=None) -> str:
    return redis_keys.key("certificates", "scheduled", config=config)


def enqueue_check(service_id: int) -> bool:
    """Put a one-gateway check on the queue (False when Redis is down). Views call this."""
    try:
        from flask import current_app
        from rq import Queue

        from app.operations import logstream
        Queue(current_app.config["RQ_QUEUE"], connection=logstream.redis_client()).enqueue(
            "app.jobs.check_certificates", int(service_id), job_timeout=120, result_ttl=600,
            failure_ttl=3600, description=f"keystone certificate check of gateway {service_id}")
        return True
    except Exception as exc:  # noqa: BLE001
        log.warning("certificates: could not enqueue (%s)", type(exc).__name__)
        return False


def rows_for(session, service_id: int) -> list:
    from app.models import GatewayCertificate
    return session.execute(sa.select(GatewayCertificate).where(
        GatewayCertificate.service_id == service_id)
        .order_by(GatewayCertificate.hostname)).scalars().all()
