"""RDM6300 / EM4100 125 kHz UART readers (PROTOCOLS.md §1).

9600 8N1, transmit only. A frame is 14 bytes: STX 0x02, 10 ASCII hex characters (a version byte and
the 4-byte tag id), 2 ASCII hex characters of the XOR of those 5 bytes, ETX 0x03. The reader repeats
the frame while the tag is in the field. The uid is all 10 characters, upper-case (`3C00CE754C`);
lower-case hex is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from operator import xor

from drivers.base import Signal
from drivers.serial_reader import ParseResult, SerialReader

STX = 0x02
ETX = 0x03
FRAME_LENGTH = 14
BAUDRATE = 9600
_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")


def encode_frame(uid: str) -> bytes:
    """The frame a reader sends for a 10-hex-character EM4100 uid (for the driver tests)."""
    data = bytes.fromhex(uid)
    if len(data) != 5:
        raise ValueError(f"an EM4100 uid has 5 bytes (10 hex characters), got {len(uid)} characters")
    checksum = reduce(xor, data, 0)
    return bytes([STX]) + uid.upper().encode("ascii") + f"{checksum:02X}".encode("ascii") + bytes([ETX])


class Rdm6300Parser:
    """Incremental frame parser: bytes in, uids and a count of bad frames out; never raises.

    Each checksum failure or malformed frame counts as one bad frame, and so does each run of bytes
    discarded while looking for the next STX — one per frame's worth (14 bytes) of it, so that a line
    that only ever carries noise (wrong baud rate, no STX at all) still raises a reader fault. A
    partial frame is kept until the rest arrives, unless
    a byte that cannot belong to it shows up first (then it is bad and parsing resumes there).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_discard_run = False
        self._run_bytes = 0
        self._run_counted = 0

    def feed(self, data: bytes) -> ParseResult:
        result = ParseResult()
        buffer = self._buffer
        buffer.extend(data)
        while buffer:
            start = buffer.find(STX)
            if start < 0:
                self._discard(len(buffer), result)
                break
            if start > 0:
                self._discard(start, result)
            self._in_discard_run = False
            verdict = self._check_candidate()
            if verdict is None:  # incomplete but plausible so far
                break
            if verdict:
                result.uids.append(buffer[1:11].decode("ascii").upper())
                del buffer[:FRAME_LENGTH]
            else:
                result.bad_frames += 1
                del buffer[:1]
                # The rest of this frame is part of the same bad frame.
                self._in_discard_run, self._run_bytes, self._run_counted = True, 1, 1
        return result

    def _discard(self, count: int, result: ParseResult) -> None:
        del self._buffer[:count]
        if not self._in_discard_run:
            self._in_discard_run = True
            self._run_bytes = self._run_counted = 0
        self._run_bytes += count
        due = 1 + (self._run_bytes - 1) // FRAME_LENGTH  # however the bytes were chunked
        result.bad_frames += due - self._run_counted
        self._run_counted = due

    def _check_candidate(self) -> bool | None:
        """True: a good frame at the start of the buffer; False: a bad one; None: need more bytes."""
        buffer = self._buffer
        body = buffer[1 : min(len(buffer), FRAME_LENGTH - 1)]
        if any(byte not in _HEX_DIGITS for byte in body):
            return False
        if len(buffer) < FRAME_LENGTH:
            return None
        if buffer[FRAME_LENGTH - 1] != ETX:
            return False
        values = bytes.fromhex(buffer[1:13].decode("ascii"))
        return reduce(xor, values[:5], 0) == values[5]


class Rdm6300Reader(SerialReader):
    """An RDM6300 on a serial port: one `CardRead` per presentation, one `ReaderFault` per burst of garbage."""

    def __init__(
        self,
        device_id: str,
        port: str,
        *,
        baudrate: int = BAUDRATE,
        repeat_gap_s: float = 0.5,
        feedback_bytes: Mapping[Signal, bytes] | None = None,
    ) -> None:
        super().__init__(device_id, port, baudrate=baudrate, repeat_gap_s=repeat_gap_s, feedback_bytes=feedback_bytes)

    def new_parser(self) -> Rdm6300Parser:
        return Rdm6300Parser()
