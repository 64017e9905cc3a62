"""Simulated Kerong KR-CU16 / KR-CU48 boards on a simulated RS-485 bus (PROTOCOLS.md §3, §6).

One `SimulatedKerongBus` per port (one pty) carries every board configured on it; each board answers
the frames addressed to it (and broadcasts) as the vendor specs describe.

Each lock follows the suggested state machine: LOCKED_CLOSED → unlock (0x31/0x51) → the hook flips
~25 ms later → OPEN, and the door stays open until the user closes it (`close`); `open` forces a door
open without an unlock; a jammed lock ignores unlocks. The hook bit sent for a closed lock is the
board's configured `latch_closed_bit`, so the driver's polarity setting is exercised.

Board faults: `silent` (commands are executed but never answered), `bad-sum` (every reply carries a
wrong SUM), and the `reply_after_unlock` switch (answer 0x31/0x51 with a status reply, as some boards do).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulators.pty import PtyPort, SimError

STX = 0x02
ETX = 0x03
BROADCAST_CU16 = 0xF0
BROADCAST_CU48 = 0x0A
#: Time from an unlock pulse to the hook switch reporting the door open.
HOOK_FLIP_S = 0.025
#: Factory unlock pulse: 0x37 = 55 × 10 ms = 550 ms.
DEFAULT_UNLOCK_UNITS = 0x37
#: Spacing of the pulses of "unlock all" (0x33 and CU48 LOCKNUM 0x30), which boards fire one by one.
UNLOCK_ALL_SPACING_S = 0.05

Notify = Callable[[str], None]


def with_sum(*parts: int) -> bytes:
    body = bytes(parts)
    return body + bytes([sum(body) & 0xFF])


def _bits(values: list[bool]) -> bytes:
    out = bytearray((len(values) + 7) // 8)
    for index, value in enumerate(values):
        if value:
            out[index // 8] |= 1 << (index % 8)
    return bytes(out)


@dataclass
class SimulatedLock:
    number: int
    open: bool = False
    jammed: bool = False
    item: bool = False
    unlocks: int = 0


class SimulatedBoard:
    """One board's locks and settings; `handle` turns a host frame into replies."""

    FAULTS = ("none", "silent", "bad-sum")

    def __init__(
        self,
        board_id: str,
        model: str,
        address: int,
        *,
        latch_closed_bit: int = 1,
        notify: Notify | None = None,
        lock_names: dict[int, str] | None = None,
    ) -> None:
        if model not in ("kerong-cu16", "kerong-cu48"):
            raise SimError(f"board {board_id!r}: no simulator for driver {model!r}")
        self.id = board_id
        self.model = model
        self.address = address
        self.latch_closed_bit = latch_closed_bit
        self.lock_count = 16 if model == "kerong-cu16" else 48
        self.locks = [SimulatedLock(number) for number in range(1, self.lock_count + 1)]
        self.lock_names = lock_names or {}
        self.unlock_units = DEFAULT_UNLOCK_UNITS
        self.delay_s = 0
        self.baud_flag = 1
        self.fault = "none"
        self.reply_after_unlock = False
        self.notify = notify or (lambda _line: None)
        self.changed: Callable[[], None] = lambda: None

    # ---- the locks -------------------------------------------------------------------------

    def lock(self, number: int) -> SimulatedLock:
        if not 1 <= number <= self.lock_count:
            raise SimError(f"board {self.id!r} has locks 1-{self.lock_count}, not {number}")
        return self.locks[number - 1]

    def _name(self, number: int) -> str:
        return self.lock_names.get(number, f"{self.id} lock {number}")

    def pulse(self, number: int) -> None:
        """An unlock pulse reaches lock `number` (after the board's delayed-unlock time, if any)."""
        lock = self.lock(number)
        lock.unlocks += 1
        loop = asyncio.get_running_loop()
        if lock.jammed:
            loop.call_later(self.delay_s, self.notify, f"{self._name(number)}: unlock pulse, but the lock is jammed")
            return
        loop.call_later(self.delay_s + HOOK_FLIP_S, self._pop, number)

    def _pop(self, number: int) -> None:
        lock = self.locks[number - 1]
        if lock.jammed or lock.open:
            return
        lock.open = True
        self.notify(f"{self._name(number)}: unlocked, door open")
        self.changed()

    def close(self, number: int) -> None:
        lock = self.lock(number)
        if lock.open:
            lock.open = False
            self.notify(f"{self._name(number)}: door closed")
            self.changed()

    def force_open(self, number: int) -> None:
        lock = self.lock(number)
        if not lock.open:
            lock.open = True
            self.notify(f"{self._name(number)}: door forced open")
            self.changed()

    def jam(self, number: int, jammed: bool = True) -> None:
        self.lock(number).jammed = jammed
        self.changed()

    def set_item(self, number: int, present: bool | None = None) -> bool:
        lock = self.lock(number)
        lock.item = (not lock.item) if present is None else present
        self.changed()
        return lock.item

    def set_fault(self, mode: str) -> None:
        if mode not in self.FAULTS:
            raise SimError(f"board {self.id!r}: unknown fault {mode!r} (one of: {', '.join(self.FAULTS)})")
        self.fault = mode

    # ---- the protocol ----------------------------------------------------------------------

    def hook_byte_values(self) -> list[bool]:
        """The hook bit of each lock as the board reports it (polarity applied)."""
        closed_bit = bool(self.latch_closed_bit)
        return [closed_bit if not lock.open else not closed_bit for lock in self.locks]

    def _reply(self, *parts: int) -> bytes:
        frame = bytearray(with_sum(*parts))
        if self.fault == "bad-sum":
            frame[-1] ^= 0x5A
        return bytes(frame)

    def _cu16_reply(self, rcmd: int, d3: int | None = None, d4: int | None = None) -> bytes:
        hooks = _bits(self.hook_byte_values())
        items = _bits([lock.item for lock in self.locks])
        return self._reply(
            STX,
            self.address << 4,
            rcmd,
            hooks[0],
            hooks[1],
            items[0] if d3 is None else d3,
            items[1] if d4 is None else d4,
            ETX,
        )

    def _cu48_status(self, locknum: int) -> bytes:
        return self._reply(STX, self.address, locknum, 0x65, *_bits(self.hook_byte_values()), ETX)

    def _unlock_all(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.lock_count):
            loop.call_later(index * UNLOCK_ALL_SPACING_S, self.pulse, index + 1)

    def handle_cu16(self, lock_index: int, cmd: int, data: bytes) -> list[bytes]:
        replies: list[bytes] = []
        if cmd == 0x30:
            replies.append(self._cu16_reply(0x35))
        elif cmd == 0x31:
            if self.reply_after_unlock:
                replies.append(self._cu16_reply(0x35))
            self.pulse(lock_index + 1)
        elif cmd == 0x32:
            replies.append(self._cu16_reply(0x36))
        elif cmd == 0x33:
            replies.append(self._cu16_reply(0x35))
            self._unlock_all()
        elif cmd == 0x37:
            if len(data) == 2:
                units = data[0] << 8 | data[1]
                if units <= 0x1770:
                    self.unlock_units = units
                    self.notify(f"{self.id}: unlock time set to {units * 10} ms")
            replies.append(self._cu16_reply(0x38, self.unlock_units >> 8, self.unlock_units & 0xFF))
        elif cmd == 0x39:
            if len(data) == 1 and data[0] <= 250:
                self.delay_s = data[0]
            replies.append(self._cu16_reply(0x39))
        elif cmd == 0x40:
            if len(data) == 1 and data[0] <= 3:
                self.baud_flag = data[0]
            replies.append(self._cu16_reply(0x40, 0, self.baud_flag))
        return [] if self.fault == "silent" else replies

    def handle_cu48(self, locknum: int, cmd: int) -> list[bytes]:
        replies: list[bytes] = []
        if cmd == 0x50:
            replies.append(self._cu48_status(locknum))
        elif cmd == 0x51:
            if self.reply_after_unlock:
                replies.append(self._cu48_status(locknum))
            if locknum == 0x30:
                self._unlock_all()
            elif locknum < self.lock_count:
                self.pulse(locknum + 1)
        return [] if self.fault == "silent" else replies

    def describe(self) -> dict[str, object]:
        return {
            "driver": self.model,
            "address": self.address,
            "fault": self.fault,
            "reply_after_unlock": self.reply_after_unlock,
            "unlock_ms": self.unlock_units * 10,
        }


class HostFrameScanner:
    """Splits the host's byte stream into frames: `02 ADDR CMD [0-2 data bytes] 03 SUM` (CU16) or the
    fixed 6-byte CU48 frame. A frame is recognised by its ETX and SUM; anything else is skipped."""

    def __init__(self, data_lengths: tuple[int, ...]) -> None:
        self.data_lengths = data_lengths
        self._buffer = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        buffer = self._buffer
        buffer.extend(data)
        while buffer:
            start = buffer.find(STX)
            if start != 0:
                self.skipped += len(buffer) if start < 0 else start
                del buffer[: len(buffer) if start < 0 else start]
                continue
            need_more = False
            for extra in self.data_lengths:
                length = 5 + extra
                if len(buffer) < length:
                    need_more = True
                    break
                if buffer[length - 2] == ETX and buffer[length - 1] == sum(buffer[: length - 1]) & 0xFF:
                    frames.append(bytes(buffer[:length]))
                    del buffer[:length]
                    break
            else:
                self.skipped += 1
                del buffer[:1]
                continue
            if need_more:
                break
        return frames


class SimulatedKerongBus:
    """Every simulated board on one port. `received` keeps the host frames seen, for tests."""

    def __init__(self, port: str | Path, model: str, notify: Notify | None = None) -> None:
        self.model = model
        self.port = PtyPort(port, self._on_data)
        self.boards: dict[int, SimulatedBoard] = {}
        self.notify = notify or (lambda _line: None)
        self.received: deque[bytes] = deque(maxlen=2000)
        self._scanner = HostFrameScanner((1,) if model == "kerong-cu48" else (0, 1, 2))  # CU48: LOCKNUM
        self._frame_waiters: list[tuple[bytes, asyncio.Future[None]]] = []

    def add(self, board: SimulatedBoard) -> None:
        if board.model != self.model:
            raise SimError(f"board {board.id!r} ({board.model}) cannot share {self.port.path} with {self.model} boards")
        if board.address in self.boards:
            raise SimError(f"board {board.id!r}: address {board.address} is already used on {self.port.path}")
        self.boards[board.address] = board

    async def wait_for_frame(self, frame: bytes) -> None:
        """Return once the host has sent exactly `frame` (from now on)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._frame_waiters.append((frame, future))
        try:
            await future
        finally:
            self._frame_waiters = [(f, w) for f, w in self._frame_waiters if w is not future]

    def _on_data(self, data: bytes) -> None:
        for frame in self._scanner.feed(data):
            self.received.append(frame)
            for expected, waiter in self._frame_waiters:
                if expected == frame and not waiter.done():
                    waiter.set_result(None)
            for reply in self._dispatch(frame):
                self.port.write(reply)

    def _dispatch(self, frame: bytes) -> list[bytes]:
        replies: list[bytes] = []
        if self.model == "kerong-cu16":
            addr, cmd, data = frame[1], frame[2], frame[3:-2]
            targets = sorted(self.boards) if addr == BROADCAST_CU16 else [addr >> 4]
            for address in targets:
                board = self.boards.get(address)
                if board is not None:
                    replies += board.handle_cu16(0 if addr == BROADCAST_CU16 else addr & 0x0F, cmd, data)
        else:
            addr, locknum, cmd = frame[1], frame[2], frame[3]
            targets = sorted(self.boards) if addr == BROADCAST_CU48 else [addr]
            for address in targets:
                board = self.boards.get(address)
                if board is not None:
                    replies += board.handle_cu48(locknum, cmd)
        return replies
