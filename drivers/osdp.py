"""OSDP readers through libosdp (PROTOCOLS.md §5): the gateway is the Control Panel of one PD.

Each connection is a session on a worker thread: it opens the serial port (pyserial, non-blocking
file descriptor), builds a libosdp `ControlPanel` for the PD at `osdp_address` and calls its
`refresh` every 20 ms; libosdp's callbacks run on that thread, and what they report is handed to
the event loop with `call_soon_threadsafe`, so nothing here blocks the loop.

The PD counts as online once libosdp has it online — with the secure channel established when a key
(`scbk_file`) is configured; the control panel then enforces the secure channel, so a reader with
another key never comes online. A session ends when the port fails or disappears, libosdp reports
the PD offline, the PD does not answer for `reply_timeout_s`, or it is not online within
`online_timeout_s` of opening the port. libosdp would wait up to 300 s before trying an offline PD
again; ending the session and starting a fresh one instead gives the reader capped back-off
(0.2 s doubling to 2 s), like every serial reader.

Card data: libosdp carries the osdp_RAW bits verbatim; as OSDP packs them (and as observed from
libosdp), the first bit is the most significant bit of the first byte and the bits are left-aligned
(`length` counts bits, the unused low bits of the last byte are zero). FC 90 / CN 324 in Wiegand-26
is `2D 00 A2 00` with length 26.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import osdp
import serial

from drivers.base import (
    CardRead,
    DeviceOffline,
    DeviceOnline,
    Emit,
    Feedback,
    KeypadInput,
    Reader,
    ReaderFault,
    utcnow,
)
from drivers.osdp_card import (
    LED_RENEW_S,
    SCBK_LENGTH,
    KeypadEntry,
    card_uid,
    feedback_commands,
    feedback_hold_s,
)
from drivers.presence import BadFrameCounter, PresenceFilter
from drivers.serial_link import describe_error

log = logging.getLogger(__name__)

BAUDRATE = 9600
#: How often the worker thread lets libosdp run (libosdp wants at least every 50 ms).
REFRESH_S = 0.02
#: A PD that is not online this long after the port opened ends the session.
ONLINE_TIMEOUT_S = 3.0
#: An online PD that sends nothing for this long has stopped answering (libosdp itself waits 8 s).
REPLY_TIMEOUT_S = 2.0
#: Digits typed without '#' are handed on after this long without a key.
KEYPAD_TIMEOUT_S = 3.0
MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0
#: A session online at least this long resets the back-off.
STABLE_SESSION_S = 2.0

# libosdp event and notification codes (osdp.h): the binding's dicts carry them as plain ints.
_NOTIFY_PD_STATUS = osdp.EventNotification.PeripheralDeviceStatus


# ---- one connection, on a worker thread ---------------------------------------------------------


class _PortChannel(osdp.Channel):  # type: ignore[misc]
    """libosdp's byte stream over a serial port's non-blocking file descriptor.

    An I/O error is kept in `error` (libosdp must never see an exception) and ends the session."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.error: OSError | None = None
        self.received = 0
        self.last_rx = time.monotonic()

    def read(self, max_bytes: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self.error = exc
            return b""
        if data:
            self.received += len(data)
            self.last_rx = time.monotonic()
        return data

    def write(self, buf: bytes) -> int:
        if self.error is not None:
            return 0
        try:
            return os.write(self.fd, buf)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self.error = exc
            return 0

    def flush(self) -> None:
        pass


class _Session:
    """One open port and one libosdp control panel, on a thread of its own."""

    def __init__(
        self,
        reader: OsdpReader,
        loop: asyncio.AbstractEventLoop,
        on_online: Callable[[], None],
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.reader = reader
        self.loop = loop
        self.on_online = on_online
        self.on_event = on_event
        #: Completes (on the loop) with the reason the session ended.
        self.ended: asyncio.Future[str] = loop.create_future()
        self.stopping = threading.Event()
        self.was_online = False
        self._pd_went_offline = False
        #: A lasting LED pattern to renew: (signal, when it ends, when to renew next), monotonic.
        self._lasting: tuple[Feedback, float, float] | None = None
        self._thread = threading.Thread(target=self._run, name=f"osdp {reader.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            self.loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        reason = "stopped"
        try:
            reason = self._serve()
        except Exception as exc:  # libosdp refused its setup: report it like a port error
            log.exception("%s: OSDP session failed", self.reader.id)
            reason = f"OSDP session failed: {exc}"
        finally:
            self._post(self._end, reason)

    def _end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)

    def _serve(self) -> str:
        reader = self.reader
        try:
            port = serial.Serial(reader.port, reader.baudrate, timeout=0, write_timeout=0)
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            return describe_error(reader.port, exc, opening=True)
        try:
            return self._converse(port)
        finally:
            with contextlib.suppress(OSError):
                port.close()

    def _converse(self, port: serial.Serial) -> str:
        reader = self.reader
        channel = _PortChannel(port.fileno())
        flags = [osdp.LibFlag.EnableNotification]
        if reader.scbk is not None:
            flags.append(osdp.LibFlag.EnforceSecure)
        info = osdp.PDInfo(reader.address, channel, scbk=reader.scbk, flags=flags)
        panel = osdp.ControlPanel([info], log_level=osdp.LogLevel.Emergency)
        ctx = panel.ctx  # driven from this thread only: no lock needed
        ctx.set_event_callback(self._libosdp_event)  # not the wrapper's queue, which nobody would drain
        hangup = select.poll()
        hangup.register(port.fileno(), select.POLLIN)
        opened = time.monotonic()
        try:
            while not self.stopping.is_set():
                self._send_feedback(ctx)
                ctx.refresh()
                if channel.error is not None:
                    return describe_error(reader.port, channel.error, opening=False)
                if any(revents & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, revents in hangup.poll(0)):
                    return f"{reader.port} disconnected"
                now = time.monotonic()
                online = bool(ctx.status() & 1) and (reader.scbk is None or bool(ctx.sc_status() & 1))
                if online and not self.was_online:
                    self.was_online = True
                    channel.last_rx = now
                    self._post(self.on_online)
                if self.was_online:
                    if not online or self._pd_went_offline:
                        return f"OSDP reader at address {reader.address} went offline"
                    if now - channel.last_rx > reader.reply_timeout_s:
                        return f"OSDP reader at address {reader.address} stopped answering"
                elif self._pd_went_offline or now - opened > reader.online_timeout_s:
                    return self._why_not_online(channel)
                self.stopping.wait(REFRESH_S)
            return "stopped"
        finally:
            del ctx, panel  # libosdp tears down here, on the thread that drove it

    def _send_feedback(self, ctx: Any) -> None:
        """Queue the signals the gateway asked for since the last refresh (only to an online PD: a
        signal is about a tap that has just happened, not one to show later), and renew a lasting one."""
        now = time.monotonic()
        while True:
            try:
                feedback = self.reader.pending_feedback.get_nowait()
            except queue.Empty:
                break
            if self.was_online:
                self._submit(ctx, feedback_commands(feedback))
                hold = feedback_hold_s(feedback)
                self._lasting = (feedback, now + hold, now + LED_RENEW_S) if hold > LED_RENEW_S else None
        if self._lasting is not None and now >= self._lasting[2]:
            feedback, ends, _ = self._lasting
            self._submit(ctx, feedback_commands(feedback, hold_s=ends - now, beep=False))
            self._lasting = (feedback, ends, now + LED_RENEW_S) if ends - now > LED_RENEW_S else None

    @staticmethod
    def _submit(ctx: Any, commands: list[dict[str, Any]]) -> None:
        for command in commands:
            with contextlib.suppress(Exception):  # a full command queue drops it, like a busy PD
                ctx.submit_command(0, command)

    def _why_not_online(self, channel: _PortChannel) -> str:
        address = self.reader.address
        if channel.received == 0:
            return f"no answer from an OSDP reader at address {address} on {self.reader.port}"
        if self.reader.scbk is not None:
            return f"OSDP reader at address {address} refused the secure channel (is scbk_file its key?)"
        return f"OSDP reader at address {address} did not come online (does it require a secure channel?)"

    def _libosdp_event(self, _pd: int, event: dict[str, Any]) -> int:
        """libosdp's callback, on the worker thread, from inside `refresh`."""
        kind = event.get("event")
        if kind == osdp.Event.Notification:
            if event.get("type") == _NOTIFY_PD_STATUS and not event.get("arg0"):
                self._pd_went_offline = True
        elif kind in (osdp.Event.CardRead, osdp.Event.KeyPress):
            self._post(self.on_event, event)
        return 0


# ---- the reader ---------------------------------------------------------------------------------


class OsdpReader(Reader):
    """An OSDP PD on a serial line: `CardRead` per presentation, `KeypadInput` per entry, online/offline."""

    def __init__(
        self,
        device_id: str,
        port: str,
        *,
        address: int = 101,
        scbk: bytes | None = None,
        baudrate: int = BAUDRATE,
        repeat_gap_s: float = 0.5,
        online_timeout_s: float = ONLINE_TIMEOUT_S,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        keypad_timeout_s: float = KEYPAD_TIMEOUT_S,
        send_feedback: bool = True,
    ) -> None:
        super().__init__(device_id)
        if scbk is not None and len(scbk) != SCBK_LENGTH:
            raise ValueError(f"a secure-channel key has {SCBK_LENGTH} bytes")
        self.port = port
        self.address = address
        self.scbk = scbk
        self.baudrate = baudrate
        self.online_timeout_s = online_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.keypad_timeout_s = keypad_timeout_s
        self.send_feedback = send_feedback
        self.presence = PresenceFilter(repeat_gap_s)
        self.faults = BadFrameCounter()
        self.keypad = KeypadEntry()
        #: Signals for the session thread to send; put by `feedback` on the loop, taken by the thread.
        self.pending_feedback: queue.SimpleQueue[Feedback] = queue.SimpleQueue()
        self._state: bool | None = None  # None until the first session has a verdict

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        keypad_timer: asyncio.TimerHandle | None = None

        def went_online() -> None:
            self._state = self.online = True
            log.info("%s: OSDP reader online%s", self.id, " (secure channel)" if self.scbk else "")
            emit(DeviceOnline(self.id, utcnow()))

        def keypad_pause() -> None:
            nonlocal keypad_timer
            keypad_timer = None
            digits = self.keypad.flush()
            if digits is not None:
                emit(KeypadInput(self.id, digits, utcnow()))

        def on_event(event: dict[str, Any]) -> None:
            nonlocal keypad_timer
            data = event.get("data", b"")
            if event.get("event") == osdp.Event.KeyPress:
                if keypad_timer is not None:
                    keypad_timer.cancel()
                    keypad_timer = None
                for digits in self.keypad.feed(bytes(data)):
                    emit(KeypadInput(self.id, digits, utcnow()))
                if self.keypad.digits:
                    keypad_timer = loop.call_later(self.keypad_timeout_s, keypad_pause)
                return
            self._card_read(int(event.get("format", -1)), bytes(data), int(event.get("length", 0)), loop.time(), emit)

        delay = MIN_BACKOFF_S
        try:
            while True:
                session = _Session(self, loop, went_online, on_event)
                session.start()
                started = loop.time()
                try:
                    reason = await asyncio.shield(session.ended)
                except asyncio.CancelledError:
                    session.stop()  # the thread notices within REFRESH_S and closes the port
                    await asyncio.wait({session.ended}, timeout=1.0)
                    raise
                self._went_offline(reason, emit)
                if session.was_online and loop.time() - started >= STABLE_SESSION_S:
                    delay = MIN_BACKOFF_S
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        finally:
            if keypad_timer is not None:
                keypad_timer.cancel()

    def feedback(self, feedback: Feedback) -> None:
        if self.online and self.send_feedback:
            self.pending_feedback.put_nowait(feedback)

    def _went_offline(self, reason: str, emit: Emit) -> None:
        self.online = False
        if self._state is not False:
            self._state = False
            log.info("%s: offline: %s", self.id, reason)
            emit(DeviceOffline(self.id, utcnow(), reason))

    def _card_read(self, fmt: int, data: bytes, length: int, now: float, emit: Emit) -> None:
        uid = card_uid(fmt, data, length)
        if uid is None:  # never log the data: it is (most of) a card number
            self.bad_frames += 1
            log.debug("%s: malformed card read (format %d, %d bits)", self.id, fmt, length)
            in_window = self.faults.bad(now)
            if in_window is not None:
                emit(ReaderFault(self.id, utcnow(), in_window))
            return
        self.faults.good()
        if self.presence.is_new_tap(uid, now):
            emit(CardRead(self.id, uid, utcnow()))
