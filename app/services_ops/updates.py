"""Checking a service's version track for a newer image (SPEC 11). Never deploys.

:func:`check_for_update` re-resolves the tag the service's driver runs and
records a newer digest as ``available_image_digest`` /
``update_status=available``. An update is an explicit ``service_deploy``.
"""
from __future__ import annotations

from app.drivers import get_driver
from app.models import Service
from app.models.enums import UpdateStatus
from app.registries.images import CredentialLookup, org_credentials, resolve_digest


def check_for_update(service: Service, credentials: CredentialLookup | None = None) -> str | None:
    """Resolve the track tag again; record a newer digest as available.

    Returns the available digest, or None when the service is current.
    """
    creds = credentials or org_credentials(service.organisation_id)
    digest = resolve_digest(get_driver(service).image(service), creds)
    if service.current_image_digest and digest != service.current_image_digest:
        is_new = service.available_image_digest != digest
        service.available_image_digest = digest
        service.update_status = UpdateStatus.AVAILABLE
        if is_new:
            from app.notifications import notify
            notify(service.organisation_id, "image.update_available",
                   {"service": service.name, "service_id": service.id, "digest": digest})
        return digest
    service.available_image_digest = None
    service.update_status = UpdateStatus.CURRENT if service.current_image_digest \
        else UpdateStatus.UNKNOWN
    return None


__all__ = ["check_for_update"]
