"""A simulated OSDP reader: a libosdp PeripheralDevice behind a pty, with a keypad and the secure channel.

The PD runs on the event loop (libosdp's `refresh` every 20 ms; it never blocks): bytes from the
gateway arrive through the pty's reader callback, replies go out through the pty. Plugging the port
in powers the reader up (a fresh PD, as after a power cycle); unplugging removes it.

A card is reported once per presentation, as OSDP readers do: a 6-hex uid as Wiegand-26 and an 8-hex
uid as Wiegand-34 (parity bits added), anything else as raw bits (4 per hex character). Keys go out
one event per key, digits as ASCII, '#' as 0x0D and '*' as 0x7F (the OSDP keypad encoding).

The PD records the LED and buzzer commands the gateway sends (`led`, `buzzer`, and `signals`, the
history of both): `lockergw sim status` and the demo's tiles show them.

With a key (`scbk`) the PD accepts only a secure channel under that key. Fault modes: `none`,
`silence` (the PD neither answers nor reports anything).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path
from typing import Any

import osdp

from drivers.osdp_card import ScbkError, read_scbk
from gateway.config import ReaderSection
from simulators.pty import SimError
from simulators.reader import SIGNAL_HISTORY, Notify, SimulatedReader

REFRESH_S = 0.02
COLOURS = {
    osdp.CommandLEDColor.Black: "off",
    osdp.CommandLEDColor.Red: "red",
    osdp.CommandLEDColor.Green: "green",
    osdp.CommandLEDColor.Amber: "amber",
    osdp.CommandLEDColor.Blue: "blue",
    osdp.CommandLEDColor.Magenta: "magenta",
    osdp.CommandLEDColor.Cyan: "cyan",
    osdp.CommandLEDColor.White: "white",
}


def describe_led(command: dict[str, Any]) -> str:
    """An osdp_LED command in words: `green`, `amber blinking`, `red blinking`, for `N s`."""
    on = COLOURS.get(int(command.get("on_color", 0)), "?")
    off = COLOURS.get(int(command.get("off_color", 0)), "?")
    blinking = int(command.get("off_count", 0)) > 0 and off != on
    timer = int(command.get("timer_count", 0)) / 10
    return f"{on}{' blinking' if blinking else ''}" + (f" for {timer:g} s" if command.get("temporary") else "")


def describe_buzzer(command: dict[str, Any]) -> str:
    """An osdp_BUZ command in words: `1 beep of 0.2 s`, `2 beeps of 0.4 s`."""
    beeps = int(command.get("rep_count", 0))
    length = int(command.get("on_count", 0)) / 10
    return f"{beeps} beep{'s' if beeps != 1 else ''} of {length:g} s"


#: OSDP keypad encoding of the two non-digit keys.
KEY_CODES = {"#": 0x0D, "*": 0x7F}


class _PtyChannel(osdp.Channel):  # type: ignore[misc]
    """libosdp's byte stream: what the pty delivered (buffered by the reader callback) and the pty's write."""

    def __init__(self, reader: SimulatedOsdp) -> None:
        super().__init__()
        self.reader = reader
        self.inbox: deque[bytes] = deque()

    def read(self, max_bytes: int) -> bytes:
        if not self.inbox:
            return b""
        chunk = self.inbox.popleft()
        if len(chunk) > max_bytes:
            self.inbox.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    def write(self, buf: bytes) -> int:
        if self.reader.port.write(bytes(buf)):
            self.reader.frames_sent += 1
            return len(buf)
        return 0

    def flush(self) -> None:
        pass


class SimulatedOsdp(SimulatedReader):
    driver = "osdp"
    fault_modes = ("none", "silence")

    def __init__(
        self,
        reader_id: str,
        port: str | Path,
        notify: Notify | None = None,
        *,
        address: int = 101,
        scbk: bytes | None = None,
    ) -> None:
        super().__init__(reader_id, port, notify)
        self.port.on_data = self._received
        self.address = address
        self.scbk = scbk
        self._channel: _PtyChannel | None = None
        self._pd: Any = None
        self._ticker: asyncio.TimerHandle | None = None
        #: The last LED and buzzer commands, in words ("" until the gateway sends one).
        self.led = ""
        self.buzzer = ""
        #: Every LED and buzzer command received, as libosdp delivered it (the most recent last).
        self.commands: deque[dict[str, Any]] = deque(maxlen=SIGNAL_HISTORY)

    @classmethod
    def from_config(cls, section: ReaderSection, notify: Notify | None = None) -> SimulatedOsdp:
        """The reader of a configuration's OSDP section, with the same key as the gateway."""
        try:
            scbk = read_scbk(section.scbk_file)
        except ScbkError as exc:
            raise SimError(f"reader {section.id!r}: {exc}") from None
        return cls(section.id, section.port, notify, address=section.osdp_address, scbk=scbk)

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.plug()

    def plug(self) -> None:
        if self.port.plugged:
            return
        self.port.plug()
        self._power_up()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._pd = self._channel = None
        super().stop()

    def _power_up(self) -> None:
        channel = _PtyChannel(self)
        flags = [osdp.LibFlag.EnforceSecure] if self.scbk is not None else []
        info = osdp.PDInfo(self.address, channel, scbk=self.scbk, flags=flags)
        capabilities = osdp.PDCapabilities(
            [
                (osdp.Capability.CardDataFormat, 1, 0),
                (osdp.Capability.Readers, 1, 1),
                (osdp.Capability.CommunicationSecurity, 1, 1),
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
            ]
        )
        device = osdp.PeripheralDevice(info, capabilities, log_level=osdp.LogLevel.Emergency)
        device.ctx.set_command_callback(self._command)
        self._channel, self._pd = channel, device.ctx
        self._ticker = asyncio.get_running_loop().call_later(0, self._tick)

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        """libosdp's command callback (from inside `refresh`, on the loop): LED and buzzer are recorded;
        every command is accepted."""
        kind = command.get("command")
        if kind == osdp.Command.LED:
            self.led = describe_led(command)
            self.commands.append(dict(command))
            self._signal(f"LED {self.led}")
        elif kind == osdp.Command.Buzzer:
            self.buzzer = describe_buzzer(command)
            self.commands.append(dict(command))
            self._signal(f"buzzer {self.buzzer}")
        return 0, None

    def _tick(self) -> None:
        if self._pd is None:
            return
        if self.fault != "silence":
            self._pd.refresh()
        self._ticker = asyncio.get_running_loop().call_later(REFRESH_S, self._tick)

    def _received(self, data: bytes) -> None:
        if self._channel is not None and self.fault != "silence":
            self._channel.inbox.append(data)

    # ---- what a person does ----------------------------------------------------------------

    def card_uid(self, uid: str) -> str:
        card = super().card_uid(uid)
        if len(card) > 32:
            raise SimError(f"an OSDP reader reports at most 16 bytes; {len(card) // 2} given")
        return card

    @staticmethod
    def card_event(uid: str) -> dict[str, Any]:
        """The libosdp card-read event for a canonical uid (see `raw_card_read`)."""
        length, data = raw_card_read(uid)
        wiegand = len(uid) in (6, 8)
        return {
            "event": osdp.Event.CardRead,
            "reader_no": 0,
            "format": osdp.CardFormat.Wiegand if wiegand else osdp.CardFormat.Unspecified,
            "direction": 0,
            "length": length,
            "data": data,
        }

    async def _present(self, uid: str, hold_s: float) -> None:
        self._submit(self.card_event(uid))
        await asyncio.sleep(hold_s)

    async def keypad(self, digits: str) -> None:
        """Press the keys of `digits` ('0'-'9', '*' clears), then '#' unless it already ends with one."""
        if not self.port.plugged:
            raise SimError(f"reader {self.id!r} is unplugged")
        keys = digits.strip()
        if not keys or any(key not in "0123456789*#" for key in keys):
            raise SimError(f"keypad takes digits, '*' and '#', not {digits!r}")
        if not keys.endswith("#"):
            keys += "#"
        for key in keys:
            code = KEY_CODES.get(key, ord(key))
            self._submit({"event": osdp.Event.KeyPress, "reader_no": 0, "data": bytes([code])})

    def _submit(self, event: dict[str, Any]) -> None:
        if self._pd is None or self.fault == "silence":
            return
        with contextlib.suppress(Exception):  # a full event queue drops the event, like a busy reader
            self._pd.submit_event(event)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "address": self.address,
            "secure_channel": self.scbk is not None,
            "led": self.led,
            "buzzer": self.buzzer,
        }


def raw_card_read(uid: str) -> tuple[int, bytes]:
    """(bit count, data) of the osdp_RAW card read a reader sends for a canonical uid, written from
    PROTOCOLS.md §2 and §5 apart from the driver's decoder: a 6- or 8-character uid is a Wiegand-26/34
    frame with its parity bits (even over the first half of the data bits, odd over the second), any
    other uid its bits as they are; the bits go MSB first, left-aligned in whole bytes."""
    value, length = int(uid, 16), len(uid) * 4
    if len(uid) in (6, 8):
        half = length // 2
        even = bin(value >> half).count("1") % 2
        odd = 1 - bin(value & ((1 << half) - 1)).count("1") % 2
        value, length = even << (length + 1) | value << 1 | odd, length + 2
    size = (length + 7) // 8
    return length, (value << (size * 8 - length)).to_bytes(size, "big")
