"""Service drivers (SPEC 9): the contract in base.py, one package per driver.

``get_driver("postgres")`` / ``get_driver(service)`` returns the registered
instance. Adding a driver: a new package with ``driver.py`` that decorates its
class with ``@register``, plus its import below.
"""
from app.drivers.base import Driver, DriverError, RenderContext, RenderedCompose  # noqa: F401
from app.drivers.registry import UnknownDriver, all_drivers, get_driver, register  # noqa: F401

# Each import registers one driver.
from app.drivers.caddy import driver as _caddy  # noqa: E402,F401
from app.drivers.laravel import driver as _laravel  # noqa: E402,F401
from app.drivers.postgres import driver as _postgres  # noqa: E402,F401
from app.drivers.valkey import driver as _valkey  # noqa: E402,F401

__all__ = ["Driver", "DriverError", "RenderContext", "RenderedCompose", "UnknownDriver",
           "all_drivers", "get_driver", "register"]
