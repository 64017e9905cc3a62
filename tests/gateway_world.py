"""The whole gateway as a user runs it: `lockergw run` in a subprocess, the project's simulators as its
devices (in the test's process), and its events read back from its JSON log lines as they happen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from broker.kit import write_signing_key

from gateway.config import Settings, load_config

WAIT_S = 8.0

SITE_TOML = """
[gateway]
id = "gw-e2e"
site = "test-site"
state_dir = "{root}/state"
timezone = "Europe/London"

[mqtt]
url = "{mqtt_url}"
keepalive = 5
hmac_key_file = "{root}/signing.key"

[policy]
lockout_after = 3
lockout_s = 60
door_left_open_s = 3

[[readers]]
id = "bank-a"
driver = "rdm6300"
port = "{root}/dev/bank-a"
lockers = ["A-01", "A-03"]
repeat_gap_s = {repeat_gap}

[[readers]]
id = "door-b"
driver = "serial-ascii"
port = "{root}/dev/door-b"
lockers = ["B-01", "B-02"]

[[boards]]
id = "board-a"
driver = "kerong-cu16"
port = "{root}/dev/rs485"
address = 0
poll_ms = 100

[[lockers]]
id = "A-01"
board = "board-a"
lock = 1
section = "A"

[[lockers]]
id = "A-03"
board = "board-a"
lock = 3
section = "A"

[[lockers]]
id = "B-01"
board = "board-a"
lock = 9
section = "B"
mode = "shared"

[[lockers]]
id = "B-02"
board = "board-a"
lock = 10
section = "B"
mode = "shared"
"""


def write_site(root: Path, mqtt_url: str = "", extra: str = "", repeat_gap: float = 0.5) -> tuple[Path, Settings]:
    root.mkdir(parents=True, exist_ok=True)
    write_signing_key(root / "signing.key")
    path = root / "gateway.toml"
    path.write_text(SITE_TOML.format(root=root, mqtt_url=mqtt_url, repeat_gap=repeat_gap) + extra, encoding="utf-8")
    return path, load_config(path)


class Daemon:
    """`lockergw run --config PATH --log-format json` with its events collected from stderr."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.process: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Daemon:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(self.config),
            "--log-format",
            "json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            with contextlib.suppress(ValueError):
                record = json.loads(text)
                if isinstance(record, dict) and isinstance(record.get("event"), dict):
                    self.events.append(record["event"])
            self._changed.set()
        self._changed.set()

    def find(self, kind: str, since: int = 0, **fields: Any) -> dict[str, Any] | None:
        for event in self.events[since:]:
            if event["kind"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    async def wait_for(self, kind: str, since: int = 0, timeout: float = WAIT_S, **fields: Any) -> dict[str, Any]:
        """The first event of `kind` (matching `fields`) at or after index `since` of `events`."""
        try:
            return await self._wait_for(kind, since, timeout, **fields)
        except TimeoutError:
            seen = [
                (e["seq"], e["kind"], e.get("reader") or e.get("board"), e.get("locker"), e.get("reason"))
                for e in self.events[since:]
            ]
            raise AssertionError(f"no {kind} {fields} within {timeout} s; events since: {seen}") from None

    async def _wait_for(self, kind: str, since: int, timeout: float, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = self.find(kind, since, **fields)
                if found is not None:
                    return found
                if (
                    self.process is not None
                    and self.process.returncode is not None
                    and self._reader is not None
                    and self._reader.done()
                ):
                    raise AssertionError(f"daemon exited ({self.process.returncode}) before {kind}: {self.lines[-5:]}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code


@contextlib.asynccontextmanager
async def running(config: Path, env: dict[str, str] | None = None) -> AsyncIterator[Daemon]:
    daemon = await Daemon(config, env).start()
    try:
        await daemon.wait_for("gateway.started", timeout=20)
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.returncode is None:
            await daemon.stop(signal.SIGKILL)


async def devices_online_all(gw: Daemon) -> None:
    """Every device of SITE_TOML has reported online."""
    await gw.wait_for("board.online", board="board-a")
    await gw.wait_for("reader.online", reader="bank-a")
    await gw.wait_for("reader.online", reader="door-b")
