"""Service drivers (SPEC 9): the contract in base.py, one package per driver.

``get_driver("postgres")`` / ``get_driver(service)`` returns the registered
instance (Keystone's :data:`app.drivers.registry.drivers`). Adding a driver: a
new package with ``driver.py`` that decorates its class with ``@register``,
plus its import below (docs/architecture.md, "Adding a driver"). Drivers
render and plan; :mod:`app.services_ops` runs their plans.
"""
from app.drivers.base import Driver, DriverError, RenderContext, RenderedCompose  # noqa: F401
from app.drivers.registry import (DriverRegistry, UnknownDriver, all_drivers, drivers,  # noqa: F401
                                  get_driver, register)

# Each import registers one driver; the order is the order of the New service choices.
from app.drivers.postgres import driver as _postgres  # noqa: E402,F401
from app.drivers.valkey import driver as _valkey  # noqa: E402,F401
from app.drivers.caddy import driver as _caddy  # noqa: E402,F401
from app.drivers.laravel import driver as _laravel  # noqa: E402,F401
from app.drivers.builder import driver as _builder  # noqa: E402,F401

__all__ = ["Driver", "DriverError", "DriverRegistry", "RenderContext", "RenderedCompose",
           "UnknownDriver", "all_drivers", "drivers", "get_driver", "register"]
