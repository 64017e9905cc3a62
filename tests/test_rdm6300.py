"""RDM6300: the frame parser against PROTOCOLS.md §1, one tap per presentation, and faults — over real ptys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from device_world import EventLog, make_settings, running
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import CardRead, DeviceOnline, ReaderFault
from drivers.presence import BadFrameCounter, PresenceFilter
from drivers.rdm6300 import Rdm6300Parser, Rdm6300Reader, encode_frame
from gateway.devices import build_devices
from simulators.site import SimulatedSite

# (uid, frame) pairs exactly as PROTOCOLS.md §1 lists them.
SPEC_FRAMES = [
    ("62E3086CED", "02 36 32 45 33 30 38 36 43 45 44 30 38 03"),
    ("14008EC793", "02 31 34 30 30 38 45 43 37 39 33 43 45 03"),
    ("3C00CE754C", "02 33 43 30 30 43 45 37 35 34 43 43 42 03"),
]


# ---- the parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("uid", "frame"), SPEC_FRAMES)
def test_spec_frames_decode_and_encode(uid: str, frame: str) -> None:
    parsed = Rdm6300Parser().feed(bytes.fromhex(frame))
    assert parsed.uids == [uid] and parsed.bad_frames == 0
    assert encode_frame(uid) == bytes.fromhex(frame)


def test_frames_split_anywhere_still_decode() -> None:
    stream = b"".join(bytes.fromhex(frame) for _, frame in SPEC_FRAMES)
    parser = Rdm6300Parser()
    uids: list[str] = []
    for byte in stream:
        result = parser.feed(bytes([byte]))
        uids += result.uids
        assert result.bad_frames == 0
    assert uids == [uid for uid, _ in SPEC_FRAMES]


def test_lowercase_hex_is_accepted_and_upper_cased() -> None:
    frame = encode_frame("3C00CE754C")
    lowered = frame[:1] + frame[1:13].lower() + frame[13:]
    assert Rdm6300Parser().feed(lowered).uids == ["3C00CE754C"]


def test_bad_checksum_counts_one_and_the_next_frame_is_read() -> None:
    bad = bytearray(encode_frame("3C00CE754C"))
    bad[11:13] = b"00"
    result = Rdm6300Parser().feed(bytes(bad) + encode_frame("14008EC793"))
    assert result.uids == ["14008EC793"]
    assert result.bad_frames == 1


def test_bad_tail_byte_counts_one() -> None:
    bad = bytearray(encode_frame("3C00CE754C"))
    bad[13] = 0x43
    result = Rdm6300Parser().feed(bytes(bad) + encode_frame("62E3086CED"))
    assert result.uids == ["62E3086CED"]
    assert result.bad_frames == 1


def test_each_run_of_garbage_counts_once_per_frames_worth() -> None:
    parser = Rdm6300Parser()
    assert parser.feed(b"noise noise").bad_frames == 1  # 11 bytes: one frame's worth
    assert parser.feed(b" more").bad_frames == 1  # 16 bytes in all: the run reaches a second frame's worth
    assert parser.feed(b" no").bad_frames == 0
    result = parser.feed(encode_frame("3C00CE754C") + b"xyz" + encode_frame("3C00CE754C"))
    assert result.uids == ["3C00CE754C", "3C00CE754C"]
    assert result.bad_frames == 1  # "xyz": a new run


def test_noise_without_any_stx_still_adds_up_to_a_fault() -> None:
    # A wrong baud rate or a floating line: never an STX byte, however it is chunked.
    parser = Rdm6300Parser()
    counts = [parser.feed(b"\xff" * 7).bad_frames for _ in range(40)]  # 280 bytes = 20 frames' worth
    assert sum(counts) == 20


def test_a_truncated_frame_is_abandoned_when_the_next_frame_starts() -> None:
    frame = encode_frame("3C00CE754C")
    result = Rdm6300Parser().feed(frame[:7] + frame)
    assert result.uids == ["3C00CE754C"]
    assert result.bad_frames == 1


@given(st.binary(max_size=400))
def test_any_bytes_never_raise(data: bytes) -> None:
    result = Rdm6300Parser().feed(data)
    assert result.bad_frames >= 0
    assert all(len(uid) == 10 and uid == uid.upper() for uid in result.uids)


uids = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())


@given(st.binary(max_size=60), uids, st.binary(max_size=60), st.lists(st.integers(0, 200), max_size=6))
def test_a_good_frame_is_found_after_any_garbage(before: bytes, uid: str, after: bytes, cuts: list[int]) -> None:
    stream = before + encode_frame(uid) + after
    parser = Rdm6300Parser()
    found: list[str] = []
    position = 0
    for cut in sorted(set(cuts)):
        found += parser.feed(stream[position:cut]).uids if cut > position else []
        position = max(position, cut)
    found += parser.feed(stream[position:]).uids
    assert uid in found


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_chunking_does_not_change_the_result(data: bytes, cuts: list[int]) -> None:
    whole = Rdm6300Parser().feed(data)
    parser = Rdm6300Parser()
    uids_found: list[str] = []
    bad = 0
    position = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut > position:
            part = parser.feed(data[position:cut])
            uids_found += part.uids
            bad += part.bad_frames
            position = cut
    assert (uids_found, bad) == (whole.uids, whole.bad_frames)


# ---- presentation and fault rules ----------------------------------------------------------------


def test_a_held_card_is_one_tap_and_a_gap_makes_a_new_one() -> None:
    presence = PresenceFilter(repeat_gap_s=0.5)
    frames_while_held = [presence.is_new_tap("A", t * 0.0625) for t in range(32)]  # 2 s in the field
    assert frames_while_held.count(True) == 1
    last = 31 * 0.0625
    assert not presence.is_new_tap("A", last + 0.4375)  # back before repeat_gap_s: the same presentation
    assert presence.is_new_tap("A", last + 0.4375 + 0.5)  # silence of exactly repeat_gap_s: a new tap
    assert presence.is_new_tap("B", last + 1.0)  # another card: a new tap at once


def test_ten_bad_frames_in_ten_seconds_fault_once_until_a_good_frame_or_a_minute() -> None:
    counter = BadFrameCounter()
    assert [counter.bad(t) for t in range(9)] == [None] * 9
    assert counter.bad(9.5) == 10
    assert all(counter.bad(10 + t * 0.5) is None for t in range(20))  # still garbage: no second fault
    counter.good()
    assert counter.bad(20) is not None  # re-armed by a good frame; the window is still full
    later = [counter.bad(20 + t * 0.5) for t in range(1, 121)]  # garbage for another minute
    assert [20 + (i + 1) * 0.5 for i, fault in enumerate(later) if fault is not None] == [80.0]


def test_slow_garbage_never_faults() -> None:
    counter = BadFrameCounter()
    assert all(counter.bad(t * 1.2) is None for t in range(100))


# ---- the driver against the simulator, over ptys -------------------------------------------------


def reader_settings(tmp_path: Path, repeat_gap_s: float = 0.5):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path, readers=[{"id": "bank-a", "driver": "rdm6300", "port": "bank-a", "repeat_gap_s": repeat_gap_s}]
    )


async def test_a_tap_is_one_card_read_however_long_it_is_held(tmp_path: Path) -> None:
    settings = reader_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        assert isinstance(readers["bank-a"], Rdm6300Reader)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.tap("bank-a", "3C00CE754C", hold=1.0)  # ~16 frames, 65 ms apart
            assert site.readers["bank-a"].frames_sent >= 15
            site.tap("bank-a", "14008EC793", hold=0.1)
            await log.next(CardRead, "bank-a", where=lambda e: e.uid == "14008EC793")
            # Events arrive in order: every frame of the first card has been handled by now.
            assert [e.uid for e in log.of(CardRead)] == ["3C00CE754C", "14008EC793"]
            assert readers["bank-a"].bad_frames == 0


async def test_a_card_back_within_the_gap_is_the_same_tap_after_the_gap_a_new_one(tmp_path: Path) -> None:
    settings = reader_settings(tmp_path, repeat_gap_s=0.3)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.tap("bank-a", "14008EC793", hold=0.3)
            await site.tap("bank-a", "14008EC793", hold=0.1)  # straight back: one presentation
            await asyncio.sleep(0.4)  # the card is away for longer than repeat_gap_s
            await site.tap("bank-a", "14008EC793", hold=0.1)
            await log.next(CardRead, "bank-a")
            await log.next(CardRead, "bank-a")
            site.tap("bank-a", "62E3086CED", hold=0.1)
            await log.next(CardRead, "bank-a", where=lambda e: e.uid == "62E3086CED")
            assert [e.uid for e in log.of(CardRead)] == ["14008EC793", "14008EC793", "62E3086CED"]


async def test_lowercase_reader_is_read(tmp_path: Path) -> None:
    settings = reader_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.fault("bank-a", "lowercase")
            site.tap("bank-a", "62E3086CED")
            assert (await log.next(CardRead, "bank-a")).uid == "62E3086CED"
            assert readers["bank-a"].bad_frames == 0


@pytest.mark.parametrize("mode", ["bad-checksum", "bad-tail"])
async def test_corrupt_frames_are_counted_never_read(tmp_path: Path, mode: str) -> None:
    settings = reader_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.fault("bank-a", mode)
            site.tap("bank-a", "3C00CE754C", hold=1.0)  # ~16 bad frames within a second
            fault = await log.next(ReaderFault, "bank-a")
            assert fault.bad_frames >= 10
            await site.fault("bank-a", "none")
            site.tap("bank-a", "62E3086CED", hold=0.1)
            await log.next(CardRead, "bank-a")
            assert [e.uid for e in log.of(CardRead)] == ["62E3086CED"]


async def test_garbage_faults_once_and_the_reader_keeps_reading(tmp_path: Path) -> None:
    settings = reader_settings(tmp_path)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "bank-a")
            await site.fault("bank-a", "garbage")
            first = await log.next(ReaderFault, "bank-a")
            assert first.bad_frames >= 10
            bad_at_fault = readers["bank-a"].bad_frames
            await asyncio.sleep(1.0)  # a further second of nothing but garbage
            assert readers["bank-a"].bad_frames >= bad_at_fault + 5
            assert len(log.of(ReaderFault)) == 1
            assert readers["bank-a"].online
            await site.fault("bank-a", "none")
            site.tap("bank-a", "3C00CE754C", hold=0.2)
            assert (await log.next(CardRead, "bank-a")).uid == "3C00CE754C"
