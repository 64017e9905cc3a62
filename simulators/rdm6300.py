"""A simulated RDM6300: repeats the EM4100 frame every ~65 ms while a card is held, then goes silent.

Fault modes (PROTOCOLS.md §1): `bad-checksum` and `bad-tail` corrupt every frame, `lowercase` sends
lower-case hex (valid, but some parsers reject it), `garbage` sends noise continuously, `silence`
sends nothing at all.
"""

from __future__ import annotations

import asyncio

from simulators.pty import SimError
from simulators.reader import FRAME_INTERVAL_S, SimulatedReader

STX, ETX = 0x02, 0x03


def em4100_frame(uid: str) -> bytes:
    """The 14 bytes an RDM6300 sends for a 10-hex EM4100 id (PROTOCOLS.md §1): STX, the 10 characters
    in upper-case ASCII, two ASCII hex characters of the XOR of the 5 data bytes, ETX.

    Written from PROTOCOLS.md, apart from the driver's parser, so a codec bug cannot cancel out."""
    data = bytes.fromhex(uid)
    if len(data) != 5:
        raise SimError(f"an EM4100 id has 5 bytes (10 hex characters); {uid!r} has {len(data)}")
    checksum = 0
    for byte in data:
        checksum ^= byte
    return bytes([STX]) + uid.upper().encode("ascii") + b"%02X" % checksum + bytes([ETX])


class SimulatedRdm6300(SimulatedReader):
    driver = "rdm6300"
    fault_modes = ("none", "bad-checksum", "bad-tail", "lowercase", "garbage", "silence")

    def card_uid(self, uid: str) -> str:
        card = super().card_uid(uid)
        if len(card) > 10:
            raise SimError(f"an RDM6300 reads 5-byte EM4100 cards; {uid!r} is longer")
        return card.rjust(10, "0")  # a fob number (low 32 bits) as a full EM4100 id

    def frame(self, uid: str) -> bytes:
        """The frame for `uid` as the current fault mode shapes it."""
        frame = bytearray(em4100_frame(uid))
        if self.fault == "bad-checksum":
            frame[11:13] = b"00" if frame[11:13] != b"00" else b"FF"
        elif self.fault == "bad-tail":
            frame[13] = ETX ^ 0x40
        elif self.fault == "lowercase":
            frame[1:13] = frame[1:13].lower()
        return bytes(frame)

    async def _present(self, uid: str, hold_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + hold_s
        while True:
            if self.fault != "silence":
                self.send(self.frame(uid))
            if loop.time() + FRAME_INTERVAL_S > end:
                break
            await asyncio.sleep(FRAME_INTERVAL_S)
        await asyncio.sleep(max(0.0, end - loop.time()))
