"""The simulators' own encoders against PROTOCOLS.md's example frames, byte for byte.

The simulators do not borrow the drivers' codecs (a codec bug would then cancel out between a driver
and its simulator); these examples are the independent reference both sides answer to. The Kerong
boards' frames are checked the same way in test_kerong.py.
"""

from __future__ import annotations

import pytest

from simulators.osdp import SimulatedOsdp, raw_card_read
from simulators.rdm6300 import em4100_frame
from simulators.serial_ascii import converter_line, wiegand_bits


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize(
    ("uid", "frame"),
    [
        ("62E3086CED", "02 36 32 45 33 30 38 36 43 45 44 30 38 03"),  # Seeed wiki
        ("14008EC793", "02 31 34 30 30 38 45 43 37 39 33 43 45 03"),  # Tasmota
        ("3C00CE754C", "02 33 43 30 30 43 45 37 35 34 43 43 42 03"),
    ],
)
def test_rdm6300_frames_are_protocols_md_section_1_examples(uid: str, frame: str) -> None:
    assert em4100_frame(uid) == h(frame)
    assert em4100_frame(uid.lower()) == h(frame)  # the reader sends upper case whatever it is given


def test_wiegand_converter_lines_are_protocols_md_section_2_examples() -> None:
    # FC 90, CN 324 (jessety/wiegand-encoder) and FC 99, CN 999 = 0x0C607CF (angorb calculator).
    assert converter_line("5A0144", "wiegand26") == b"00101101000000001010001000\r\n"
    assert int(wiegand_bits(99 << 16 | 999, 26), 2) == 0x0C607CF
    assert converter_line("5A0144", "auto") == converter_line("5A0144", "wiegand26")
    # S4A Wiegand-Ethernet: 10 ASCII decimal digits and CR LF; 0x1E256 -> 0000123478.
    assert converter_line("01E256", "decimal") == b"0000123478\r\n"
    # The 24 data bits as 6 hex characters (WIE232-A), and a 34-bit frame's length and parity.
    assert converter_line("5A0144", "hex") == b"5A0144\r\n"
    bits34 = wiegand_bits(0x0001E256, 34)
    assert len(bits34) == 34 and bits34[1:33] == f"{0x0001E256:032b}"
    assert bits34[:17].count("1") % 2 == 0 and bits34[17:].count("1") % 2 == 1


def test_osdp_card_read_is_protocols_md_section_5_example() -> None:
    """osdp_RAW for W26 FC 90 / CN 324: reader_no, format (1 = Wiegand), bit count LSB first, data."""
    event = SimulatedOsdp.card_event("5A0144")
    payload = bytes([0x50, event["reader_no"], int(event["format"]), event["length"] & 0xFF, event["length"] >> 8])
    assert payload + event["data"] == h("50 00 01 1A 00 2D 00 A2 00")
    assert raw_card_read("5A0144") == (26, h("2D 00 A2 00"))
    # Not a Wiegand length: the bits as they are, format 0 (raw unspecified).
    assert raw_card_read("04A1B2C3D4E5F6") == (56, h("04 A1 B2 C3 D4 E5 F6"))
    assert int(SimulatedOsdp.card_event("04A1B2C3D4E5F6")["format"]) == 0
