"""The daemon's local control socket (`state_dir/control.sock`, mode 0600), for the CLI.

One request per connection, one line each way. Today it carries one command:

    enroll READER SECONDS   →   uid HEX  |  error MESSAGE

`lockergw credentials enroll` uses it when the gateway is running (the reader's port is the
daemon's then): the next card tapped at that reader is handed to the operator's terminal instead of
being decided, so an enrolment tap is neither journaled as a denial nor counted towards a lockout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("lockergw")

SOCKET_NAME = "control.sock"
MAX_LINE = 512


class ControlServer:
    """Serves the control socket; `take_card(reader, uid)` is called by the daemon for every tap."""

    def __init__(self, state_dir: Path, readers: Callable[[], set[str]]) -> None:
        self.path = state_dir / SOCKET_NAME
        self._readers = readers
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ControlServer:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a gateway that did not stop cleanly
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        except OSError as exc:  # e.g. a state_dir path too long for a socket: enrol with the gateway stopped
            log.warning("no control socket at %s (%s): enrolment needs the gateway stopped", self.path, exc)
        finally:
            os.umask(old_umask)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for waiter in self._waiting.values():
            waiter.cancel()  # first: newer Pythons' wait_closed() waits for open connections
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. a state_dir that became read-only: stopping still succeeds
            log.warning("stopping: could not remove %s (%s); the next start replaces it", self.path, exc.strerror)

    def take_card(self, reader: str, uid: str) -> bool:
        """True if an enrolment was waiting at this reader: the tap is the operator's, not a decision."""
        waiter = self._waiting.pop(reader, None)
        if waiter is None or waiter.done():
            return False
        waiter.set_result(uid)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")[:MAX_LINE]
            answer = asyncio.ensure_future(self._answer(line.split()))
            hung_up = asyncio.ensure_future(reader.read(1))  # the operator pressed Ctrl-C, or the CLI died
            await asyncio.wait({answer, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            if not answer.done():
                answer.cancel()  # withdraws the enrolment: the next card at that reader is decided again
                await asyncio.gather(answer, return_exceptions=True)
                return
            hung_up.cancel()
            writer.write(answer.result().encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, words: list[str]) -> str:
        if len(words) != 3 or words[0] != "enroll":
            return "error usage: enroll READER SECONDS"
        device, seconds = words[1], words[2]
        if device not in self._readers():
            return f"error no reader {device!r} on this gateway"
        try:
            timeout = min(max(float(seconds), 1.0), 600.0)
        except ValueError:
            return "error SECONDS must be a number"
        if device in self._waiting:
            return f"error an enrolment is already waiting at reader {device!r}"
        waiter = self._waiting[device] = asyncio.get_running_loop().create_future()
        try:
            return f"uid {await asyncio.wait_for(waiter, timeout)}"
        except TimeoutError:
            return f"error no card within {timeout:g} s"
        finally:
            if self._waiting.get(device) is waiter:
                del self._waiting[device]


async def enroll_via_daemon(state_dir: Path, reader: str, timeout_s: float) -> str | None:
    """Ask a running gateway for the next card at `reader`: 'uid HEX' / 'error …', or None if no
    gateway is listening (then the CLI opens the reader itself)."""
    path = state_dir / SOCKET_NAME
    try:
        stream_reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except PermissionError:
        return f"error {path} belongs to the gateway's user: run enroll as that user (or root)"
    try:
        writer.write(f"enroll {reader} {timeout_s:g}\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(stream_reader.readline(), timeout_s + 5)
    except TimeoutError:
        return "error the gateway did not answer"
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    return answer.decode(errors="replace").strip() or "error the gateway stopped during the enrolment"
