"""From a configuration's `driver = "…"` to device objects.

Driver modules are imported only when a device uses them, so nfcpy (pn532) and libosdp (osdp) load
only on gateways that have such readers. Boards that share a serial port share one `KerongBus`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Protocol

from drivers.base import LockBoard, Reader
from drivers.kerong import CODECS, KerongBoard, KerongBus
from gateway.config import ReaderSection, Settings

#: driver name → (module, class); each class has `from_config(section) -> Reader`.
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
    def from_config(self, section: ReaderSection) -> Reader: ...


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


def build_devices(settings: Settings) -> tuple[dict[str, Reader], dict[str, LockBoard]]:
    """Every configured reader and board, by id, ready to `run`; DriverUnavailable names the device."""
    readers: dict[str, Reader] = {}
    for section in settings.readers:
        try:
            readers[section.id] = reader_class(section.driver).from_config(section)
        except DriverUnavailable as exc:
            raise DriverUnavailable(f"reader {section.id!r}: {exc}") from None
    buses: dict[str, KerongBus] = {}
    boards: dict[str, LockBoard] = {}
    for board in settings.boards:
        codec = CODECS.get(board.driver)
        if codec is None:
            raise DriverUnavailable(f"board {board.id!r}: unknown board driver {board.driver!r}")
        bus = buses.get(board.port)
        if bus is None:
            bus = buses[board.port] = KerongBus(
                board.port, board.baudrate, codec, reply_timeout_s=board.reply_timeout_ms / 1000
            )
        boards[board.id] = KerongBoard(
            board.id,
            bus,
            board.address,
            poll_ms=board.poll_ms,
            unlock_ms=board.unlock_ms,
            latch_closed_bit=board.latch_closed_bit,
            answers_unlock=board.answers_unlock,
            unlock_quiet_ms=board.unlock_quiet_ms,
        )
    return readers, boards
