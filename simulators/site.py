"""Every simulated device of a configuration, behind one small API (SPEC §9).

    async with SimulatedSite(settings) as site:
        await site.tap("bank-a", "3C00CE754C", hold_s=0.3)   # returns when the card is taken away
        site.close("A-01")

Readers (`rdm6300`, `serial-ascii`, `osdp`, and `pn532` on a `udp:` port) and every board are
simulated at their configured port paths; a `pn532` reader on real hardware paths is listed in
`skipped`. Lockers are
addressed by id and mapped to (board, lock) from the configuration. Every method that a user can get
wrong raises `SimError` with a one-line message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gateway.config import ReaderSection, Settings
from simulators.kerong import SimulatedBoard, SimulatedKerongBus
from simulators.pty import SimError
from simulators.rdm6300 import SimulatedRdm6300
from simulators.reader import SimulatedReader
from simulators.serial_ascii import SimulatedSerialAscii

__all__ = ["SimError", "SimulatedSite"]

Notify = Callable[[str], None]


class SimulatedSite:
    """Starts on `async with`, stops (and removes every published port) on exit.

    `notify` receives one human-readable line per thing that happens on the device side (a door
    opening after an unlock, a jammed lock ignoring one, an unlock time being set): the console and
    `lockergw demo` print them.
    """

    def __init__(self, settings: Settings, *, notify: Notify | None = None) -> None:
        self.settings = settings
        self.notify: Notify = notify or (lambda _line: None)
        self.readers: dict[str, SimulatedReader] = {}
        self.skipped: dict[str, str] = {}
        self.buses: dict[str, SimulatedKerongBus] = {}
        self.boards: dict[str, SimulatedBoard] = {}
        self.lockers: dict[str, tuple[str, int]] = {}
        self._changed = asyncio.Event()
        self._started = False
        self._build()

    def _build(self) -> None:
        ports: dict[str, str] = {}

        def claim(port: str, owner: str) -> None:
            other = ports.setdefault(port, owner)
            if other != owner:
                raise SimError(f"{owner}: port {port} is already used by {other}")

        for section in self.settings.readers:
            reader = self._reader(section)
            if reader is None:
                self.skipped[section.id] = f"driver {section.driver!r} is not simulated by lockergw sim"
                continue
            claim(section.port, f"reader {section.id!r}")
            self.readers[section.id] = reader
        names: dict[str, dict[int, str]] = {}
        for locker in self.settings.lockers:
            if locker.board is not None and locker.lock is not None:
                self.lockers[locker.id] = (locker.board, locker.lock)
                names.setdefault(locker.board, {})[locker.lock] = locker.id
        for board_section in self.settings.boards:
            bus = self.buses.get(board_section.port)
            if bus is None:
                claim(board_section.port, f"bus of board {board_section.id!r}")
                bus = self.buses[board_section.port] = SimulatedKerongBus(
                    board_section.port, board_section.driver, self.notify
                )
            board = SimulatedBoard(
                board_section.id,
                board_section.driver,
                board_section.address,
                latch_closed_bit=board_section.latch_closed_bit,
                notify=self.notify,
                lock_names=names.get(board_section.id, {}),
            )
            board.changed = self._note_change
            bus.add(board)
            self.boards[board_section.id] = board

    def _reader(self, section: ReaderSection) -> SimulatedReader | None:
        reader = self._simulated_reader(section)
        if reader is not None:
            reader.changed = self._note_change
            if section.feedback is not None:
                reader.set_feedback(section.feedback.model_dump())
        return reader

    def _simulated_reader(self, section: ReaderSection) -> SimulatedReader | None:
        if section.driver == "rdm6300":
            return SimulatedRdm6300(section.id, section.port, self.notify)
        if section.driver == "serial-ascii":
            return SimulatedSerialAscii(
                section.id, section.port, self.notify, fmt=section.format, bit_width=section.bit_width
            )
        if section.driver == "pn532" and section.port.startswith("udp"):  # a tty/usb PN532 cannot be simulated
            from simulators.pn532 import SimulatedPn532  # nfcpy is imported only when a pn532 is simulated

            return SimulatedPn532(section.id, section.port, self.notify)
        if section.driver == "osdp":
            from simulators.osdp import SimulatedOsdp  # libosdp is imported only when an OSDP reader is simulated

            return SimulatedOsdp.from_config(section, self.notify)
        return None

    # ---- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SimulatedSite:
        try:
            for reader in self.readers.values():
                reader.start()
            for bus in self.buses.values():
                bus.port.plug()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every device and remove every published port (safe to call twice)."""
        for reader in self.readers.values():
            reader.stop()
        for bus in self.buses.values():
            bus.port.unplug()
        self._started = False

    # ---- lookups ---------------------------------------------------------------------------

    def reader(self, reader_id: str) -> SimulatedReader:
        reader = self.readers.get(reader_id)
        if reader is None:
            if reader_id in self.skipped:
                raise SimError(f"reader {reader_id!r}: {self.skipped[reader_id]}")
            raise SimError(f"no simulated reader {reader_id!r} (readers: {', '.join(self.readers) or 'none'})")
        return reader

    def board(self, board_id: str) -> SimulatedBoard:
        board = self.boards.get(board_id)
        if board is None:
            raise SimError(f"no board {board_id!r} (boards: {', '.join(self.boards) or 'none'})")
        return board

    def bus_of(self, board_id: str) -> SimulatedKerongBus:
        board = self.board(board_id)
        return next(bus for bus in self.buses.values() if bus.boards.get(board.address) is board)

    def locker(self, locker_id: str) -> tuple[SimulatedBoard, int]:
        try:
            board_id, lock = self.lockers[locker_id]
        except KeyError:
            keyed = any(locker.id == locker_id for locker in self.settings.lockers)
            if keyed:
                raise SimError(f"locker {locker_id!r} is keyed (no board): nothing to simulate") from None
            raise SimError(f"no locker {locker_id!r}") from None
        return self.boards[board_id], lock

    # ---- what a person does ----------------------------------------------------------------

    def tap(self, reader_id: str, uid: str, hold: float = 0.3) -> asyncio.Task[None]:
        """Present a card at a reader for `hold` seconds; await the task to wait until it is taken away.

        Not a coroutine, so that a bad reader or uid raises SimError here and the card is in the field
        as soon as this returns."""
        return self.reader(reader_id).tap(uid, hold)

    async def keypad(self, reader_id: str, digits: str) -> None:
        """Enter digits on a reader's keypad ('#' is added); only OSDP readers have one."""
        reader = self.reader(reader_id)
        keypad = getattr(reader, "keypad", None)
        if keypad is None:
            raise SimError(f"reader {reader_id!r} has no keypad (keypads are OSDP readers)")
        await keypad(digits)

    async def close(self, locker_id: str) -> None:
        board, lock = self.locker(locker_id)
        board.close(lock)

    async def open(self, locker_id: str) -> None:
        """Force the door open without an unlock (the gateway should report door.forced_open)."""
        board, lock = self.locker(locker_id)
        board.force_open(lock)

    async def jam(self, locker_id: str, jammed: bool = True) -> None:
        """A jammed lock ignores unlock pulses (the gateway should report unlock.failed)."""
        board, lock = self.locker(locker_id)
        board.jam(lock, jammed)

    async def item(self, locker_id: str, present: bool | None = None) -> bool:
        """Set (or toggle, when `present` is None) the item sensor; returns the new state."""
        board, lock = self.locker(locker_id)
        return board.set_item(lock, present)

    def door_open(self, locker_id: str) -> bool:
        board, lock = self.locker(locker_id)
        return board.lock(lock).open

    # ---- what a technician does ------------------------------------------------------------

    async def unplug(self, device_id: str) -> str:
        """Remove a reader's port, or a board's bus port (every board on it); returns what was removed."""
        if device_id in self.readers:
            self.readers[device_id].unplug()
            return f"reader {device_id} unplugged"
        bus = self.bus_of(device_id)
        bus.port.unplug()
        return f"bus {bus.port.path} unplugged (boards: {self._boards_on(bus)})"

    async def plug(self, device_id: str) -> str:
        if device_id in self.readers:
            self.readers[device_id].plug()
            return f"reader {device_id} plugged in at {self.readers[device_id].port.path}"
        bus = self.bus_of(device_id)
        bus.port.plug()
        return f"bus {bus.port.path} plugged in (boards: {self._boards_on(bus)})"

    def _boards_on(self, bus: SimulatedKerongBus) -> str:
        return ", ".join(board.id for board in bus.boards.values())

    async def fault(self, device_id: str, mode: str) -> None:
        """Inject a fault: readers — see their `fault_modes`; boards — none, silent, bad-sum."""
        if device_id in self.readers:
            self.readers[device_id].set_fault(mode)
        else:
            self.board(device_id).set_fault(mode)

    async def reply_after_unlock(self, board_id: str, on: bool = True) -> None:
        self.board(board_id).reply_after_unlock = on

    # ---- observing -------------------------------------------------------------------------

    def frames_received(self, board_id: str) -> list[bytes]:
        """Every host frame seen on the board's bus (most recent last, up to 2000)."""
        return list(self.bus_of(board_id).received)

    async def wait_for_frame(self, board_id: str, frame: bytes) -> None:
        """Return once the host sends exactly `frame` on the board's bus."""
        await self.bus_of(board_id).wait_for_frame(frame)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; re-checked after every change of a door, jam or item, and
        every signal a reader receives.

        Bound it with asyncio.wait_for."""
        while not condition():
            event = self._changed
            await event.wait()

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def status(self) -> dict[str, Any]:
        """Everything on the device side, JSON-ready."""
        lockers: dict[str, Any] = {}
        for locker_id, (board_id, lock_number) in self.lockers.items():
            lock = self.boards[board_id].lock(lock_number)
            lockers[locker_id] = {
                "board": board_id,
                "lock": lock_number,
                "door": "open" if lock.open else "closed",
                "jammed": lock.jammed,
                "item": lock.item,
            }
        boards: dict[str, Any] = {}
        for bus in self.buses.values():
            for board in bus.boards.values():
                boards[board.id] = {
                    **board.describe(),
                    "port": str(bus.port.path),
                    "pty": bus.port.slave_name,
                    "plugged": bus.port.plugged,
                }
        return {
            "readers": {reader_id: reader.describe() for reader_id, reader in self.readers.items()},
            "skipped": dict(self.skipped),
            "boards": boards,
            "lockers": lockers,
        }
