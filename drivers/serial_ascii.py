"""Line-oriented serial readers and Wiegand-to-serial converters (PROTOCOLS.md §2).

One card per line, ended by CR, LF or CRLF, in one of these forms (the reader's `format`):

- `hex`: the card's data bytes as hex (`5A0144`, the WIE232 style; `0x0A` + 10 hex + `0x0D`, Parallax);
- `decimal`: a decimal number (10 digits on S4A-style converters), converted to hex and zero-padded
  to the reader's `bit_width`;
- `wiegand26` / `wiegand34`: the raw bit string of 0s and 1s with both parity bits; a parity error
  is a bad frame, and the uid is the data bits without parity (W26 FC 90 / CN 324 → `5A0144`);
- `text`: a QR or barcode scanner in its serial (UART) text mode, one decoded code per line. A line
  of exactly 12 digits is a visitor code and is the uid verbatim (no decimal conversion: the digits of a
  code are its canonical form, see docs/visitors.md); anything else — a web address, a product
  barcode, a card number as hex — is a bad frame: a printed QR code is easy to copy, so a scanner
  never stands in for a card reader;
- `auto`: 26 or 34 characters of 0/1 are Wiegand, exactly 10 decimal digits are a decimal number,
  other hex is hex. A 10-hex-character uid made only of digits is therefore read as decimal in
  `auto`: configure `format = "hex"` for readers that send EM4100 numbers as hex.

Blank lines are ignored; anything else that is not a card number is a bad frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from drivers.base import CODE_DIGITS, Signal
from drivers.card_number import decimal_to_uid
from drivers.serial_reader import ParseResult, SerialReader

Format = Literal["auto", "hex", "decimal", "wiegand26", "wiegand34", "text"]
BAUDRATE = 9600
#: A line longer than this without a terminator is garbage.
MAX_LINE = 128

_HEX = re.compile(r"[0-9A-Fa-f]+")
_DECIMAL = re.compile(r"[0-9]+")
_BITS = re.compile(r"[01]+")
_SPACES = re.compile(r"[ \t]+")


_AUTO_SENDS: dict[int, Format] = {6: "wiegand26", 8: "wiegand34"}


class FrameError(ValueError):
    """A line that is not a card number in the expected format (counted as a bad frame)."""


def wiegand_uid(bits: str) -> str:
    """Check the parity of a 26- or 34-bit Wiegand string and return its data bits as hex.

    The first bit is even parity over the first half of the data bits, the last bit odd parity over
    the second half (H10301 for 26 bits, H10306 for 34).
    """
    if not _BITS.fullmatch(bits) or len(bits) not in (26, 34):
        raise FrameError("not a 26- or 34-bit Wiegand string")
    data = bits[1:-1]
    half = len(data) // 2
    if (bits[0] + data[:half]).count("1") % 2 != 0:
        raise FrameError("Wiegand leading (even) parity error")
    if (data[half:] + bits[-1]).count("1") % 2 != 1:
        raise FrameError("Wiegand trailing (odd) parity error")
    return f"{int(data, 2):0{len(data) // 4}X}"


def wiegand_bits(uid: str, length: Literal[26, 34]) -> str:
    """The bit string a converter sends for `uid`'s low 24 (or 32) bits, parity included."""
    width = length - 2
    data = f"{int(uid, 16) & ((1 << width) - 1):0{width}b}"
    half = width // 2
    leading = "1" if data[:half].count("1") % 2 else "0"
    trailing = "0" if data[half:].count("1") % 2 else "1"
    return leading + data + trailing


def parse_line(line: str, fmt: Format, bit_width: int = 24) -> str:
    """One line (without its terminator) → canonical uid, or FrameError."""
    text = _SPACES.sub("", line.strip())
    if fmt == "auto":
        if _BITS.fullmatch(text) and len(text) in (26, 34):
            return wiegand_uid(text)
        fmt = "decimal" if len(text) == 10 and text.isdigit() else "hex"
    if fmt == "text":
        if not _DECIMAL.fullmatch(text) or len(text) != CODE_DIGITS:
            raise FrameError(f"not a visitor code ({CODE_DIGITS} digits)")
        return text
    if fmt in ("wiegand26", "wiegand34"):
        expected = 26 if fmt == "wiegand26" else 34
        if len(text) != expected:
            raise FrameError(f"expected {expected} Wiegand bits, got {len(text)} characters")
        return wiegand_uid(text)
    if fmt == "decimal":
        if not _DECIMAL.fullmatch(text) or len(text) > 20:
            raise FrameError("not a decimal card number")
        return decimal_to_uid(int(text), bit_width)
    if not _HEX.fullmatch(text) or len(text) > 32:
        raise FrameError("not a hex card number")
    upper = text.upper()
    return "0" + upper if len(upper) % 2 else upper


def format_line(uid: str, fmt: Format, bit_width: int = 24) -> bytes:
    """The line (with CR LF) a converter in `fmt` sends for `uid`; the tests' half of `parse_line`.

    Wiegand and decimal converters carry only their data bits, so a longer uid is cut to its low 24/32
    (or `bit_width`) bits, as a real converter would. `auto` sends Wiegand for 6- and 8-character
    uids and hex otherwise.
    """
    value = int(uid, 16)
    if fmt == "auto":
        fmt = _AUTO_SENDS.get(len(uid), "hex")
    if fmt == "text":
        return uid.encode("ascii") + b"\r"  # a scanner ends each code with CR
    if fmt == "wiegand26":
        text = wiegand_bits(uid, 26)
    elif fmt == "wiegand34":
        text = wiegand_bits(uid, 34)
    elif fmt == "decimal":
        text = f"{value & ((1 << bit_width) - 1):010d}"
    else:
        text = uid.upper()
    return text.encode("ascii") + b"\r\n"


def _line_end(buffer: bytearray) -> int:
    ends = [i for i in (buffer.find(b"\r"), buffer.find(b"\n")) if i >= 0]
    return min(ends) if ends else -1


class LineParser:
    """Incremental: bytes in, uids and a count of bad lines out; never raises."""

    def __init__(self, fmt: Format = "auto", bit_width: int = 24) -> None:
        self.format: Format = fmt
        self.bit_width = bit_width
        self._buffer = bytearray()
        self._overflowed = False

    def feed(self, data: bytes) -> ParseResult:
        result = ParseResult()
        buffer = self._buffer
        buffer.extend(data)
        while True:
            end = _line_end(buffer)
            if end > MAX_LINE or (end < 0 and len(buffer) > MAX_LINE):
                # An overlong line: each MAX_LINE bytes of it is one bad frame, and the rest up to its
                # terminator is dropped (the same count however the bytes were chunked).
                del buffer[:MAX_LINE]
                result.bad_frames += 1
                self._overflowed = True
                continue
            if end < 0:
                break
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if self._overflowed:
                self._overflowed = False
                continue
            self._line(line, result)
        return result

    def _line(self, raw: bytes, result: ParseResult) -> None:
        if not raw.strip():
            return  # the LF of a CRLF, or a blank line
        try:
            result.uids.append(parse_line(raw.decode("ascii"), self.format, self.bit_width))
        except (FrameError, UnicodeDecodeError, ValueError):
            result.bad_frames += 1


class SerialAsciiReader(SerialReader):
    """A reader or converter that sends one card number per text line."""

    def __init__(
        self,
        device_id: str,
        port: str,
        *,
        baudrate: int = BAUDRATE,
        repeat_gap_s: float = 0.5,
        fmt: Format = "auto",
        bit_width: int = 24,
        feedback_bytes: Mapping[Signal, bytes] | None = None,
    ) -> None:
        super().__init__(device_id, port, baudrate=baudrate, repeat_gap_s=repeat_gap_s, feedback_bytes=feedback_bytes)
        self.format: Format = fmt
        self.bit_width = bit_width

    def new_parser(self) -> LineParser:
        return LineParser(self.format, self.bit_width)
