"""Drivers registered by type (Redash's query_runner registry).

A driver package calls :func:`register` at import time; :func:`get_driver`
answers by ``Service.type``. Unknown types raise :class:`UnknownDriver` with
the list of known ones, so a typo names its fix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from app.drivers.base import Driver

_DRIVERS: dict[str, "Driver"] = {}


class UnknownDriver(LookupError):
    pass


def register(driver_cls: type["Driver"]) -> type["Driver"]:
    """Class decorator: instantiate and register a driver under its ``type``."""
    key = driver_cls.type
    if key in _DRIVERS and type(_DRIVERS[key]) is not driver_cls:
        raise ValueError(f"driver type {key!r} registered twice "
                         f"({type(_DRIVERS[key]).__name__} and {driver_cls.__name__})")
    _DRIVERS[key] = driver_cls()
    return driver_cls


def get_driver(type_or_service) -> "Driver":
    key = type_or_service if isinstance(type_or_service, str) else type_or_service.type
    try:
        return _DRIVERS[str(key)]
    except KeyError:
        raise UnknownDriver(f"no service driver of type {key!r}; known: "
                            f"{', '.join(sorted(_DRIVERS)) or 'none'}") from None


def all_drivers() -> dict[str, "Driver"]:
    return dict(_DRIVERS)
