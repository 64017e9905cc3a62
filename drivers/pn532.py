"""PN532-class ISO 14443-A readers through nfcpy (PROTOCOLS.md §4).

The configured `port` is an nfcpy device path: `tty:AMA0:pn532`, `usb:…`, or `udp:127.0.0.1:54321`
for the card emulator of `simulators/pn532.py`. nfcpy is blocking, so each reader owns one worker
thread that opens the frontend and senses for a Type A card again and again; everything it finds is
handed to the event loop with `call_soon_threadsafe`, where the presence filter folds the repeated
detections of a held card into one `CardRead`. The uid is the card's NFCID1 (`sdd_res`): 4, 7 or 10
bytes as upper-case hex.

The reader only senses (anticollision and select) and never talks to the card afterwards, so it
reads every Type A card alike — MIFARE Classic, Ultralight/NTAG with their 0x04 NXP uids, DESFire —
without the Type 2 probing of nfcpy's `connect`.

Timing: a sense that finds nothing returns after the device's own timeout (about 1 s with the UDP
driver, much less on a PN532), so an idle reader notices a new card within about that long, and a
cancelled `run` returns once the sense in hand has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import nfc
import nfc.clf

from drivers.base import CardRead, DeviceOffline, DeviceOnline, Emit, Reader, utcnow
from drivers.presence import PresenceFilter

log = logging.getLogger(__name__)

#: nfcpy logs every target it finds, whole uid included, at debug level, and an error line at every
#: failed open; this driver reports each outage once itself. nfcpy sets its logger to INFO on import;
#: a level configured otherwise is kept.
_nfc_log = logging.getLogger("nfc")
if _nfc_log.level in (logging.NOTSET, logging.INFO):
    _nfc_log.setLevel(logging.CRITICAL)

#: Pause between senses, measured from the start of one to the start of the next.
POLL_INTERVAL_S = 0.1
#: Back-off between attempts to open the frontend: doubles from the first value up to the cap.
RETRY_FIRST_S = 0.25
RETRY_CAP_S = 1.0
#: How long a cancelled `run` waits for the sense in hand (the UDP driver waits 1 s for an answer).
STOP_WAIT_S = 2.0


class Pn532Reader(Reader):
    """A PN532 (or any nfcpy frontend) reading ISO 14443-A uids: one `CardRead` per presentation."""

    def __init__(
        self,
        device_id: str,
        path: str,
        *,
        repeat_gap_s: float = 0.5,
        poll_interval_s: float = POLL_INTERVAL_S,
        retry_cap_s: float = RETRY_CAP_S,
    ) -> None:
        super().__init__(device_id)
        self.path = path
        self.presence = PresenceFilter(repeat_gap_s)
        self.poll_interval_s = poll_interval_s
        self.retry_cap_s = retry_cap_s
        #: The worker thread of the current `run` (None before the first run).
        self.worker: threading.Thread | None = None

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        finished: asyncio.Future[None] = loop.create_future()

        def post(callback: Callable[..., None], *args: Any) -> None:
            """From the worker to the loop; nothing arrives once `run` has stopped."""
            if stop.is_set():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed under a worker still finishing
                loop.call_soon_threadsafe(callback, *args)

        def on_online() -> None:
            if not stop.is_set():
                self.online = True
                emit(DeviceOnline(self.id, utcnow()))

        def on_offline(reason: str) -> None:
            if not stop.is_set():
                self.online = False
                log.info("reader %s: offline: %s", self.id, reason)
                emit(DeviceOffline(self.id, utcnow(), reason))

        def on_card(uid: str) -> None:
            if not stop.is_set() and self.presence.is_new_tap(uid, loop.time()):
                emit(CardRead(self.id, uid, utcnow()))

        def on_exit(error: BaseException | None) -> None:
            if finished.done():
                return
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

        def work() -> None:
            error: BaseException | None = None
            try:
                self._work(
                    stop,
                    lambda: post(on_online),
                    lambda reason: post(on_offline, reason),
                    lambda uid: post(on_card, uid),
                )
            except BaseException as exc:  # a bug, not a device fault: it ends `run` with the exception
                error = exc
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(on_exit, error)

        worker = threading.Thread(target=work, name=f"pn532 {self.id}", daemon=True)
        self.worker = worker
        worker.start()
        try:
            await asyncio.shield(finished)
        finally:
            stop.set()
            self.online = False
            if not finished.done():
                await asyncio.wait([finished], timeout=STOP_WAIT_S)

    # ---- the worker thread -------------------------------------------------------------------

    def _work(
        self,
        stop: threading.Event,
        online: Callable[[], None],
        offline: Callable[[str], None],
        card: Callable[[str], None],
    ) -> None:
        """Open, sense until an error, close; again after a capped back-off, until `stop` is set.

        The first open announces the reader online at once; after an outage it is announced again only
        once a sense has gone through, so a frontend that opens but fails at once does not flap.
        """
        delay = RETRY_FIRST_S
        reported: str | None = None  # "online" or "offline": each change is reported once

        def sensed() -> None:
            nonlocal delay, reported
            delay = RETRY_FIRST_S
            if reported != "online":
                reported = "online"
                online()

        while not stop.is_set():
            reason: str | None
            clf = nfc.ContactlessFrontend()
            try:
                try:
                    opened = clf.open(self.path)
                except Exception as exc:  # nfcpy raises OSError, ValueError, … for unusable paths
                    opened, reason = False, f"cannot open {self.path}: {_describe(exc)}"
                else:
                    reason = f"no reader at {self.path}"
                if opened:
                    if reported is None:
                        sensed()
                    reason = self._sense_until_error(clf, stop, card, sensed)
                if reason is not None and reported != "offline":
                    reported = "offline"
                    offline(reason)
            finally:
                with contextlib.suppress(Exception):
                    clf.close()
            if reason is not None:
                stop.wait(delay)
                delay = min(delay * 2, self.retry_cap_s)

    def _sense_until_error(
        self, clf: Any, stop: threading.Event, card: Callable[[str], None], sensed: Callable[[], None]
    ) -> str | None:
        """Sense for Type A cards until `stop` (None) or an error (its reason); `sensed` after each sense."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                target = clf.sense(nfc.clf.RemoteTarget("106A"))
            except nfc.clf.CommunicationError:
                target = None  # a card that left mid-anticollision; nfcpy handles most of these itself
            except Exception as exc:
                return f"{self.path}: {_describe(exc)}"
            sensed()
            uid = getattr(target, "sdd_res", None) if target is not None else None
            if uid:
                card(bytes(uid).hex().upper())
            stop.wait(max(0.0, self.poll_interval_s - (time.monotonic() - started)))
        return None


def _describe(exc: BaseException) -> str:
    """One plain line for a reason: the OS message when there is one, else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
