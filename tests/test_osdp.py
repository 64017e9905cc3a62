"""OSDP: a real libosdp Control Panel (the driver) against a real libosdp PD (the simulator) over a pty."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from device_world import EventLog, make_settings, running
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import CardRead, DeviceOffline, DeviceOnline, KeypadInput, ReaderFault
from drivers.osdp import OsdpReader
from drivers.osdp_card import KeypadEntry, card_uid, pack_bits, read_scbk, wiegand_data, wiegand_frame
from drivers.registry import DriverUnavailable
from gateway.devices import build_devices
from simulators.osdp import SimulatedOsdp
from simulators.pty import SimError
from simulators.site import SimulatedSite

WIEGAND = 1
RAW = 0
KEY = "000102030405060708090A0B0C0D0E0F"
OTHER_KEY = "F0E0D0C0B0A090807060504030201000"


# ---- card data and keys ---------------------------------------------------------------------------


def test_wiegand_26_of_the_worked_example_is_5a0144() -> None:
    # PROTOCOLS.md §2: FC 90, CN 324 → 00101101000000001010001000; packed MSB first, left-aligned.
    frame = int("00101101000000001010001000", 2)
    assert pack_bits(frame, 26) == bytes.fromhex("2D00A200")
    assert card_uid(WIEGAND, bytes.fromhex("2D00A200"), 26) == "5A0144"
    assert wiegand_frame(0x5A0144, 26) == frame
    assert wiegand_frame(int("0C607CF", 16) >> 1 & 0xFFFFFF, 26) == 0x0C607CF  # FC 99, CN 999


def test_a_parity_error_is_a_bad_read_not_a_card() -> None:
    good = int("00101101000000001010001000", 2)
    for bit in range(26):
        assert card_uid(WIEGAND, pack_bits(good ^ (1 << bit), 26), 26) is None


def test_other_formats_and_lengths() -> None:
    w34 = wiegand_frame(0xDEADBEEF, 34)
    assert card_uid(WIEGAND, pack_bits(w34, 34), 34) == "DEADBEEF"
    assert card_uid(WIEGAND, pack_bits(0b1011, 4), 4) == "0B"  # a 4-bit keypad code: bits as hex
    assert card_uid(RAW, pack_bits(0x3C00CE754C, 40), 40) == "3C00CE754C"
    assert card_uid(RAW, bytes.fromhex("2D00A200"), 26) == "00B40288"  # unspecified: no parity to strip
    assert card_uid(WIEGAND, b"\x2d", 26) is None  # fewer bytes than the bit count needs
    assert card_uid(2, b"3c00ce754c", 10) == "3C00CE754C"  # ASCII (deprecated)


@given(st.sampled_from([26, 34]).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, (1 << (n - 2)) - 1))))
def test_wiegand_round_trip(case: tuple[int, int]) -> None:
    length, data = case
    frame = wiegand_frame(data, length)
    assert wiegand_data(frame, length) == data
    assert card_uid(WIEGAND, pack_bits(frame, length), length) == f"{data:0{(length - 2) // 4}X}"


@given(st.integers(0, 2), st.binary(max_size=20), st.integers(-5, 200))
def test_any_card_data_never_raises(fmt: int, data: bytes, length: int) -> None:
    uid = card_uid(fmt, data, length)
    assert uid is None or (uid == uid.upper() and len(uid) % 2 == 0)


def test_keypad_entries() -> None:
    keys = KeypadEntry(max_digits=6)
    assert keys.feed(b"12\r") == ["12"]
    assert keys.feed(b"3#4") == ["3"] and keys.digits == "4"
    assert keys.feed(b"\x7f56*7A#") == ["7"]  # clear, clear again, a function key ignored
    assert keys.feed(b"#\r") == []  # an empty entry is no entry
    assert keys.feed(b"123456789") == [] and keys.flush() == "123456" and keys.flush() is None


def test_key_file(tmp_path: Path) -> None:
    good = tmp_path / "scbk"
    good.write_text(KEY.lower() + "\n")
    assert read_scbk(str(good)) == bytes.fromhex(KEY)
    assert read_scbk("") is None
    short = tmp_path / "short"
    short.write_text("0011")
    settings = make_settings(tmp_path, readers=[{"id": "r", "driver": "osdp", "port": "r", "scbk_file": str(short)}])
    with pytest.raises(DriverUnavailable) as caught:
        build_devices(settings)
    assert str(caught.value) == f"reader 'r': scbk_file {short}: expected 32 hex characters"


# ---- driver and simulator over a pty -------------------------------------------------------------


def osdp_settings(tmp_path: Path, **reader: Any):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, readers=[{"id": "bank-a", "driver": "osdp", "port": "bank-a", **reader}])


def key_file(tmp_path: Path, name: str, key: str) -> str:
    path = tmp_path / name
    path.write_text(key)
    return str(path)


async def test_a_tap_and_a_keypad_entry(tmp_path: Path) -> None:
    settings = osdp_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        reader = readers["bank-a"]
        assert isinstance(reader, OsdpReader) and reader.scbk is None and reader.address == 101
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.tap("bank-a", "90,324", hold=0.2)  # FC 90 / CN 324 as Wiegand-26
            assert (await log.next(CardRead, "bank-a")).uid == "5A0144"
            await site.keypad("bank-a", "12#")
            assert (await log.next(KeypadInput, "bank-a")).digits == "12"
            site.tap("bank-a", "DEADBEEF", hold=0.1)  # Wiegand-34
            assert (await log.next(CardRead, "bank-a")).uid == "DEADBEEF"
            site.tap("bank-a", "3C00CE754C", hold=0.1)  # raw bits
            assert (await log.next(CardRead, "bank-a")).uid == "3C00CE754C"
            assert [e.uid for e in log.of(CardRead)] == ["5A0144", "DEADBEEF", "3C00CE754C"]
            assert not log.of(DeviceOffline) and not log.of(ReaderFault)


async def test_the_secure_channel_with_the_same_key(tmp_path: Path) -> None:
    settings = osdp_settings(tmp_path, osdp_address=7, scbk_file=key_file(tmp_path, "scbk", KEY))
    log = EventLog()
    async with SimulatedSite(settings) as site:
        simulated = site.readers["bank-a"]
        assert isinstance(simulated, SimulatedOsdp) and simulated.scbk == bytes.fromhex(KEY)
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            site.tap("bank-a", "5A0144", hold=0.1)
            assert (await log.next(CardRead, "bank-a")).uid == "5A0144"
            await site.keypad("bank-a", "4*42")  # '*' clears; '#' is added
            assert (await log.next(KeypadInput, "bank-a")).digits == "42"


@pytest.mark.parametrize("reader_key", [OTHER_KEY, None])
async def test_a_reader_with_another_key_never_comes_online(tmp_path: Path, reader_key: str | None) -> None:
    settings = osdp_settings(tmp_path, scbk_file=key_file(tmp_path, "scbk", KEY))
    sim_settings = osdp_settings(tmp_path, scbk_file=key_file(tmp_path, "other", reader_key) if reader_key else "")
    log = EventLog()
    async with SimulatedSite(sim_settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            offline = await log.next(DeviceOffline, "bank-a")
            if reader_key:
                assert "refused the secure channel" in offline.reason
            site.tap("bank-a", "5A0144", hold=0.1)
            await asyncio.sleep(1.5)  # room for a retry or two
            assert not log.of(DeviceOnline) and not log.of(CardRead)
            assert len(log.of(DeviceOffline)) == 1  # once per outage, however many retries


async def test_unplug_silence_and_back(tmp_path: Path) -> None:
    settings = osdp_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.unplug("bank-a")
            assert "disconnected" in (await log.next(DeviceOffline, "bank-a")).reason
            await site.plug("bank-a")
            await log.next(DeviceOnline, "bank-a")
            await site.fault("bank-a", "silence")
            offline = await log.next(DeviceOffline, "bank-a", timeout=4.0)
            assert "stopped answering" in offline.reason
            await site.fault("bank-a", "none")
            await log.next(DeviceOnline, "bank-a", timeout=4.0)
            site.tap("bank-a", "5A0144", hold=0.1)
            assert (await log.next(CardRead, "bank-a")).uid == "5A0144"


async def test_no_port_is_offline_once_and_cancel_is_prompt(tmp_path: Path) -> None:
    reader = OsdpReader("bank-a", str(tmp_path / "dev" / "nothing"))
    log = EventLog()
    task = asyncio.get_running_loop().create_task(reader.run(log.emit))
    assert "no such device" in (await log.next(DeviceOffline, "bank-a")).reason
    await asyncio.sleep(0.7)  # several retries
    assert len(log.of(DeviceOffline)) == 1
    loop = asyncio.get_running_loop()
    task.cancel()
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 0.5


async def test_cancel_while_online_is_prompt_and_closes_the_port(tmp_path: Path) -> None:
    settings = osdp_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings):
        readers, _ = build_devices(settings)
        task = asyncio.get_running_loop().create_task(readers["bank-a"].run(log.emit))
        await log.next(DeviceOnline, "bank-a")
        loop = asyncio.get_running_loop()
        task.cancel()
        started = loop.time()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 0.5


async def test_the_simulator_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    settings = osdp_settings(tmp_path)
    async with SimulatedSite(settings) as site:
        for mistake in ("12a", "", "1 2"):
            with pytest.raises(SimError):
                await site.keypad("bank-a", mistake)
        with pytest.raises(SimError):
            await site.fault("bank-a", "garbage")
        await site.unplug("bank-a")
        with pytest.raises(SimError):
            await site.keypad("bank-a", "12")
