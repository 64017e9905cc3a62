"""Kerong KR-CU16 and KR-CU48 lock boards on an RS-485 bus (PROTOCOLS.md §3a, §3b).

Three layers, each usable alone:

- codecs (`CU16`, `CU48`): the exact host frames and the meaning of replies, pure functions;
- `ReplyScanner`: an incremental parser of fixed-length replies that resynchronises after garbage and
  counts bad frames (bad SUM, wrong length) without ever raising;
- `KerongBus` (one per serial port, shared by every board on it: requests and replies are serialised
  with a lock) and `KerongBoard` (one per configured board: polls status every `poll_ms`, reports
  `BoardStatus`, goes offline after 3 polls without a valid reply, sends unlocks).

Kerong boards do not reply to an unlock; some do (0x35). An unlock is therefore sent without waiting.
Only where a reply may come does the bus keep quiet afterwards — after an unlock to a board configured
as answering unlocks, and after a request whose reply did not come in time — and then discards whatever
arrived before the next request, so that a stray reply never answers the next poll. The quiet window is
sized from the baud rate (`reply_window_s`: the reply's wire time twice over plus the board's turnaround),
so a burst of unlocks on one bus goes out at the wire's pace, not 50 ms apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from drivers.base import BoardStatus, DeviceOffline, DeviceOnline, Emit, LockBoard, utcnow
from drivers.serial_link import SerialLink, read_chunks

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
#: Polls without a valid reply before a board is reported offline.
MISSED_POLLS_OFFLINE = 3
#: Bits on the wire per byte: start, 8 data, stop.
BITS_PER_BYTE = 10
#: How long a board may take between the end of a request and the start of its reply.
BOARD_TURNAROUND_S = 0.002
#: After setting the unlock time the board saves to EEPROM; the spec asks for more than 500 ms.
EEPROM_SAVE_S = 0.55

T = TypeVar("T")


def checksum(data: bytes) -> int:
    """SUM: the low byte of the sum of every preceding byte."""
    return sum(data) & 0xFF


def with_sum(*parts: int) -> bytes:
    body = bytes(parts)
    return body + bytes([checksum(body)])


def is_valid_reply(frame: bytes, length: int) -> bool:
    return len(frame) == length and frame[0] == STX and frame[-2] == ETX and frame[-1] == checksum(frame[:-1])


def wire_time_s(byte_count: int, baudrate: int) -> float:
    """How long `byte_count` bytes take on the wire at `baudrate`."""
    return byte_count * BITS_PER_BYTE / baudrate


def reply_window_s(reply_length: int, baudrate: int) -> float:
    """The quiet window in which a possible reply of `reply_length` bytes has surely arrived:
    the board's turnaround plus twice the reply's wire time (≈ 11 ms for 9 bytes at 19,200 baud)."""
    return BOARD_TURNAROUND_S + 2 * wire_time_s(reply_length, baudrate)


def hook_bits(data: bytes, lock_count: int) -> tuple[int, ...]:
    """Bit i of the little-end-first bytes `data` for locks 1..lock_count (bit 0 of byte 0 = lock 1)."""
    return tuple((data[i // 8] >> (i % 8)) & 1 for i in range(lock_count))


@dataclass(frozen=True)
class Status:
    """A decoded status reply: hook bits after polarity (True = locked/closed) and item sensors."""

    closed: tuple[bool, ...]
    items: tuple[bool, ...]


class CU16:
    """KR-CU16: ADDR = board << 4 | lock index; 9-byte replies `02 ADDR RCMD D1 D2 D3 D4 03 SUM`."""

    name = "kerong-cu16"
    lock_count = 16
    reply_length = 9
    has_unlock_time = True

    @staticmethod
    def status_request(address: int) -> bytes:
        return with_sum(STX, address << 4, 0x30, ETX)

    @staticmethod
    def unlock_request(address: int, lock: int) -> bytes:
        return with_sum(STX, address << 4 | (lock - 1), 0x31, ETX)

    @staticmethod
    def unlock_time_query(address: int) -> bytes:
        return with_sum(STX, address << 4, 0x37, ETX)

    @staticmethod
    def unlock_time_set(address: int, units: int) -> bytes:
        """Set the unlock pulse to `units` × 10 ms (big-endian u16, 0..0x1770)."""
        return with_sum(STX, address << 4, 0x37, units >> 8 & 0xFF, units & 0xFF, ETX)

    @staticmethod
    def parse_status(reply: bytes, address: int, latch_closed_bit: int) -> Status | None:
        if len(reply) != 9 or reply[1] != address << 4 or reply[2] != 0x35:
            return None
        closed = tuple(bit == latch_closed_bit for bit in hook_bits(reply[3:5], 16))
        items = tuple(bit == 1 for bit in hook_bits(reply[5:7], 16))
        return Status(closed, items)

    @staticmethod
    def parse_unlock_time(reply: bytes, address: int) -> int | None:
        """The unlock time in 10 ms units from a 0x38 reply (D3:D4, high byte first)."""
        if len(reply) != 9 or reply[1] != address << 4 or reply[2] != 0x38:
            return None
        return reply[5] << 8 | reply[6]


class CU48:
    """KR-CU48: host frames `02 ADDR LOCKNUM CMD 03 SUM`; status reply `02 ADDR LOCKNUM 65 D1..D6 03 SUM`."""

    name = "kerong-cu48"
    lock_count = 48
    reply_length = 12
    has_unlock_time = False

    @staticmethod
    def status_request(address: int) -> bytes:
        return with_sum(STX, address, 0x00, 0x50, ETX)

    @staticmethod
    def unlock_request(address: int, lock: int) -> bytes:
        return with_sum(STX, address, lock - 1, 0x51, ETX)

    @staticmethod
    def unlock_time_query(address: int) -> bytes:
        raise NotImplementedError("the CU48 has no unlock-time command")

    @staticmethod
    def unlock_time_set(address: int, units: int) -> bytes:
        raise NotImplementedError("the CU48 has no unlock-time command")

    @staticmethod
    def parse_status(reply: bytes, address: int, latch_closed_bit: int) -> Status | None:
        if len(reply) != 12 or reply[1] != address or reply[3] != 0x65:
            return None
        closed = tuple(bit == latch_closed_bit for bit in hook_bits(reply[4:10], 48))
        return Status(closed, (False,) * 48)  # the CU48 has no item sensors

    @staticmethod
    def parse_unlock_time(reply: bytes, address: int) -> int | None:
        return None


Codec = type[CU16] | type[CU48]
CODECS: dict[str, Codec] = {CU16.name: CU16, CU48.name: CU48}


@dataclass
class ScanResult:
    frames: list[bytes]
    bad_frames: int


class ReplyScanner:
    """Finds fixed-length replies in a byte stream; never raises.

    A candidate starts at STX; if it has the wrong ETX or SUM it is one bad frame and the scan resumes
    one byte later. Bytes skipped while looking for STX count as one bad frame per run.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._buffer = bytearray()
        self._in_discard_run = False

    def feed(self, data: bytes) -> ScanResult:
        result = ScanResult([], 0)
        buffer = self._buffer
        buffer.extend(data)
        while buffer:
            start = buffer.find(STX)
            if start < 0:
                start = len(buffer)
            if start > 0:
                del buffer[:start]
                if not self._in_discard_run:
                    result.bad_frames += 1
                    self._in_discard_run = True
                continue
            if len(buffer) < self.length:
                break
            self._in_discard_run = False
            candidate = bytes(buffer[: self.length])
            if is_valid_reply(candidate, self.length):
                result.frames.append(candidate)
                del buffer[: self.length]
            else:
                result.bad_frames += 1
                del buffer[:1]
                self._in_discard_run = True
        return result

    def flush(self) -> int:
        """Drop a partial frame (a short reply); return 1 if there was one, counted as bad."""
        had_partial = bool(self._buffer) and not self._in_discard_run
        self._buffer.clear()
        self._in_discard_run = False
        return int(had_partial)


class KerongBus:
    """One serial port and every Kerong board on it.

    The link runs while at least one board is attached (`async with bus.attached():`). `request`
    writes a frame and returns the first reply `accept` recognises, or None after `reply_timeout_s`;
    `send` writes without waiting. Both hold the bus lock, so frames never interleave.

    Frames written back to back queue in the port's transmit buffer; the bus keeps track of when the
    wire is free again so that a reply's deadline counts from the end of its request on the wire.
    """

    def __init__(self, port: str, baudrate: int, codec: Codec, *, reply_timeout_s: float = 0.15) -> None:
        self.port = port
        self.baudrate = baudrate
        self.codec = codec
        self.reply_timeout_s = reply_timeout_s
        self.bad_replies = 0
        #: Why the port is unusable now (None while it is open).
        self.port_problem: str | None = "not opened yet"
        self._lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._scanner = ReplyScanner(codec.reply_length)
        self._quiet_until = 0.0
        self._wire_free_at = 0.0
        #: The quiet window after a request that may still be answered (sized from the baud rate).
        self.reply_window_s = reply_window_s(codec.reply_length, baudrate)
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self.link = SerialLink(port, baudrate, on_online=self._port_open, on_offline=self._port_lost)

    # ---- link ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def attached(self) -> AsyncIterator[None]:
        """Keep the port open while the caller runs; returns once the first open attempt is done."""
        self._users += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.link.run(self._session), name=f"bus {self.port}")
        try:
            await self.link.attempted.wait()
            yield
        finally:
            self._users -= 1
            if self._users == 0 and self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None

    def _port_open(self) -> None:
        self.port_problem = None

    def _port_lost(self, reason: str) -> None:
        self.port_problem = reason

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._discard_pending()
        self._writer = writer
        try:
            await read_chunks(reader, self._on_data)
        finally:
            self._writer = None

    def _on_data(self, data: bytes) -> None:
        result = self._scanner.feed(data)
        self._count_bad(result.bad_frames)
        for frame in result.frames:
            if self._frames.full():
                self._frames.get_nowait()
            self._frames.put_nowait(frame)

    def _count_bad(self, count: int) -> None:
        if count:
            self.bad_replies += count
            log.debug("%s: %d bad reply frame(s)", self.port, count)

    def _discard_pending(self) -> None:
        """Forget stray replies (e.g. a 0x35 after an unlock) and any partial frame."""
        while not self._frames.empty():
            self._frames.get_nowait()
        self._count_bad(self._scanner.flush())

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    # ---- requests --------------------------------------------------------------------------

    async def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._quiet_until - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._discard_pending()

    def _write(self, writer: asyncio.StreamWriter, frame: bytes) -> float:
        """Write `frame`; return when its last byte will have left (it queues behind earlier frames)."""
        now = asyncio.get_running_loop().time()
        writer.write(frame)
        self._wire_free_at = max(now, self._wire_free_at) + wire_time_s(len(frame), self.baudrate)
        return self._wire_free_at

    async def request(
        self, frame: bytes, accept: Callable[[bytes], T | None], *, quiet_after_s: float = 0.0
    ) -> T | None:
        """Write `frame`; return `accept(reply)` for the first reply it accepts, or None on timeout
        (the bus then keeps quiet for `reply_window_s`, in case the reply was only late)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            await self._settle()
            writer = self._writer
            if writer is None:
                return None
            deadline = self._write(writer, frame) + self.reply_timeout_s
            answered = False
            try:
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                        # that races with a reply, and the board task would then never stop.
                        async with asyncio.timeout(remaining):
                            reply = await self._frames.get()
                    except TimeoutError:
                        break
                    value = accept(reply)
                    if value is not None:
                        answered = True
                        return value
                    log.debug("%s: ignored a reply that does not answer the request", self.port)
                self._count_bad(self._scanner.flush())  # a truncated reply is a bad one
                return None
            finally:
                quiet = quiet_after_s if answered else max(quiet_after_s, self.reply_window_s)
                self._quiet_until = loop.time() + quiet

    async def send(self, frame: bytes, *, quiet_after_s: float = 0.0) -> bool:
        """Write `frame` without waiting for a reply; True if the port was open to take it.
        `quiet_after_s` (from when the frame has left): how long a possible stray reply may take."""
        async with self._lock:
            await self._settle()
            writer = self._writer
            if writer is None:
                return False
            left_at = self._write(writer, frame)
            self._quiet_until = left_at + quiet_after_s if quiet_after_s > 0 else 0.0
            return True


class KerongBoard(LockBoard):
    """One Kerong board at `address` on a shared `KerongBus`."""

    def __init__(
        self,
        device_id: str,
        bus: KerongBus,
        address: int,
        *,
        poll_ms: int = 250,
        unlock_ms: int = 550,
        latch_closed_bit: int = 1,
        answers_unlock: bool = False,
        unlock_quiet_ms: int | None = None,
    ) -> None:
        """`answers_unlock`: this board replies to an unlock (some do, with a status reply), so the bus
        keeps quiet after each unlock for `unlock_quiet_ms` (default: sized from the baud rate)."""
        super().__init__(device_id, bus.codec.lock_count)
        self.bus = bus
        self.codec = bus.codec
        self.address = address
        self.poll_s = poll_ms / 1000
        self.unlock_ms = unlock_ms
        self.latch_closed_bit = latch_closed_bit
        if unlock_quiet_ms is not None:
            self.unlock_quiet_s = unlock_quiet_ms / 1000
        else:
            self.unlock_quiet_s = bus.reply_window_s if answers_unlock else 0.0
        self.missed_polls = 0
        #: What was last reported: None before the first report, then online (True) or offline (False).
        self._reported: bool | None = None
        self._unlock_time_checked = not self.codec.has_unlock_time

    @property
    def unlock_time_units(self) -> int:
        return max(0, min(0x1770, round(self.unlock_ms / 10)))

    async def poll(self) -> Status | None:
        """One status request; the decoded reply or None (no valid reply in time)."""
        address, polarity = self.address, self.latch_closed_bit
        return await self.bus.request(
            self.codec.status_request(address), lambda reply: self.codec.parse_status(reply, address, polarity)
        )

    async def unlock(self, lock: int) -> bool:
        if not 1 <= lock <= self.lock_count:
            raise ValueError(f"{self.id}: lock {lock} out of range 1-{self.lock_count}")
        return await self.bus.send(self.codec.unlock_request(self.address, lock), quiet_after_s=self.unlock_quiet_s)

    async def ensure_unlock_time(self) -> None:
        """Read the board's unlock pulse (0x37) and set it to `unlock_ms` when it differs (CU16 only)."""
        address = self.address
        current = await self.bus.request(
            self.codec.unlock_time_query(address), lambda reply: self.codec.parse_unlock_time(reply, address)
        )
        if current is None:
            return  # try again after the next good poll
        if current != self.unlock_time_units:
            log.info("%s: unlock time %d ms → %d ms", self.id, current * 10, self.unlock_time_units * 10)
            current = await self.bus.request(
                self.codec.unlock_time_set(address, self.unlock_time_units),
                lambda reply: self.codec.parse_unlock_time(reply, address),
                quiet_after_s=EEPROM_SAVE_S,
            )
        self._unlock_time_checked = current == self.unlock_time_units

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        async with self.bus.attached():
            next_poll = loop.time()
            while True:
                status = await self.poll()
                self._after_poll(status, emit)
                if status is not None and not self._unlock_time_checked:
                    await self.ensure_unlock_time()
                next_poll = max(next_poll + self.poll_s, loop.time())
                await asyncio.sleep(next_poll - loop.time())

    def _after_poll(self, status: Status | None, emit: Emit) -> None:
        now = utcnow()
        if status is None:
            self.missed_polls += 1
            if self.missed_polls >= MISSED_POLLS_OFFLINE and self._reported is not False:
                self._reported = False
                self.online = False
                self._unlock_time_checked = not self.codec.has_unlock_time  # it may be another board now
                reason = self.bus.port_problem or f"no valid reply to {self.missed_polls} polls"
                emit(DeviceOffline(self.id, now, reason))
            return
        self.missed_polls = 0
        if self._reported is not True:
            self._reported = True
            self.online = True
            emit(DeviceOnline(self.id, now))
        emit(BoardStatus(self.id, now, status.closed, status.items))
