"""Kerong CU16/CU48: every frame of PROTOCOLS.md §3 (errata included), the simulated boards answering
them byte for byte over a pty, and the driver polling, unlocking and going offline against them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import serial
from device_world import EventLog, make_settings, running
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import BoardStatus, DeviceOffline, DeviceOnline
from drivers.kerong import CU16, CU48, KerongBoard, ReplyScanner, is_valid_reply
from gateway.devices import build_devices
from simulators.kerong import SimulatedBoard, SimulatedKerongBus
from simulators.site import SimulatedSite


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# ---- codecs against the spec -----------------------------------------------------------------------


def test_cu16_host_frames_are_the_spec_examples() -> None:
    assert CU16.status_request(0) == h("02 00 30 03 35")
    assert CU16.unlock_request(0, 3) == h("02 02 31 03 38")
    assert CU16.unlock_time_query(0) == h("02 00 37 03 3C")
    assert CU16.unlock_time_set(0, 0x64) == h("02 00 37 00 64 03 A0")
    assert CU16.status_request(1) == h("02 10 30 03 45")
    assert CU16.unlock_request(1, 16) == h("02 1F 31 03 55")


def test_cu48_host_frames_are_the_spec_examples() -> None:
    assert CU48.status_request(0) == h("02 00 00 50 03 55")
    assert CU48.unlock_request(0, 1) == h("02 00 00 51 03 56")
    assert CU48.unlock_request(0, 48) == h("02 00 2F 51 03 85")


@pytest.mark.parametrize(
    "reply",
    [
        "02 00 35 01 00 01 00 03 3C",
        "02 00 36 00 03 01 00 03 3F",
        "02 10 36 01 00 00 08 03 54",
        "02 00 35 0F 00 01 00 03 4A",
        "02 00 38 0F 00 00 37 03 83",
        "02 00 38 00 00 00 64 03 A1",
        "02 10 38 00 00 00 37 03 84",
        "02 00 38 0F 00 00 64 03 B0",  # erratum: the spec prints 4C
        "02 10 38 00 00 00 64 03 B1",  # erratum: the spec prints 4D
        "02 00 40 01 00 00 01 03 47",
    ],
)
def test_every_cu16_spec_reply_is_valid(reply: str) -> None:
    assert is_valid_reply(h(reply), 9)


@pytest.mark.parametrize("reply", ["02 00 38 0F 00 00 64 03 4C", "02 10 38 00 00 00 64 03 4D"])
def test_the_misprinted_sums_are_rejected(reply: str) -> None:
    assert not is_valid_reply(h(reply), 9)


def test_cu16_status_reply_decodes_hooks_and_items_with_either_polarity() -> None:
    status = CU16.parse_status(h("02 00 35 01 00 01 00 03 3C"), 0, latch_closed_bit=1)
    assert status is not None
    assert status.closed == (True,) + (False,) * 15  # lock 1 locked
    assert status.items == (True,) + (False,) * 15  # item in 1
    inverted = CU16.parse_status(h("02 00 35 01 00 01 00 03 3C"), 0, latch_closed_bit=0)
    assert inverted is not None and inverted.closed == (False,) + (True,) * 15
    unlock_all = CU16.parse_status(h("02 00 35 0F 00 01 00 03 4A"), 0, 1)
    assert unlock_all is not None and unlock_all.closed[:5] == (True, True, True, True, False)
    assert CU16.parse_status(h("02 00 35 01 00 01 00 03 3C"), 1, 1) is None  # another board's reply


def test_cu16_unlock_time_replies() -> None:
    assert CU16.parse_unlock_time(h("02 00 38 0F 00 00 37 03 83"), 0) == 55  # 550 ms
    assert CU16.parse_unlock_time(h("02 00 38 00 00 00 64 03 A1"), 0) == 100  # 1000 ms
    assert CU16.parse_unlock_time(h("02 00 35 01 00 01 00 03 3C"), 0) is None


def test_cu48_status_replies() -> None:
    status = CU48.parse_status(h("02 00 00 65 07 00 00 00 00 C0 03 31"), 0, 1)
    assert status is not None
    assert [i + 1 for i, closed in enumerate(status.closed) if closed] == [1, 2, 3, 47, 48]
    assert status.items == (False,) * 48
    other = CU48.parse_status(h("02 01 00 65 00 00 80 00 00 00 03 EB"), 1, 1)
    assert other is not None and [i + 1 for i, closed in enumerate(other.closed) if closed] == [24]
    assert is_valid_reply(h("02 00 00 65 07 00 00 00 00 C0 03 31"), 12)


def test_scanner_ignores_bad_sums_and_short_replies_and_resyncs() -> None:
    scanner = ReplyScanner(9)
    good = h("02 00 35 01 00 01 00 03 3C")
    bad_sum = h("02 00 35 01 00 01 00 03 3D")
    result = scanner.feed(b"\xff\xfe" + bad_sum + good + good[:6])
    assert result.frames == [good]
    assert result.bad_frames >= 2
    assert scanner.flush() == 1  # the short reply left at the end


@given(st.binary(max_size=300))
def test_scanner_never_raises(data: bytes) -> None:
    result = ReplyScanner(12).feed(data)
    assert all(is_valid_reply(frame, 12) for frame in result.frames)


@given(
    st.binary(max_size=40).filter(lambda b: 0x02 not in b), st.binary(min_size=4, max_size=4), st.binary(max_size=40)
)
def test_a_good_reply_after_garbage_is_found(before: bytes, data: bytes, after: bytes) -> None:
    body = bytes([0x02, 0x10, 0x35, *data, 0x03])
    reply = body + bytes([sum(body) & 0xFF])
    assert reply in ReplyScanner(9).feed(before + reply + after).frames


# ---- simulated boards answer the spec examples byte for byte, over a pty ---------------------------


def exchange(port: Path, request: bytes, reply_length: int, replies: int = 1) -> bytes:
    with serial.Serial(str(port), 19200, timeout=1.0) as link:
        link.write(request)
        return bytes(link.read(reply_length * replies))


@pytest.fixture
def cu16_bus(tmp_path: Path) -> tuple[SimulatedKerongBus, SimulatedBoard, SimulatedBoard]:
    bus = SimulatedKerongBus(tmp_path / "rs485", "kerong-cu16")
    first, second = SimulatedBoard("b0", "kerong-cu16", 0), SimulatedBoard("b1", "kerong-cu16", 1)
    bus.add(first)
    bus.add(second)
    return bus, first, second


def set_locks(board: SimulatedBoard, closed: set[int], items: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for lock in board.locks:
        lock.open = lock.number not in closed
        lock.item = lock.number in items


async def ask(port: Path, request: str, length: int, replies: int = 1) -> str:
    reply = await asyncio.get_running_loop().run_in_executor(None, exchange, port, h(request), length, replies)
    return reply.hex(" ").upper()


async def test_simulated_cu16_answers_like_the_spec(cu16_bus: Any) -> None:
    bus, first, second = cu16_bus
    bus.port.plug()
    try:
        port = bus.port.path
        set_locks(first, closed={1}, items={1})
        assert await ask(port, "02 00 30 03 35", 9) == "02 00 35 01 00 01 00 03 3C"
        set_locks(first, closed={9, 10}, items={1})
        set_locks(second, closed={1}, items={12})
        assert await ask(port, "02 F0 32 03 27", 9, 2) == "02 00 36 00 03 01 00 03 3F 02 10 36 01 00 00 08 03 54"
        set_locks(first, closed={1, 2, 3, 4})
        assert await ask(port, "02 00 37 03 3C", 9) == "02 00 38 0F 00 00 37 03 83"
        set_locks(second, closed=set())
        assert await ask(port, "02 F0 37 00 64 03 90", 9, 2) == "02 00 38 0F 00 00 64 03 B0 02 10 38 00 00 00 64 03 B1"
        assert first.unlock_units == second.unlock_units == 100
        set_locks(first, closed=set())
        assert await ask(port, "02 00 37 00 64 03 A0", 9) == "02 00 38 00 00 00 64 03 A1"
        set_locks(first, closed={1})
        assert await ask(port, "02 00 40 01 03 46", 9) == "02 00 40 01 00 00 01 03 47"
        set_locks(first, closed={1, 2, 3, 4}, items={1})
        assert await ask(port, "02 00 33 03 38", 9) == "02 00 35 0F 00 01 00 03 4A"
        assert bus.received[-1] == h("02 00 33 03 38")
    finally:
        bus.port.unplug()


async def test_simulated_cu48_answers_like_the_spec(tmp_path: Path) -> None:
    bus = SimulatedKerongBus(tmp_path / "rs485", "kerong-cu48")
    first, second = SimulatedBoard("b0", "kerong-cu48", 0), SimulatedBoard("b1", "kerong-cu48", 1)
    bus.add(first)
    bus.add(second)
    set_locks(first, closed={1, 2, 3, 47, 48})
    set_locks(second, closed={24})
    bus.port.plug()
    try:
        assert await ask(bus.port.path, "02 00 00 50 03 55", 12) == "02 00 00 65 07 00 00 00 00 C0 03 31"
        both = await ask(bus.port.path, "02 0A 00 50 03 5F", 12, 2)
        assert both.endswith("02 01 00 65 00 00 80 00 00 00 03 EB")
    finally:
        bus.port.unplug()


# ---- the driver against simulated boards ------------------------------------------------------------

LOCKERS = [{"id": "A-03", "board": "board-a", "lock": 3}, {"id": "B-01", "board": "board-b", "lock": 1}]


def two_boards(tmp_path: Path, **board_a: Any) -> Any:
    common = {"driver": "kerong-cu16", "port": "rs485", "poll_ms": 40, "reply_timeout_ms": 40}
    return make_settings(
        tmp_path,
        boards=[
            {"id": "board-a", "address": 0, **common, **board_a},
            {"id": "board-b", "address": 1, **common},
        ],
        lockers=LOCKERS,
    )


async def test_unlock_sends_the_spec_frame_and_status_shows_the_door_open(tmp_path: Path) -> None:
    settings = two_boards(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        board_a = boards["board-a"]
        assert isinstance(board_a, KerongBoard) and board_a.bus is boards["board-b"].bus  # one bus, one port
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-a")
            await log.next(DeviceOnline, "board-b")
            assert (await log.next(BoardStatus, "board-a")).closed[2] is True
            frame_seen = asyncio.ensure_future(site.wait_for_frame("board-a", h("02 02 31 03 38")))
            assert await board_a.unlock(3) is True
            await asyncio.wait_for(frame_seen, 2)
            opened = await log.next(BoardStatus, "board-a", where=lambda s: not s.closed[2])
            assert opened.closed[:2] == (True, True) and len(opened.closed) == 16
            assert site.door_open("A-03")
            await site.close("A-03")
            await log.next(BoardStatus, "board-a", where=lambda s: s.closed[2])
            assert all(s.closed == (True,) * 16 for s in log.of(BoardStatus, "board-b"))
            assert board_a.bus.bad_replies == 0


async def test_a_jammed_lock_stays_closed(tmp_path: Path) -> None:
    settings = two_boards(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-a")
            await site.jam("A-03")
            await boards["board-a"].unlock(3)
            statuses = await log.statuses("board-a", 8)  # well past the 25 ms a good latch takes
            assert all(status.closed[2] for status in statuses)
            assert not site.door_open("A-03")
            assert site.boards["board-a"].lock(3).unlocks == 1


async def test_a_board_that_stops_answering_goes_offline_and_comes_back(tmp_path: Path) -> None:
    settings = two_boards(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-b")
            await site.fault("board-b", "silent")
            offline = await log.next(DeviceOffline, "board-b")
            assert "no valid reply" in offline.reason
            assert not boards["board-b"].online and boards["board-a"].online
            await site.fault("board-b", "none")
            await log.next(DeviceOnline, "board-b")
            assert boards["board-b"].online
            assert len(log.of(DeviceOffline, "board-b")) == 1 and not log.of(DeviceOffline, "board-a")


async def test_bad_sums_are_ignored_counted_and_make_the_board_offline(tmp_path: Path) -> None:
    settings = two_boards(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        board_a = boards["board-a"]
        assert isinstance(board_a, KerongBoard)
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-a")
            await site.fault("board-a", "bad-sum")
            await log.next(DeviceOffline, "board-a")
            assert board_a.bus.bad_replies >= 3
            await site.fault("board-a", "none")
            await log.next(DeviceOnline, "board-a")


async def test_a_board_that_replies_to_unlock_does_not_confuse_the_next_poll(tmp_path: Path) -> None:
    settings = two_boards(tmp_path, answers_unlock=True)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        board_a = boards["board-a"]
        assert isinstance(board_a, KerongBoard)
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-a")
            await site.reply_after_unlock("board-a", True)
            for _ in range(3):
                await board_a.unlock(3)
                await log.next(BoardStatus, "board-a", where=lambda s: not s.closed[2])
                await site.close("A-03")
                await log.next(BoardStatus, "board-a", where=lambda s: s.closed[2])
            statuses = await log.statuses("board-b", 3)
            assert all(len(s.closed) == 16 for s in statuses)
            assert not log.of(DeviceOffline) and board_a.bus.bad_replies == 0


async def test_inverted_latch_polarity(tmp_path: Path) -> None:
    settings = two_boards(tmp_path, latch_closed_bit=0)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            assert (await log.next(BoardStatus, "board-a")).closed == (True,) * 16
            await site.open("A-03")
            forced = await log.next(BoardStatus, "board-a", where=lambda s: not s.closed[2])
            assert forced.closed.count(False) == 1


async def test_unlock_time_is_set_at_start_when_it_differs(tmp_path: Path) -> None:
    settings = two_boards(tmp_path, unlock_ms=1000)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            await asyncio.wait_for(site.wait_for_frame("board-a", h("02 00 37 00 64 03 A0")), 3)
            await site.wait_until(lambda: site.boards["board-a"].unlock_units == 100)
            await log.statuses("board-a", 2)
            frames = site.frames_received("board-a")
            assert frames.count(h("02 00 37 00 64 03 A0")) == 1  # set once
            assert h("02 10 37 03 4C") in frames  # board-b was asked too ...
            assert not any(f[2] == 0x37 and len(f) == 7 and f[1] == 0x10 for f in frames)  # ... and left alone


async def test_cu48_unlock_and_status(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        boards=[{"id": "board-b", "driver": "kerong-cu48", "port": "rs485", "poll_ms": 40, "reply_timeout_ms": 40}],
        lockers=[{"id": "B-40", "board": "board-b", "lock": 40}],
    )
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            first = await log.next(BoardStatus, "board-b")
            assert len(first.closed) == 48 and all(first.closed) and not any(first.items)
            await boards["board-b"].unlock(40)
            await log.next(BoardStatus, "board-b", where=lambda s: not s.closed[39])
            assert h("02 00 27 51 03 7D") in site.frames_received("board-b")


async def test_unplugging_the_bus_takes_its_boards_offline_and_back(tmp_path: Path) -> None:
    settings = two_boards(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        _, boards = build_devices(settings)
        async with running(boards.values(), log):
            await log.next(DeviceOnline, "board-a")
            await site.unplug("board-a")
            offline = await log.next(DeviceOffline, "board-a")
            assert "rs485" in offline.reason
            assert await boards["board-a"].unlock(3) is False  # nothing to write to
            await site.plug("board-b")  # the same bus
            await log.next(DeviceOnline, "board-a", timeout=2.5)
            await log.next(DeviceOnline, "board-b", timeout=2.5)
