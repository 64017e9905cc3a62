"""The gateway's devices, built from its configuration: `[[readers]]` and `[[boards]]` → driver objects.

The drivers know nothing of the gateway's configuration: `drivers.registry` names the class for a
driver (imported only when a device uses it), and this module translates each section into that
class's plain constructor arguments. Boards that share a serial port share one `KerongBus`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.base import LockBoard, Reader
from drivers.kerong import CODECS, KerongBoard, KerongBus
from drivers.registry import DriverUnavailable, reader_class
from drivers.serial_reader import feedback_bytes
from gateway.config import ReaderSection, Settings


def _serial(section: ReaderSection) -> dict[str, Any]:
    """What every serial-line reader takes; a baud rate left out means the driver's default."""
    arguments: dict[str, Any] = {"repeat_gap_s": section.repeat_gap_s}
    if section.baudrate:
        arguments["baudrate"] = section.baudrate
    return arguments


def _feedback(section: ReaderSection) -> dict[str, Any]:
    return {"feedback_bytes": feedback_bytes(section.feedback.model_dump() if section.feedback else None)}


def _osdp(section: ReaderSection) -> dict[str, Any]:
    from drivers.osdp_card import ScbkError, read_scbk

    try:
        scbk = read_scbk(section.scbk_file)
    except ScbkError as exc:
        raise DriverUnavailable(str(exc)) from None
    return {
        **_serial(section),
        "address": section.osdp_address,
        "scbk": scbk,
        "send_feedback": section.osdp_feedback,
    }


#: driver name → the keyword arguments its class takes after (device id, port).
READER_ARGUMENTS: dict[str, Callable[[ReaderSection], dict[str, Any]]] = {
    "rdm6300": lambda section: {**_serial(section), **_feedback(section)},
    "serial-ascii": lambda section: {
        **_serial(section),
        **_feedback(section),
        "fmt": section.format,
        "bit_width": section.bit_width,
    },
    "pn532": lambda section: {"repeat_gap_s": section.repeat_gap_s},
    "osdp": _osdp,
}


def build_reader(section: ReaderSection) -> Reader:
    """The reader a section describes; DriverUnavailable (one plain line) when it cannot be used here."""
    factory = reader_class(section.driver)
    return factory(section.id, section.port, **READER_ARGUMENTS[section.driver](section))


def build_devices(settings: Settings) -> tuple[dict[str, Reader], dict[str, LockBoard]]:
    """Every configured reader and board, by id, ready to `run`; DriverUnavailable names the device."""
    readers: dict[str, Reader] = {}
    for section in settings.readers:
        try:
            readers[section.id] = build_reader(section)
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
