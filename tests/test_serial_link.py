"""The reconnecting serial link: ports that are missing, vanish and come back — real ptys, real pyserial."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import serial
from device_world import EventLog, make_settings, running

from drivers.base import CardRead, DeviceOffline, DeviceOnline
from drivers.rdm6300 import Rdm6300Reader, encode_frame
from drivers.serial_link import describe_error
from gateway.devices import build_devices
from simulators.pty import PtyPort
from simulators.site import SimulatedSite


async def test_a_missing_port_is_reported_once_and_found_when_it_appears(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "dev" / "bank-a")
    reader = Rdm6300Reader("bank-a", str(port.path))
    log = EventLog()
    async with running([reader], log):
        offline = await log.next(DeviceOffline, "bank-a")
        assert offline.reason == f"cannot open {port.path}: no such device"
        assert not reader.online
        await asyncio.sleep(1.5)  # several retries with the port still missing
        port.plug()
        try:
            loop = asyncio.get_running_loop()
            plugged_at = loop.time()
            await log.next(DeviceOnline, "bank-a", timeout=2.0)
            assert loop.time() - plugged_at < 2.0  # back-off is capped at 1 s: back within two seconds
            assert len(log.of(DeviceOffline)) == 1  # one outage, one report
            assert port.write(encode_frame("3C00CE754C"))
            assert (await log.next(CardRead, "bank-a")).uid == "3C00CE754C"
        finally:
            port.unplug()


async def test_unplug_and_plug_a_reader(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, readers=[{"id": "bank-a", "driver": "rdm6300", "port": "bank-a"}])
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.unplug("bank-a")
            assert not Path(settings.readers[0].port).exists()
            offline = await log.next(DeviceOffline, "bank-a", timeout=1.0)
            assert "disconnected" in offline.reason
            await site.plug("bank-a")
            await log.next(DeviceOnline, "bank-a", timeout=2.0)
            site.tap("bank-a", "14008EC793", hold=0.1)
            assert (await log.next(CardRead, "bank-a")).uid == "14008EC793"
            assert len(log.of(DeviceOffline)) == 1 and len(log.of(DeviceOnline)) == 2


async def test_a_dead_port_does_not_hold_up_another_reader(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        readers=[
            {"id": "bank-a", "driver": "rdm6300", "port": "bank-a"},
            {"id": "bank-b", "driver": "rdm6300", "port": "bank-b"},
        ],
    )
    log = EventLog()
    async with SimulatedSite(settings) as site:
        await site.unplug("bank-b")
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOffline, "bank-b")
            await log.next(DeviceOnline, "bank-a")
            for uid in ("3C00CE754C", "14008EC793"):
                site.tap("bank-a", uid, hold=0.1)
                assert (await log.next(CardRead, "bank-a")).uid == uid
            assert not readers["bank-b"].online and readers["bank-a"].online


async def test_the_port_path_is_a_symlink_to_a_raw_pty(tmp_path: Path) -> None:
    port = PtyPort(tmp_path / "dev" / "bank-a")
    port.plug()
    try:
        assert port.path.is_symlink()
        assert str(port.path.resolve()).startswith("/dev/pts/")

        def read_back() -> bytes:
            with serial.Serial(str(port.path), 9600, timeout=1.0) as link:
                port.write(b"\x02\x03\r\n")  # raw mode: no line discipline in the way
                return bytes(link.read(4))

        assert await asyncio.get_running_loop().run_in_executor(None, read_back) == b"\x02\x03\r\n"
    finally:
        port.unplug()
    assert not port.path.exists() and not port.path.is_symlink()


def test_offline_reasons_are_one_plain_line() -> None:
    missing = serial.SerialException(errno.ENOENT, "could not open port /dev/ttyX: [Errno 2] No such file")
    assert describe_error("/dev/ttyX", missing, opening=True) == "cannot open /dev/ttyX: no such device"
    denied = serial.SerialException(errno.EACCES, "Permission denied")
    assert "dialout" in describe_error("/dev/ttyX", denied, opening=True)
    gone = serial.SerialException("device reports readiness to read but returned no data")
    assert describe_error("/dev/ttyX", gone, opening=False) == "/dev/ttyX disconnected"
