"""A simulated serial-ascii reader or Wiegand converter: one line per tap, in the reader's format.

Fault modes: `bad-parity` flips the trailing Wiegand parity bit (for Wiegand formats), `garbage` sends
noise lines continuously, `silence` sends nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from simulators.reader import Notify, SimulatedReader

#: What a converter sends: see PROTOCOLS.md §2 (the reader configuration's `format`).
Format = Literal["auto", "hex", "decimal", "wiegand26", "wiegand34", "text"]


def wiegand_bits(data: int, length: int) -> str:
    """A Wiegand-26/34 frame as the converter prints it (PROTOCOLS.md §2, H10301/H10306): an even
    parity bit over the first half of the data bits, the `length - 2` data bits, an odd parity bit over
    the second half. A longer card number keeps only its low data bits, as on the wire."""
    width = length - 2
    bits = f"{data & ((1 << width) - 1):0{width}b}"
    half = width // 2
    even = bits[:half].count("1") % 2
    odd = 1 - bits[half:].count("1") % 2
    return f"{even}{bits}{odd}"


def converter_line(uid: str, fmt: Format, bit_width: int = 24) -> bytes:
    """The line a converter in `fmt` sends for a canonical uid, written from PROTOCOLS.md §2 (apart from
    the driver's parser): Wiegand bit strings and 10-digit decimals end in CR LF, hex too; a scanner
    (`text`) ends its code with CR. `auto` sends Wiegand-26 for 6-character uids, Wiegand-34 for 8,
    hex otherwise. Decimal converters send the low `bit_width` bits."""
    value = int(uid, 16)
    if fmt == "auto":
        fmt = {6: "wiegand26", 8: "wiegand34"}.get(len(uid), "hex")  # type: ignore[assignment]
    if fmt == "text":
        return uid.encode("ascii") + b"\r"
    if fmt in ("wiegand26", "wiegand34"):
        text = wiegand_bits(value, 26 if fmt == "wiegand26" else 34)
    elif fmt == "decimal":
        text = f"{value & ((1 << bit_width) - 1):010d}"
    else:
        text = uid.upper()
    return text.encode("ascii") + b"\r\n"


class SimulatedSerialAscii(SimulatedReader):
    driver = "serial-ascii"
    fault_modes = ("none", "bad-parity", "garbage", "silence")

    def __init__(
        self,
        reader_id: str,
        port: str | Path,
        notify: Notify | None = None,
        *,
        fmt: Format = "auto",
        bit_width: int = 24,
    ) -> None:
        super().__init__(reader_id, port, notify)
        self.format: Format = fmt
        self.bit_width = bit_width

    def line(self, uid: str) -> bytes:
        line = converter_line(uid, self.format, self.bit_width)
        if self.fault == "bad-parity" and line[:-2].strip(b"01") == b"":
            line = line[:-3] + (b"1" if line[-3:-2] == b"0" else b"0") + b"\r\n"
        return line

    async def _present(self, uid: str, hold_s: float) -> None:
        if self.fault != "silence":
            self.send(self.line(uid))
        await asyncio.sleep(hold_s)
