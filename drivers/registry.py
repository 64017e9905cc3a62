"""Reader driver names → their classes, imported only when a device uses them (so nfcpy for pn532 and
libosdp for osdp load only on gateways that have such readers).

Each class is built as `cls(device_id, port, **arguments)`; the gateway translates its configuration
into those plain arguments (gateway.devices). Nothing here knows the gateway's configuration.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Protocol

from drivers.base import Reader

#: driver name → (module, class).
READER_CLASSES: dict[str, tuple[str, str]] = {
    "rdm6300": ("drivers.rdm6300", "Rdm6300Reader"),
    "serial-ascii": ("drivers.serial_ascii", "SerialAsciiReader"),
    "pn532": ("drivers.pn532", "Pn532Reader"),
    "osdp": ("drivers.osdp", "OsdpReader"),
}
#: The optional extra that brings a driver's third-party library.
EXTRAS = {"pn532": ("nfc", "nfcpy"), "osdp": ("osdp", "libosdp")}


class DriverUnavailable(Exception):
    """A configured driver cannot be used on this installation; the message is one plain line."""


class ReaderFactory(Protocol):
    def __call__(self, device_id: str, port: str, /, **arguments: Any) -> Reader: ...


def reader_class(driver: str) -> ReaderFactory:
    """Import the class for a reader driver, or raise DriverUnavailable with a plain reason."""
    try:
        module_name, class_name = READER_CLASSES[driver]
    except KeyError:
        raise DriverUnavailable(f"unknown reader driver {driver!r} (one of: {', '.join(READER_CLASSES)})") from None
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise DriverUnavailable(f"driver {driver!r} is not available yet") from None
        extra = EXTRAS.get(driver)
        if extra is not None:
            raise DriverUnavailable(
                f"driver {driver!r} needs {extra[1]} (pip install 'locker-gateway[{extra[0]}]')"
            ) from None
        raise
    factory: ReaderFactory = getattr(module, class_name)
    return factory
