"""A serial port that reopens itself: the I/O half shared by every serial driver.

`SerialLink.run(session)` opens the port with pyserial-asyncio-fast, hands the stream pair to
`session` and, when the port is missing, disappears or errors, reports the outage once and retries
with capped back-off (0.2 s doubling to 1 s), so a device is back within about a second of its port
returning. Each device has its own link and task: one dead port never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable

import serial
import serial_asyncio_fast

log = logging.getLogger(__name__)

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

MIN_BACKOFF_S = 0.2
MAX_BACKOFF_S = 1.0
#: A session that lasted at least this long resets the back-off.
STABLE_SESSION_S = 2.0


class PortClosed(Exception):
    """The other end closed the port (end of file)."""


def describe_error(port: str, exc: BaseException, opening: bool) -> str:
    """One plain line for a DeviceOffline reason (no traceback, no pyserial noise)."""
    code = getattr(exc, "errno", None)
    if opening:
        if code == errno.ENOENT:
            return f"cannot open {port}: no such device"
        if code in (errno.EACCES, errno.EPERM):
            return f"cannot open {port}: permission denied (is the user in the dialout group?)"
        if code == errno.EBUSY:
            return f"cannot open {port}: busy"
        return f"cannot open {port}: {exc}"
    if isinstance(exc, PortClosed):
        return f"{port} closed"
    if isinstance(exc, serial.SerialException) and code is None:
        return f"{port} disconnected"
    return f"{port} failed: {exc}"


class SerialLink:
    """Owns one serial port for one driver; reconnects until cancelled.

    `on_online` is called each time the port opens; `on_offline(reason)` once per outage (also when
    the port cannot be opened at start-up). Neither may block.
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        on_online: Callable[[], None],
        on_offline: Callable[[str], None],
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_online = on_online
        self.on_offline = on_offline
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        #: None until the first attempt; then whether the port is open now.
        self.online: bool | None = None
        self.attempted = asyncio.Event()

    def _went_offline(self, reason: str) -> None:
        if self.online is not False:
            self.online = False
            log.info("%s: offline: %s", self.port, reason)
            self.on_offline(reason)

    async def run(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        delay = self.min_backoff_s
        while True:
            try:
                reader, writer = await serial_asyncio_fast.open_serial_connection(url=self.port, baudrate=self.baudrate)
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                self._went_offline(describe_error(self.port, exc, opening=True))
                self.attempted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            self.online = True
            self.attempted.set()
            self.on_online()
            started = loop.time()
            try:
                await session(reader, writer)
                reason = describe_error(self.port, PortClosed(), opening=False)
            except (OSError, PortClosed, EOFError) as exc:
                reason = describe_error(self.port, exc, opening=False)
            finally:
                await _close(writer)
            self._went_offline(reason)
            if loop.time() - started >= STABLE_SESSION_S:
                delay = self.min_backoff_s
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def read_chunks(reader: asyncio.StreamReader, feed: Callable[[bytes], None]) -> None:
    """Feed everything the port delivers to `feed` until the port closes (raises PortClosed)."""
    while True:
        data = await reader.read(1024)
        if not data:
            raise PortClosed()
        feed(data)
