"""The two device interfaces the gateway talks to: card readers and lock boards.

A driver turns bytes into these plain values and knows nothing of policy, journal or MQTT.
Each device runs as one long-lived task (`run`) that owns its port, reconnects by itself and
reports what happens through the `emit` callback it was given; `emit` never blocks.

Implementations: `drivers/rdm6300.py`, `drivers/serial_ascii.py`, `drivers/pn532.py`,
`drivers/osdp.py` (readers) and `drivers/kerong.py` (lock boards); `drivers/registry.py`
maps a configuration's `driver = "…"` to a class.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


def utcnow() -> datetime:
    return datetime.now(UTC)


#: A visitor code (a `mobile` credential shown as a QR code or typed as a PIN) is this many decimal
#: digits, and those digits are its uid: 6 bytes of "hex", a length no card family reports.
CODE_DIGITS = 12


# ---- what devices report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardRead:
    """One presentation of a card at a reader: repeated frames while it is held are folded into one."""

    device: str
    uid: str  # canonical: upper-case hex, see gateway.uid
    at: datetime


@dataclass(frozen=True, slots=True)
class KeypadInput:
    """Digits entered on a reader's keypad (terminated by '#' or a timeout on the device side)."""

    device: str
    digits: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    device: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    device: str
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class ReaderFault:
    """Persistent garbage: 10 or more bad frames within 10 s (SPEC §5 row 1)."""

    device: str
    at: datetime
    bad_frames: int


@dataclass(frozen=True, slots=True)
class BoardStatus:
    """One valid status reply. `closed[i]` is lock i+1's latch after polarity is applied:
    True = locked/closed, False = open. `items[i]` is the infrared item sensor (True = item present)."""

    device: str
    at: datetime
    closed: tuple[bool, ...]
    items: tuple[bool, ...]


# ---- what the gateway tells the person at a reader -------------------------------------------


class Signal(StrEnum):
    """What a reader's LED and buzzer say to the person in front of it."""

    GRANTED = "granted"  # green, one short beep: the door is open
    DENIED = "denied"  # red, two beeps: refused
    PENDING = "pending"  # amber blink: a two-person emergency opening waits for its second person
    LOCKED_OUT = "locked_out"  # red blink, three beeps: too many refusals, the reader is locked out


@dataclass(frozen=True, slots=True)
class Feedback:
    """One signal for a reader to show; `hold_s` is how long a lasting pattern (pending, locked out)
    stays on before the reader returns to idle."""

    signal: Signal
    hold_s: float = 0.0


DeviceEvent = CardRead | KeypadInput | DeviceOnline | DeviceOffline | ReaderFault | BoardStatus
Emit = Callable[[DeviceEvent], None]


# ---- interfaces ------------------------------------------------------------------------------


class Reader(abc.ABC):
    """A card reader. `run` reads until cancelled, reconnecting after errors with capped back-off.

    It emits `DeviceOnline` when the port is opened (at start-up too), `DeviceOffline` when it cannot
    be opened, errors or disappears, `CardRead` once per presentation, `KeypadInput` for keypads and
    `ReaderFault` for persistent garbage. Bad frames never raise out of `run`.
    """

    def __init__(self, device_id: str) -> None:
        self.id = device_id
        self.online = False
        self.bad_frames = 0

    @abc.abstractmethod
    async def run(self, emit: Emit) -> None: ...

    def feedback(self, feedback: Feedback) -> None:
        """Show `feedback` on the reader's LED and buzzer, if it has any; readers without do nothing.

        Called by the gateway after the decision is journaled and its unlock sent. It must return at
        once and never raise: the signal is queued for the reader's own task or thread, and a reader
        that is offline simply misses it (the person has a door, or a refusal, all the same).
        """
        return None


class LockBoard(abc.ABC):
    """A lock board: `run` polls status until cancelled; `unlock` sends one unlock pulse.

    `run` emits `BoardStatus` for each valid reply, `DeviceOffline` after 3 consecutive polls without a
    valid reply and `DeviceOnline` at the first valid reply (and once the port is open at start-up).
    """

    def __init__(self, device_id: str, lock_count: int) -> None:
        self.id = device_id
        self.lock_count = lock_count
        self.online = False

    @abc.abstractmethod
    async def run(self, emit: Emit) -> None: ...

    @abc.abstractmethod
    async def unlock(self, lock: int) -> bool:
        """Send an unlock pulse to 1-based `lock`; True if the frame was written to the bus.

        Kerong boards do not reply to an unlock: the result is confirmed by polling status.
        """
