"""Drivers registered by type (Redash's query_runner registry).

A :class:`DriverRegistry` maps ``Service.type`` to one driver instance.
Keystone's own registry is :data:`drivers`; a driver package decorates its
class with :func:`register` (that registry's) at import time, and every
caller asks :func:`get_driver`. A test builds its own ``DriverRegistry()``
and registers a toy driver in it without touching Keystone's
(tests/unit/test_driver_plugin.py). Unknown types raise
:class:`UnknownDriver` with the list of known ones, so a typo names its fix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from app.drivers.base import Driver


class UnknownDriver(LookupError):
    pass


class DriverRegistry:
    def __init__(self) -> None:
        self._drivers: dict[str, "Driver"] = {}

    def register(self, driver_cls: type["Driver"]) -> type["Driver"]:
        """Class decorator: instantiate and register a driver under its ``type``."""
        key = driver_cls.type
        known = self._drivers.get(key)
        if known is not None and type(known) is not driver_cls:
            raise ValueError(f"driver type {key!r} registered twice "
                             f"({type(known).__name__} and {driver_cls.__name__})")
        self._drivers[key] = driver_cls()
        return driver_cls

    def get(self, type_or_service) -> "Driver":
        key = type_or_service if isinstance(type_or_service, str) else type_or_service.type
        try:
            return self._drivers[str(key)]
        except KeyError:
            raise UnknownDriver(f"no service driver of type {key!r}; known: "
                                f"{', '.join(sorted(self._drivers)) or 'none'}") from None

    def all(self) -> dict[str, "Driver"]:
        return dict(self._drivers)

    def offered(self) -> dict[str, "Driver"]:
        """Drivers a user creates on their own (New service, attach), in registration order."""
        return {k: d for k, d in self._drivers.items() if d.offered}

    def labels(self) -> dict[str, str]:
        """type -> the label of the New service choice, for the offered drivers."""
        return {k: d.label or k for k, d in self.offered().items()}

    def __contains__(self, key: object) -> bool:
        return key in self._drivers


drivers = DriverRegistry()
"""Keystone's registry: every driver package registers here on import."""

register = drivers.register
get_driver = drivers.get
all_drivers = drivers.all
