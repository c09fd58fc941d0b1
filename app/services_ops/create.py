"""A new service row from its driver: type, placement and the form fields it offers."""
from __future__ import annotations

from typing import Any, Mapping

from app.drivers import drivers as keystone_drivers
from app.drivers.base import DriverError
from app.drivers.registry import DriverRegistry
from app.models import Server, Service
from app.registries.images import ImageError, parse_image


def build_service(service_type: str, server: Server, name: str, *, organisation_id: int,
                  settings: Mapping[str, Any] | None = None,
                  registry: DriverRegistry = keystone_drivers) -> Service:
    """A service of an offered driver placed on ``server`` (not added to the session).

    ``settings`` are the New service form's values; the driver keeps the fields it
    declares (``Driver.form_fields``). Raises DriverError (an unknown type, a
    placement the driver refuses: a second gateway on one server) or ImageError.
    The caller adds it to the session.
    """
    offered = registry.offered()
    if service_type not in offered:
        raise DriverError(f"type: choose one of {', '.join(offered)}")
    driver = offered[service_type]
    config = driver.settings_from_form(settings or {})
    if config.get("image"):
        parse_image(config["image"])
        refusal = driver.image_on_track(config["image"])
        if refusal:
            raise ImageError(refusal)
    service = Service(organisation_id=organisation_id, server=server, name=name,
                      category=driver.category, type=driver.type,
                      version_track=driver.version_track, driver_name=driver.type,
                      deploy_policy=driver.deploy_policy, config=config)
    driver.check_placement(service)
    return service


__all__ = ["build_service"]
