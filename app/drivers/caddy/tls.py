"""HTTPS settings of a Caddy gateway, in one typed home (issue 22).

Caddy's automatic HTTPS does the work: every site whose route has ``tls: auto`` gets a
certificate from an ACME CA, renewed by Caddy itself, and port 80 redirects to HTTPS.
Keystone decides only what Caddy's global options say:

* ``email``: the ACME account email (``acme_email`` in the gateway's config; the gateway
  page can set it on every gateway of the organisation at once). Let's Encrypt writes to
  it about expiring certificates and policy changes.
* ``acme_ca`` / ``acme_ca_root``: another CA than Caddy's default (Let's Encrypt, ZeroSSL
  as fallback). Only the sandbox sets them, to its Pebble; the rest of the path is the
  production one.

Every value is validated by allowlist before it reaches the Caddyfile; the root is parsed
as X.509 and written back as clean PEM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.drivers.caddy.caddyfile import (_DURATION_RE, CaddyfileError, validate_acme_ca,
                                         validate_email, validate_ratio)

if TYPE_CHECKING:  # pragma: no cover
    from app.models import Service


def clean_root_pem(value: object) -> str:
    """One or more PEM certificates, re-serialised (nothing else survives), or raise."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
        raise CaddyfileError("ACME CA root: must be a PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise CaddyfileError("ACME CA root: not a readable PEM certificate") from None
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


@dataclass(frozen=True)
class AcmeSettings:
    email: str | None = None
    ca: str | None = None  # None: Caddy's default CAs (Let's Encrypt)
    ca_root_pem: str | None = None
    renewal_window_ratio: float | None = None
    renew_interval: str | None = None

    @classmethod
    def from_values(cls, email=None, ca=None, ca_root_pem=None, renewal_window_ratio=None,
                    renew_interval=None) -> "AcmeSettings":
        if renew_interval is not None and (not isinstance(renew_interval, str) or
                                           not _DURATION_RE.fullmatch(renew_interval)):
            raise CaddyfileError(f"renew interval {renew_interval!r}: must look like 30s, 10m")
        return cls(email=validate_email(email) if email else None,
                   ca=validate_acme_ca(ca) if ca else None,
                   ca_root_pem=clean_root_pem(ca_root_pem) if ca_root_pem else None,
                   renewal_window_ratio=(validate_ratio(renewal_window_ratio)
                                         if renewal_window_ratio is not None else None),
                   renew_interval=renew_interval)

    @classmethod
    def for_gateway(cls, service: "Service") -> "AcmeSettings":
        cfg = service.config or {}
        return cls.from_values(cfg.get("acme_email"), cfg.get("acme_ca"), cfg.get("acme_ca_root_pem"),
                               cfg.get("renewal_window_ratio"), cfg.get("renew_interval"))


def gateway_acme_config(ca: str, ca_root_pem: str | None) -> dict:
    """The gateway config keys that point it at another ACME CA (the sandbox's Pebble)."""
    settings = AcmeSettings.from_values(ca=ca, ca_root_pem=ca_root_pem)
    out = {"acme_ca": settings.ca}
    if settings.ca_root_pem:
        out["acme_ca_root_pem"] = settings.ca_root_pem
    return out
