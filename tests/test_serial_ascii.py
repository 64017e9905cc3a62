"""serial-ascii readers and Wiegand converters: PROTOCOLS.md §2 examples, parity, formats — and over ptys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from device_world import EventLog, make_settings, running
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import CardRead, DeviceOnline
from drivers.serial_ascii import FrameError, LineParser, SerialAsciiReader, parse_line, wiegand_bits, wiegand_uid
from gateway.devices import build_devices
from simulators.site import SimulatedSite

W26_FC90_CN324 = "00101101000000001010001000"
W26_FC99_CN999 = "00110001100000011111001111"


@pytest.mark.parametrize(
    ("line", "fmt", "uid"),
    [
        ("5A0144", "hex", "5A0144"),  # WIE232-A: FC 90 / CN 324
        ("5A0144", "auto", "5A0144"),
        ("3c00ce754c", "hex", "3C00CE754C"),
        ("0000123478", "decimal", "01E256"),  # S4A: 0x1E256, padded to 24 bits
        ("0000123478", "auto", "01E256"),
        ("0013530444", "auto", "CE754C"),
        (W26_FC90_CN324, "wiegand26", "5A0144"),
        (W26_FC90_CN324, "auto", "5A0144"),
        (W26_FC99_CN999, "auto", "6303E7"),
        ("00101101 00000000 10100010 00", "auto", "5A0144"),  # spaces between groups are tolerated
    ],
)
def test_examples_of_the_protocol_notes(line: str, fmt: Any, uid: str) -> None:
    assert parse_line(line, fmt) == uid


def test_decimal_is_padded_to_the_configured_bit_width() -> None:
    assert parse_line("0000123478", "decimal", bit_width=32) == "0001E256"
    assert parse_line("0013530444", "decimal", bit_width=40) == "0000CE754C"


def test_wiegand34_carries_32_data_bits() -> None:
    bits = wiegand_bits("12345678", 34)
    assert len(bits) == 34
    assert parse_line(bits, "wiegand34") == parse_line(bits, "auto") == "12345678"


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        (W26_FC90_CN324[:-1] + "1", "wiegand26"),  # trailing parity wrong
        ("1" + W26_FC90_CN324[1:], "auto"),  # leading parity wrong
        (W26_FC90_CN324, "wiegand34"),  # wrong length for the format
        ("12AB", "decimal"),
        ("hello", "hex"),
        ("", "hex"),
    ],
)
def test_bad_lines_are_frame_errors(line: str, fmt: Any) -> None:
    with pytest.raises(FrameError):
        parse_line(line, fmt)


@given(st.integers(0, 2**24 - 1))
def test_wiegand26_round_trip(value: int) -> None:
    uid = f"{value:06X}"
    bits = wiegand_bits(uid, 26)
    assert len(bits) == 26 and wiegand_uid(bits) == uid


@given(st.integers(0, 2**32 - 1), st.integers(0, 33))
def test_any_single_bit_error_in_wiegand34_is_caught(value: int, flipped: int) -> None:
    bits = list(wiegand_bits(f"{value:08X}", 34))
    bits[flipped] = "1" if bits[flipped] == "0" else "0"
    with pytest.raises(FrameError):
        wiegand_uid("".join(bits))


@given(st.integers(0, 2**24 - 1), st.integers(0, 25))
def test_any_single_bit_error_in_wiegand26_is_caught(value: int, flipped: int) -> None:
    bits = list(wiegand_bits(f"{value:06X}", 26))
    bits[flipped] = "1" if bits[flipped] == "0" else "0"
    with pytest.raises(FrameError):
        wiegand_uid("".join(bits))


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_cr_lf_and_crlf_end_a_line(terminator: bytes) -> None:
    parser = LineParser("auto")
    result = parser.feed(b"5A0144" + terminator + W26_FC90_CN324.encode() + terminator)
    assert result.uids == ["5A0144", "5A0144"]
    assert result.bad_frames == 0


def test_parallax_framing_lf_hex_cr() -> None:
    assert LineParser("hex").feed(b"\n0F0184F07A\r").uids == ["0F0184F07A"]


def test_bad_lines_count_and_an_endless_line_counts_per_128_bytes() -> None:
    parser = LineParser("auto")
    assert parser.feed(b"nonsense\r\n\xff\xfe\r\n").bad_frames == 2
    assert parser.feed(b"x" * 300).bad_frames == 2
    result = parser.feed(b"tail of the long line\r\n5A0144\r\n")
    assert result.uids == ["5A0144"] and result.bad_frames == 0


@given(st.binary(max_size=400), st.sampled_from(["auto", "hex", "decimal", "wiegand26", "wiegand34"]))
def test_any_bytes_never_raise(data: bytes, fmt: Any) -> None:
    result = LineParser(fmt).feed(data)
    assert result.bad_frames >= 0
    assert all(uid == uid.upper() for uid in result.uids)


@given(st.binary(max_size=80), st.integers(0, 2**24 - 1))
def test_a_good_line_after_any_garbage_line_is_read(garbage: bytes, value: int) -> None:
    line = wiegand_bits(f"{value:06X}", 26).encode()
    result = LineParser("auto").feed(garbage + b"\r\n" + line + b"\r\n")
    assert f"{value:06X}" in result.uids


# ---- over ptys -----------------------------------------------------------------------------------


def converter(tmp_path: Path, fmt: str, **extra: Any):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path, readers=[{"id": "door-1", "driver": "serial-ascii", "port": "door-1", "format": fmt, **extra}]
    )


@pytest.mark.parametrize(
    ("fmt", "tapped", "read"),
    [
        ("wiegand26", "5A0144", "5A0144"),
        ("wiegand34", "12345678", "12345678"),
        ("hex", "3C00CE754C", "3C00CE754C"),
        ("decimal", "01E256", "01E256"),
        ("auto", "5A0144", "5A0144"),
        ("wiegand26", "3C00CE754C", "CE754C"),  # a W26 converter passes on the low 24 bits
    ],
)
async def test_a_tap_reaches_the_driver_in_each_format(tmp_path: Path, fmt: str, tapped: str, read: str) -> None:
    settings = converter(tmp_path, fmt)
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        assert isinstance(readers["door-1"], SerialAsciiReader)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "door-1")
            site.tap("door-1", tapped, hold=0.1)
            assert (await log.next(CardRead, "door-1")).uid == read


async def test_bad_parity_is_a_bad_frame_not_a_card(tmp_path: Path) -> None:
    settings = converter(tmp_path, "wiegand26")
    log = EventLog()
    async with SimulatedSite(settings) as site:
        readers, _ = build_devices(settings)
        async with running(readers.values(), log):
            await log.next(DeviceOnline, "door-1")
            await site.fault("door-1", "bad-parity")
            await site.tap("door-1", "5A0144", hold=0.05)
            await site.fault("door-1", "none")
            site.tap("door-1", "6303E7", hold=0.05)
            await log.next(CardRead, "door-1")
            assert [e.uid for e in log.of(CardRead)] == ["6303E7"]
            assert readers["door-1"].bad_frames == 1


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_chunking_does_not_change_what_is_read(data: bytes, cuts: list[int]) -> None:
    whole = LineParser("auto").feed(data)
    parser = LineParser("auto")
    uids: list[str] = []
    bad = 0
    position = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut > position:
            part = parser.feed(data[position:cut])
            uids += part.uids
            bad += part.bad_frames
            position = cut
    assert (uids, bad) == (whole.uids, whole.bad_frames)


def test_an_overlong_line_counts_the_same_however_it_arrives() -> None:
    data = b"x" * 300 + b"\n5A0144\n"
    whole = LineParser().feed(data)
    parser = LineParser()
    parts = [parser.feed(data[:299]), parser.feed(data[299:])]
    assert whole.uids == ["5A0144"] == [uid for part in parts for uid in part.uids]
    assert whole.bad_frames == sum(part.bad_frames for part in parts) == 2
