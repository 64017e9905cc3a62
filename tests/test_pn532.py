"""PN532 through nfcpy: the driver senses over nfcpy's UDP driver, the simulator answers as the card.

Real nfcpy on both sides, over a free localhost UDP port: no mocks. An idle UDP reader waits 1 s for
each answer, so these tests take a few seconds each.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from device_world import EventLog, running

from drivers.base import CardRead, DeviceOffline, DeviceOnline
from drivers.pn532 import Pn532Reader
from gateway.config import Settings
from gateway.devices import build_devices
from simulators.pn532 import MIN_FIELD_S, SimulatedPn532, card_memory
from simulators.pty import SimError
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(30)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port


def nfc_settings(tmp_path: Path, repeat_gap_s: float = 0.5, port: str | None = None) -> Settings:
    reader: dict[str, Any] = {
        "id": "nfc-1",
        "driver": "pn532",
        "port": port or f"udp:127.0.0.1:{free_udp_port()}",
        "repeat_gap_s": repeat_gap_s,
    }
    return Settings.model_validate(
        {"gateway": {"id": "gw-test", "site": "test", "state_dir": str(tmp_path / "state")}, "readers": [reader]}
    )


async def test_a_tap_is_one_card_read_however_long_it_is_held(tmp_path: Path) -> None:
    settings = nfc_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        assert isinstance(site.reader("nfc-1"), SimulatedPn532)
        readers, _ = build_devices(settings)
        assert isinstance(readers["nfc-1"], Pn532Reader)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "nfc-1")
            assert readers["nfc-1"].online
            held = site.tap("nfc-1", "A1:B2:C3:D4", hold=2.0)  # sensed every ~0.1 s once seen
            assert (await log.next(CardRead, "nfc-1")).uid == "A1B2C3D4"
            await held
            site.tap("nfc-1", "04A1B2C3D4E5F6")  # a 7-byte NXP uid
            assert (await log.next(CardRead, "nfc-1")).uid == "04A1B2C3D4E5F6"
            # Events arrive in order: every detection of the first card has been handled by now.
            assert [e.uid for e in log.of(CardRead)] == ["A1B2C3D4", "04A1B2C3D4E5F6"]


async def test_the_same_card_after_the_gap_is_a_new_tap(tmp_path: Path) -> None:
    settings = nfc_settings(tmp_path, repeat_gap_s=0.5)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "nfc-1")
            await site.tap("nfc-1", "11223344", hold=0)
            await asyncio.sleep(0.6)  # away for longer than repeat_gap_s
            site.tap("nfc-1", "11223344", hold=0)
            await log.next(CardRead, "nfc-1")
            await log.next(CardRead, "nfc-1")
            assert [e.uid for e in log.of(CardRead)] == ["11223344", "11223344"]


async def test_a_silent_card_is_not_read_until_it_answers_again(tmp_path: Path) -> None:
    settings = nfc_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "nfc-1")
            await site.fault("nfc-1", "silence")
            await site.tap("nfc-1", "A1B2C3D4", hold=0)
            assert log.of(CardRead) == []
            await site.fault("nfc-1", "none")
            await site.unplug("nfc-1")
            with pytest.raises(SimError, match="unplugged"):
                site.tap("nfc-1", "A1B2C3D4")
            await site.plug("nfc-1")
            site.tap("nfc-1", "55667788")
            assert (await log.next(CardRead, "nfc-1")).uid == "55667788"
            assert [e.uid for e in log.of(CardRead)] == ["55667788"]


async def test_cancelling_run_stops_the_worker_within_one_sense(tmp_path: Path) -> None:
    reader = Pn532Reader("nfc-1", f"udp:127.0.0.1:{free_udp_port()}")
    log = EventLog()
    task = asyncio.get_running_loop().create_task(reader.run(log.emit))
    await log.next(DeviceOnline, "nfc-1")
    await asyncio.sleep(0.2)  # the worker is now waiting on an unanswered sense
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.5  # the UDP driver's sense waits 1 s for an answer
    assert reader.worker is not None and not reader.worker.is_alive()
    assert not reader.online


async def test_a_reader_that_cannot_be_opened_is_offline_once_and_retried(tmp_path: Path) -> None:
    reader = Pn532Reader("nfc-1", "tty:NOSUCH9:pn532", retry_cap_s=0.2)
    log = EventLog()
    async with running([reader], log):
        offline = await log.next(DeviceOffline, "nfc-1")
        assert offline.reason == "no reader at tty:NOSUCH9:pn532"
        await asyncio.sleep(0.8)  # several more attempts
    assert len(log.of(DeviceOffline)) == 1 and log.of(DeviceOnline) == []


async def test_a_reader_that_fails_after_opening_is_offline_once_without_flapping(tmp_path: Path) -> None:
    reader = Pn532Reader("nfc-1", "udp:127.0.0.1:0", retry_cap_s=0.2)  # opens, but every send fails (port 0)
    log = EventLog()
    async with running([reader], log):
        await log.next(DeviceOnline, "nfc-1")  # the frontend opened
        offline = await log.next(DeviceOffline, "nfc-1")
        assert offline.reason == "udp:127.0.0.1:0: Invalid argument"
        await asyncio.sleep(0.8)  # reopened and failed again several times
        assert not reader.online
    assert (len(log.of(DeviceOnline)), len(log.of(DeviceOffline))) == (1, 1)


# ---- the simulator on its own ------------------------------------------------------------------


async def test_the_simulator_refuses_what_it_cannot_present(tmp_path: Path) -> None:
    settings = nfc_settings(tmp_path)
    async with SimulatedSite(settings) as site:
        with pytest.raises(SimError, match="4- or 7-byte"):
            site.tap("nfc-1", "3C00CE754C")  # an EM4100 id
        with pytest.raises(SimError, match="4- or 7-byte"):
            site.tap("nfc-1", "00112233445566778899")  # 10 bytes: nfcpy's UDP listener cannot cascade that far
        with pytest.raises(SimError, match="unknown fault"):
            await site.fault("nfc-1", "garbage")
        assert site.status()["readers"]["nfc-1"]["listen"] == f"0.0.0.0:{settings.readers[0].port.rsplit(':')[-1]}"


async def test_a_udp_port_in_use_is_refused_at_start(tmp_path: Path) -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("0.0.0.0", port))  # another emulator, or any other program
        with pytest.raises(SimError, match=f"UDP port {port} is already in use"):
            async with SimulatedSite(nfc_settings(tmp_path, port=f"udp:127.0.0.1:{port}")):
                pass


def test_a_pn532_on_a_tty_is_not_simulated(tmp_path: Path) -> None:
    site = SimulatedSite(nfc_settings(tmp_path, port="tty:AMA0:pn532"))
    assert set(site.skipped) == {"nfc-1"}


def test_card_memory_starts_with_the_uid_and_a_capability_container() -> None:
    memory = card_memory(bytes.fromhex("04A1B2C3D4E5F6"))
    assert memory[:9] == bytes.fromhex("04A1B2") + bytes([0x88 ^ 0x04 ^ 0xA1 ^ 0xB2]) + bytes.fromhex(
        "C3D4E5F6"
    ) + bytes([0xC3 ^ 0xD4 ^ 0xE5 ^ 0xF6])
    assert memory[12:16] == bytes.fromhex("E1100600") and len(memory) == 64
    assert MIN_FIELD_S > 1.0  # longer than one unanswered sense of the UDP driver


async def test_a_reader_using_nfcpy_connect_stays_connected_while_the_card_is_held(tmp_path: Path) -> None:
    """nfcpy's own reader mode checks presence with READ 30 00 every 0.1 s: the card answers while held."""
    import nfc

    settings = nfc_settings(tmp_path)
    times: dict[str, float] = {}
    uids: list[str] = []

    def read_as_nfcpy_does() -> None:
        clf = nfc.ContactlessFrontend(settings.readers[0].port)
        deadline = time.monotonic() + 6.0

        def on_connect(tag: Any) -> bool:
            times["connected"] = time.monotonic()
            uids.append(tag.identifier.hex().upper())
            return True  # stay connected while the presence check passes

        try:
            clf.connect(
                rdwr={"targets": ["106A"], "on-connect": on_connect, "beep-on-connect": False},
                terminate=lambda: time.monotonic() > deadline,
            )
            times["released"] = time.monotonic()
        finally:
            clf.close()

    async with SimulatedSite(settings) as site:
        card = site.reader("nfc-1")
        assert isinstance(card, SimulatedPn532)
        presented = site.tap("nfc-1", "A1B2C3D4", hold=2.5)
        await asyncio.to_thread(read_as_nfcpy_does)
        await presented
        assert uids == ["A1B2C3D4"]
        assert times["released"] - times["connected"] > 1.0  # connected within ~1.1 s of a 2.5 s hold
        assert card.reads_answered >= 10
