"""A simulated PN532 path: an ISO 14443-A card in the field of nfcpy's UDP driver (PROTOCOLS.md §4).

A pty cannot stand in for a PN532 (nfcpy only finds ttys directly under /dev), so a `pn532` reader
is simulated when its port is an nfcpy UDP path, `udp[:host][:port]`: the gateway's driver senses
through the UDP driver, and this emulator answers as the card through nfcpy's own `listen` (Type A),
bound to 0.0.0.0:<port> as nfcpy binds it. Between taps the port is not bound, as a field without a
card stays silent.

The card answers anticollision and select with its uid (4 or 7 bytes; nfcpy's UDP listener cannot
complete a 10-byte cascade), and while it is held it answers Type 2 `READ` (30 nn) with 16 bytes of a
small NDEF-formatted memory, so a reader that uses nfcpy's `connect` and its presence check keeps
seeing the card. Other commands go unanswered, as a Type 2 tag would go mute.

Timing: an idle reader on the UDP driver waits 1 s for each SENS_RES, so a card that came and went
between two of its requests would never be seen; a tap therefore keeps the card in the field for at
least `MIN_FIELD_S`. Fault modes: `none`, and `silence` (the card is held but never answers).
`unplug` takes the card away and stops answering until `plug`; the driver itself stays online, since
over UDP there is no device that could disappear.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from functools import reduce
from operator import xor
from typing import Any

import nfc
import nfc.clf

from simulators.pty import PtyPort, SimError
from simulators.reader import Notify, SimulatedReader

log = logging.getLogger(__name__)

#: The shortest presentation: longer than one unanswered sense of the UDP driver (1 s) plus a poll.
MIN_FIELD_S = 1.3
#: Sent by the simulator to its own listener to make nfcpy's `listen` return; no ISO 14443 command.
WAKE = bytes.fromhex("FFFEFD")
#: How often and how long a change is re-signalled until the emulator thread has taken it up.
NUDGE_EVERY_S = 0.02
NUDGE_FOR_S = 1.0
DEFAULT_HOST, DEFAULT_PORT = "localhost", 54321


def parse_udp_path(path: str) -> tuple[str, int]:
    """`udp[:host][:port]` as nfcpy reads it → (host, port); SimError for anything else."""
    parts = path.split(":")
    if parts[0] != "udp" or len(parts) > 3:
        raise SimError(f"{path!r} is not an nfcpy UDP path (udp:HOST:PORT)")
    host = parts[1] if len(parts) > 1 and parts[1] else DEFAULT_HOST
    try:
        port = int(parts[2]) if len(parts) > 2 and parts[2] else DEFAULT_PORT
    except ValueError:
        raise SimError(f"{path!r}: the UDP port must be a number") from None
    if not 0 < port < 65536:
        raise SimError(f"{path!r}: the UDP port must be 1-65535")
    return host, port


class UdpPort(PtyPort):
    """Stands in for the pty of serial readers: `path` is the nfcpy path; plugged = the card may answer."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.host, self.udp_port = parse_udp_path(path)
        self._plugged = False

    @property
    def plugged(self) -> bool:
        return self._plugged

    def plug(self) -> None:
        self._plugged = True

    def unplug(self) -> None:
        self._plugged = False

    def write(self, data: bytes) -> bool:
        return False  # nothing is written to a UDP field; the emulator thread answers requests


@dataclass(frozen=True)
class _Card:
    serial: int
    uid: bytes
    until: float  # time.monotonic()


def card_memory(uid: bytes) -> bytes:
    """64 bytes of a Type 2 tag: the uid with its check bytes, a capability container, an empty NDEF."""
    if len(uid) == 7:
        head = bytes([*uid[:3], reduce(xor, uid[:3], 0x88), *uid[3:], reduce(xor, uid[3:], 0)])
    else:
        head = bytes([*uid, reduce(xor, uid, 0)])
    memory = bytearray(64)
    memory[: len(head)] = head
    memory[12:16] = b"\xe1\x10\x06\x00"  # NDEF magic, version 1.0, 48 data bytes, read/write
    memory[16:19] = b"\x03\x00\xfe"  # an empty NDEF message, then the terminator TLV
    return bytes(memory)


class SimulatedPn532(SimulatedReader):
    driver = "pn532"
    fault_modes = ("none", "silence")

    def __init__(self, reader_id: str, port: str, notify: Notify | None = None) -> None:
        super().__init__(reader_id, port, notify)
        self.endpoint = UdpPort(port)
        self.port = self.endpoint
        self._serials = itertools.count(1)
        self._cond = threading.Condition()
        self._card: _Card | None = None  # what a person holds to the reader (loop side)
        self._wanted: _Card | None = None  # what the emulator should answer as (shared, under _cond)
        self._serving: int | None = None  # the card the emulator thread is answering as now
        self._closing = False
        self._thread: threading.Thread | None = None
        self._settling: asyncio.Task[None] | None = None
        self.reads_answered = 0

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._check_port_free()
        try:
            clf = nfc.ContactlessFrontend(f"udp:{self.endpoint.host}:{self.endpoint.udp_port}")
        except OSError as exc:
            raise SimError(f"reader {self.id!r}: cannot use {self.endpoint.path}: {exc.strerror or exc}") from None
        self._closing = False
        self.endpoint.plug()
        self._thread = threading.Thread(target=self._emulate, args=(clf,), name=f"pn532 card {self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take the card away and end the emulator thread (it releases the UDP port)."""
        for task in (self._presentation, self._settling):
            if task is not None:
                task.cancel()
        self._presentation = self._settling = None
        self._card = None
        self.endpoint.unplug()
        with self._cond:
            self._closing = True
        self._update()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + NUDGE_FOR_S
        while thread.is_alive() and time.monotonic() < deadline:
            self._nudge()
            thread.join(NUDGE_EVERY_S)

    def plug(self) -> None:
        self.endpoint.plug()
        self._update()

    def unplug(self) -> None:
        """The card is taken away and nothing answers until `plug`; the thread and port stay ready."""
        if self._presentation is not None:
            self._presentation.cancel()
            self._presentation = None
        self._card = None
        self.endpoint.unplug()
        self._update()

    def set_fault(self, mode: str) -> None:
        super().set_fault(mode)
        self._update()

    def _check_port_free(self) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("0.0.0.0", self.endpoint.udp_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SimError(f"reader {self.id!r}: UDP port {self.endpoint.udp_port} is already in use") from None
            raise SimError(
                f"reader {self.id!r}: cannot bind UDP port {self.endpoint.udp_port}: {exc.strerror}"
            ) from None
        finally:
            probe.close()

    # ---- cards -----------------------------------------------------------------------------

    def card_uid(self, uid: str) -> str:
        card = super().card_uid(uid)
        if len(card) not in (8, 14):
            raise SimError(
                f"the simulated PN532 presents ISO 14443-A cards with 4- or 7-byte uids; got {len(card) // 2} bytes"
            )
        return card

    async def _present(self, uid: str, hold_s: float) -> None:
        card = _Card(next(self._serials), bytes.fromhex(uid), time.monotonic() + max(hold_s, MIN_FIELD_S))
        self._card = card
        self._update()
        try:
            await asyncio.sleep(card.until - time.monotonic())
        finally:
            if self._card is card:
                self._card = None
                self._update()

    # ---- keeping the emulator thread in step -----------------------------------------------

    def _update(self) -> None:
        """Tell the emulator what to answer as now; re-signal until it has taken that up."""
        card = self._card
        answering = card is not None and self.endpoint.plugged and self.fault != "silence"
        with self._cond:
            self._wanted = card if answering and not self._closing else None
            self._cond.notify_all()
        if self._stale() and not self._closing:
            self._nudge()
            if self._settling is None or self._settling.done():
                with contextlib.suppress(RuntimeError):  # no loop: stop() re-signals by itself
                    self._settling = asyncio.get_running_loop().create_task(self._settle(), name=f"settle {self.id}")

    def _stale(self) -> bool:
        """The emulator is answering as a card that is no longer wanted."""
        with self._cond:
            wanted = None if self._wanted is None else self._wanted.serial
            return self._serving is not None and self._serving != wanted

    def _nudge(self) -> None:
        """Make a `listen` or `exchange` in progress return (when the emulator is idle this is lost)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender, contextlib.suppress(OSError):
            sender.sendto(b"106A " + WAKE.hex().encode("ascii"), ("127.0.0.1", self.endpoint.udp_port))

    async def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NUDGE_FOR_S
        while self._stale() and loop.time() < deadline:
            await asyncio.sleep(NUDGE_EVERY_S)
            if self._stale():
                self._nudge()

    # ---- the emulator thread ---------------------------------------------------------------

    def _emulate(self, clf: Any) -> None:
        try:
            while True:
                with self._cond:
                    while self._wanted is None and not self._closing:
                        self._cond.wait()
                    if self._closing:
                        return
                    card = self._wanted
                    assert card is not None
                    self._serving = card.serial
                try:
                    self._answer_as(clf, card)
                except Exception as exc:  # keep the simulated reader alive whatever nfcpy raises
                    log.debug("pn532 card emulator for %s: %s", self.id, exc)
                    time.sleep(0.05)
                finally:
                    with self._cond:
                        self._serving = None
        finally:
            with contextlib.suppress(Exception):
                clf.close()

    def _still_wanted(self, card: _Card) -> bool:
        with self._cond:
            return self._wanted is card and not self._closing and time.monotonic() < card.until

    def _answer_as(self, clf: Any, card: _Card) -> None:
        target = nfc.clf.LocalTarget("106A")
        target.sens_res = bytearray(b"\x44\x00" if len(card.uid) == 7 else b"\x04\x00")  # uid size, bit frame SDD
        target.sdd_res = bytearray(card.uid)
        target.sel_res = bytearray(b"\x00")  # a Type 2 tag
        memory = card_memory(card.uid)
        while self._still_wanted(card):
            started = time.monotonic()
            activated = clf.listen(target, card.until - started)
            if activated is None:
                if time.monotonic() - started < 0.05:  # the port could not be bound: do not spin
                    time.sleep(0.05)
                continue
            command = bytes(activated.tt2_cmd or b"")
            while command and command != WAKE and self._still_wanted(card):
                response = self._respond(command, memory)
                try:
                    received = clf.exchange(response, max(0.0, card.until - time.monotonic()))
                except nfc.clf.CommunicationError:
                    break  # the reader switched its field off (a new sense) or went quiet
                command = bytes(received or b"")

    def _respond(self, command: bytes, memory: bytes) -> bytearray | None:
        """Type 2 READ: 16 bytes from block nn on (wrapping); silence for anything else."""
        if len(command) == 2 and command[0] == 0x30:
            start = (command[1] * 4) % len(memory)
            self.reads_answered += 1
            self.frames_sent += 1
            return bytearray((memory + memory)[start : start + 16])
        return None

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "pty": None, "listen": f"0.0.0.0:{self.endpoint.udp_port}"}
