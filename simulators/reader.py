"""What every simulated serial reader shares: a pty, the card in the field, fault modes, and the
feedback (buzzer/LED line) the gateway writes back to it."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path

from gateway.uid import UidError, normalise_uid
from simulators.pty import PtyPort, SimError

#: Interval between repeated frames while a card is held, and between bursts of garbage.
FRAME_INTERVAL_S = 0.065
#: How many random bytes a garbage burst carries.
GARBAGE_BURST = 14
#: How many feedback signals a reader remembers.
SIGNAL_HISTORY = 50

Notify = Callable[[str], None]


class SimulatedReader(abc.ABC):
    """A reader on a pty. `tap` presents a card for `hold` seconds; `set_fault` changes what it sends."""

    driver = ""
    #: Fault modes this reader understands; "none" is always one of them.
    fault_modes: tuple[str, ...] = ("none", "garbage", "silence")

    def __init__(self, reader_id: str, port: str | Path, notify: Notify | None = None) -> None:
        self.id = reader_id
        self.port = PtyPort(port)
        self.fault = "none"
        self.notify = notify or (lambda _line: None)
        self.frames_sent = 0
        self._presentation: asyncio.Task[None] | None = None
        self._garbage: asyncio.Task[None] | None = None
        #: Feedback bytes → signal name, from the reader's `feedback` section (serial readers).
        self.feedback_texts: dict[bytes, str] = {}
        #: The signals recognised in what the gateway wrote to the reader, most recent last (the last
        #: SIGNAL_HISTORY of them); `signal_count` counts them all.
        self.signals: list[str] = []
        self.signal_count = 0
        self._heard_bytes = bytearray()
        self.port.on_data = self._heard
        #: Called after each signal (the site's change notification).
        self.changed: Callable[[], None] = lambda: None

    def set_feedback(self, texts: dict[str, str]) -> None:
        """What the gateway writes for each signal (`{"granted": "G\\r", ...}`), as configured."""
        self.feedback_texts = {text.encode("latin-1"): name for name, text in texts.items() if text}

    def _heard(self, data: bytes) -> None:
        """Bytes the gateway wrote to the reader: each configured feedback sequence is one signal."""
        self._heard_bytes += data
        while self._heard_bytes:
            found = [(self._heard_bytes.find(seq), seq) for seq in self.feedback_texts]
            found = [(at, seq) for at, seq in found if at >= 0]
            if not found:
                del self._heard_bytes[: max(0, len(self._heard_bytes) - 64)]  # keep a possible prefix
                return
            at, seq = min(found, key=lambda item: (item[0], -len(item[1])))
            del self._heard_bytes[: at + len(seq)]
            self._signal(self.feedback_texts[seq])

    def _signal(self, what: str) -> None:
        self.signal_count += 1
        self.signals.append(what)
        del self.signals[:-SIGNAL_HISTORY]
        self.notify(f"reader {self.id}: {what}")
        self.changed()

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.port.plug()
        self._sync_garbage()

    def stop(self) -> None:
        for task in (self._presentation, self._garbage):
            if task is not None:
                task.cancel()
        self._presentation = self._garbage = None
        self.port.unplug()

    def plug(self) -> None:
        self.port.plug()
        self._sync_garbage()

    def unplug(self) -> None:
        self.stop()

    # ---- cards -----------------------------------------------------------------------------

    def card_uid(self, uid: str) -> str:
        """Normalise what the user typed (hex, a fob number); subclasses narrow it to what they can read."""
        try:
            return normalise_uid(uid)
        except UidError as exc:
            raise SimError(str(exc)) from None

    def tap(self, uid: str, hold: float = 0.3) -> asyncio.Task[None]:
        """Present a card for `hold` seconds (a new tap replaces a card still held)."""
        if not 0 <= hold <= 600:
            raise SimError("--hold must be between 0 and 600 seconds")
        if not self.port.plugged:
            raise SimError(f"reader {self.id!r} is unplugged")
        card = self.card_uid(uid)
        if self._presentation is not None:
            self._presentation.cancel()
        task = asyncio.get_running_loop().create_task(self._present(card, hold), name=f"tap {self.id}")
        self._presentation = task
        return task

    @abc.abstractmethod
    async def _present(self, uid: str, hold_s: float) -> None: ...

    def send(self, data: bytes) -> None:
        if self.port.write(data):
            self.frames_sent += 1

    # ---- faults ----------------------------------------------------------------------------

    def set_fault(self, mode: str) -> None:
        if mode not in self.fault_modes:
            raise SimError(
                f"reader {self.id!r} ({self.driver}): unknown fault {mode!r} (one of: {', '.join(self.fault_modes)})"
            )
        self.fault = mode
        self._sync_garbage()

    def _sync_garbage(self) -> None:
        wanted = self.fault == "garbage" and self.port.plugged
        if wanted and self._garbage is None:
            self._garbage = asyncio.get_running_loop().create_task(self._spew(), name=f"garbage {self.id}")
        elif not wanted and self._garbage is not None:
            self._garbage.cancel()
            self._garbage = None

    async def _spew(self) -> None:
        """Bursts of noise that no card decodes from: each starts like a frame (STX) and ends like a line
        (CR LF), so every burst is one bad frame to a frame parser and to a line parser alike."""
        noise = random.Random()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.port.write(b"\x02" + bytes(noise.choice(_NOISE) for _ in range(GARBAGE_BURST)) + b"\r\n")
                await asyncio.sleep(FRAME_INTERVAL_S)

    def describe(self) -> dict[str, object]:
        return {
            "driver": self.driver,
            "port": str(self.port.path),
            "pty": self.port.slave_name,
            "plugged": self.port.plugged,
            "fault": self.fault,
            "card_present": self._presentation is not None and not self._presentation.done(),
            "signal": self.signals[-1] if self.signals else "",
        }


#: Garbage alphabet: neither frame delimiters nor hex digits, so no byte can start or extend a card.
_NOISE = bytes(b for b in range(0x20, 0x7F) if chr(b) not in "0123456789ABCDEFabcdef")
