"""A simulated serial-ascii reader or Wiegand converter: one line per tap, in the reader's format.

Fault modes: `bad-parity` flips the trailing Wiegand parity bit (for Wiegand formats), `garbage` sends
noise lines continuously, `silence` sends nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.serial_ascii import Format, format_line
from simulators.reader import Notify, SimulatedReader


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
        line = format_line(uid, self.format, self.bit_width)
        if self.fault == "bad-parity" and line[:-2].strip(b"01") == b"":
            line = line[:-3] + (b"1" if line[-3:-2] == b"0" else b"0") + b"\r\n"
        return line

    async def _present(self, uid: str, hold_s: float) -> None:
        if self.fault != "silence":
            self.send(self.line(uid))
        await asyncio.sleep(hold_s)
