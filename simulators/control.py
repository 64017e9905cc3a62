"""The simulator's control surface: one command language for the console and the local socket.

`execute(site, line)` runs one command and returns one `Reply` (never raises for a bad command);
`run_simulator` is `lockergw sim`: the site, a console on stdin and a Unix control socket that takes
the same commands, one per line, and answers each with one line (`ok …` or `error …`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gateway.config import Settings
from simulators.pty import SimError
from simulators.site import SimulatedSite

HELP = """commands:
  tap READER UID [--hold S]      present a card (default hold 0.3 s)
  keypad READER DIGITS           enter digits on a reader's keypad (OSDP readers only)
  close LOCKER                   close a door (it relatches)
  open LOCKER                    force a door open without an unlock
  jam LOCKER | unjam LOCKER      make a lock ignore unlocks, or mend it
  item LOCKER [on|off]           set or toggle the item sensor
  unplug DEVICE | plug DEVICE    remove or restore a reader's port or a board's bus port
  fault DEVICE MODE              readers: none bad-checksum bad-tail lowercase garbage silence bad-parity
                                 boards: none silent bad-sum
  reply-after-unlock BOARD on|off  answer unlocks with a status reply, as some boards do
  status                         devices, ports and doors
  help                           this text
  quit                           stop the simulator"""

MAX_LINE = 4096


@dataclass
class Reply:
    ok: bool
    text: str = ""
    data: dict[str, Any] | None = field(default=None)
    quit: bool = False

    def line(self) -> str:
        """The one-line form the socket sends."""
        word = "ok" if self.ok else "error"
        body = json.dumps(self.data, separators=(",", ":")) if self.data is not None else self.text
        return f"{word} {body}".rstrip() if body else word


def _on_off(word: str) -> bool:
    if word not in ("on", "off"):
        raise SimError(f"expected on or off, not {word!r}")
    return word == "on"


def _arity(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise SimError(f"usage: {usage}")


async def execute(site: SimulatedSite, line: str) -> Reply:
    """Run one command line against the site."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return Reply(False, f"cannot parse the command: {exc}")
    if not words:
        return Reply(True)
    command, args = words[0].lower(), words[1:]
    try:
        return await _dispatch(site, command, args)
    except SimError as exc:
        return Reply(False, str(exc))


async def _dispatch(site: SimulatedSite, command: str, args: list[str]) -> Reply:
    if command == "help":
        return Reply(True, HELP)
    if command == "quit":
        return Reply(True, "bye", quit=True)
    if command == "status":
        _arity(args, 0, 0, "status")
        return Reply(True, data=site.status())
    if command == "tap":
        hold = 0.3
        if "--hold" in args:
            at = args.index("--hold")
            if at + 1 >= len(args):
                raise SimError("usage: tap READER UID [--hold S]")
            try:
                hold = float(args[at + 1])
            except ValueError:
                raise SimError(f"--hold needs a number of seconds, not {args[at + 1]!r}") from None
            args = args[:at] + args[at + 2 :]
        _arity(args, 2, 2, "tap READER UID [--hold S]")
        site.tap(args[0], args[1], hold)
        return Reply(True, f"card at {args[0]} for {hold:g} s")
    if command == "keypad":
        _arity(args, 2, 2, "keypad READER DIGITS")
        await site.keypad(args[0], args[1])
        return Reply(True)
    if command in ("close", "open", "jam", "unjam"):
        _arity(args, 1, 1, f"{command} LOCKER")
        if command == "close":
            await site.close(args[0])
        elif command == "open":
            await site.open(args[0])
        else:
            await site.jam(args[0], command == "jam")
        done = {"close": "closed", "open": "forced open", "jam": "jammed", "unjam": "unjammed"}[command]
        return Reply(True, f"{args[0]} {done}")
    if command == "item":
        _arity(args, 1, 2, "item LOCKER [on|off]")
        present = await site.item(args[0], _on_off(args[1]) if len(args) == 2 else None)
        return Reply(True, f"{args[0]} item {'present' if present else 'absent'}")
    if command in ("unplug", "plug"):
        _arity(args, 1, 1, f"{command} DEVICE")
        return Reply(True, await site.unplug(args[0]) if command == "unplug" else await site.plug(args[0]))
    if command == "fault":
        _arity(args, 2, 2, "fault DEVICE MODE")
        await site.fault(args[0], args[1])
        return Reply(True, f"{args[0]} fault {args[1]}")
    if command == "reply-after-unlock":
        _arity(args, 2, 2, "reply-after-unlock BOARD on|off")
        await site.reply_after_unlock(args[0], _on_off(args[1]))
        return Reply(True, f"{args[0]} reply-after-unlock {args[1]}")
    raise SimError(f"unknown command {command!r} (try: help)")


def format_status(status: dict[str, Any]) -> str:
    """The console's multi-line view of `SimulatedSite.status()`."""
    lines: list[str] = []
    for reader_id, reader in status["readers"].items():
        state = "plugged" if reader["plugged"] else "UNPLUGGED"
        fault = f", fault {reader['fault']}" if reader["fault"] != "none" else ""
        shown = ", ".join(f"{what} {reader[what]}" for what in ("led", "buzzer") if reader.get(what))
        if not shown and reader.get("signal"):
            shown = f"last signal {reader['signal']}"
        signal = f", {shown}" if shown else ""
        lines.append(
            f"reader {reader_id} ({reader['driver']}) {reader['port']} → {reader['pty']} {state}{fault}{signal}"
        )
    for reader_id, reason in status["skipped"].items():
        lines.append(f"reader {reader_id}: {reason}")
    for board_id, board in status["boards"].items():
        state = "plugged" if board["plugged"] else "UNPLUGGED"
        extras = [f"fault {board['fault']}"] if board["fault"] != "none" else []
        if board["reply_after_unlock"]:
            extras.append("replies after unlock")
        suffix = f", {', '.join(extras)}" if extras else ""
        lines.append(
            f"board {board_id} ({board['driver']} @{board['address']}, unlock {board['unlock_ms']} ms) "
            f"{board['port']} → {board['pty']} {state}{suffix}"
        )
    for locker_id, locker in status["lockers"].items():
        notes = [note for note, on in (("jammed", locker["jammed"]), ("item", locker["item"])) if on]
        lines.append(
            f"locker {locker_id}: {locker['board']} lock {locker['lock']}, door {locker['door']}"
            + (f" ({', '.join(notes)})" if notes else "")
        )
    return "\n".join(lines)


# ---- lockergw sim ------------------------------------------------------------------------------


def default_socket_path(settings: Settings) -> Path:
    return Path(tempfile.gettempdir()) / f"lockergw-sim-{settings.gateway.id}.sock"


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a crashed simulator; refuse if another one is listening."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise SimError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise SimError(f"another simulator is listening on {path}")


class Simulator:
    """`lockergw sim`: the site plus its two control channels; `run` returns the exit status."""

    def __init__(self, settings: Settings, socket_path: Path, *, out: TextIO | None = None) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.out = out or sys.stdout
        self.site = SimulatedSite(settings, notify=self.say)
        self._stop = asyncio.Event()

    def say(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(line, file=self.out, flush=True)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, stdin: TextIO | None) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stop)
        _claim_socket_path(self.socket_path)
        async with self.site:
            try:
                server = await asyncio.start_unix_server(self._client, path=str(self.socket_path), limit=MAX_LINE)
            except OSError as exc:
                raise SimError(f"cannot listen on {self.socket_path}: {exc.strerror}") from None
            try:
                self.say(format_status(self.site.status()))
                self.say(f"control socket: {self.socket_path}  (type help for commands)")
                console = loop.create_task(self._console(stdin)) if stdin is not None else None
                await self._stop.wait()
                if console is not None:
                    console.cancel()
            finally:
                server.close()
                with contextlib.suppress(OSError):
                    self.socket_path.unlink()
        return 0

    async def _run_line(self, line: str) -> Reply:
        reply = await execute(self.site, line)
        if reply.quit:
            self.stop()
        return reply

    async def _console(self, stdin: TextIO) -> None:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:  # a daemon thread: a blocked readline never holds up exit
            try:
                for line in stdin:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            except (OSError, ValueError):
                pass
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=pump, name="sim console", daemon=True).start()
        interactive = _isatty(stdin)
        while True:
            line = await lines.get()
            if line is None:
                if interactive:
                    self.stop()  # Ctrl-D at a terminal
                return  # stdin closed or redirected: the socket keeps working
            reply = await self._run_line(line)
            if reply.data is not None:
                self.say(format_status(reply.data))
            elif reply.text or not reply.ok:
                self.say(reply.text if reply.ok else f"error: {reply.text}")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self._stop.is_set():
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b"error line too long\n")
                    break
                if not raw:
                    break
                reply = await self._run_line(raw.decode("utf-8", "replace"))
                writer.write(reply.line().replace("\n", " | ").encode("utf-8") + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


async def run_simulator(settings: Settings, socket_path: Path | None = None, stdin: TextIO | None = None) -> int:
    """Run `lockergw sim` until quit or a signal; raises SimError for a start-up problem."""
    simulator = Simulator(settings, socket_path or default_socket_path(settings))
    return await simulator.run(stdin)
