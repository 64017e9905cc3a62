"""The device end of a serial port: a pseudo-terminal published at a stable path.

The configuration names ports such as `/tmp/lockergw-demo/dev/bank-a`; the simulator opens a pty,
puts its slave side in raw mode and points a symlink at that path to `/dev/pts/N`, so the unmodified
driver opens it like any serial device. `unplug` closes the pty and removes the link (the driver sees
its port vanish); `plug` opens a new pty behind the same path.

The simulator keeps its own handle on the slave side open. Without it the master side reports
hang-up whenever no driver has the port open, and writes would fail; with it, bytes written while no
driver listens wait in the tty buffer until pyserial flushes them on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path


class SimError(Exception):
    """Something the simulator's user asked for that cannot be done; the message is one plain line."""


class PtyPort:
    def __init__(self, path: str | Path, on_data: Callable[[bytes], None] | None = None) -> None:
        self.path = Path(path)
        self.on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        """Open a pty and publish it at `path` (replacing a stale link left by an earlier run)."""
        if self._master is not None:
            return
        if self.path.exists() and not self.path.is_symlink():
            raise SimError(f"{self.path} exists and is not a symlink; the simulator will not replace it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        name = os.ttyname(slave)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            os.symlink(name, temporary)
            os.replace(temporary, self.path)
        except OSError as exc:
            os.close(master)
            os.close(slave)
            raise SimError(f"cannot publish a port at {self.path}: {exc.strerror}") from None
        self._master, self._slave, self.slave_name = master, slave, name
        if self.on_data is not None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(master, self._readable)

    def unplug(self) -> None:
        """Close the pty and remove the link; a driver holding the port gets an error at once."""
        master, slave = self._master, self._slave
        if master is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(master)
            self._loop = None
        self._master = self._slave = None
        with contextlib.suppress(OSError):
            if self.path.is_symlink() and os.readlink(self.path) == self.slave_name:
                self.path.unlink()
        os.close(master)
        if slave is not None:
            os.close(slave)
        self.slave_name = None

    def write(self, data: bytes) -> bool:
        """Best effort, like a UART with nobody listening: False when unplugged or the buffer is full."""
        if self._master is None:
            return False
        try:
            return os.write(self._master, data) == len(data)
        except OSError:
            return False

    def _readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except OSError:
            return
        if data and self.on_data is not None:
            self.on_data(data)
