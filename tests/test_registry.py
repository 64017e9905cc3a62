"""drivers.registry: configuration driver names → device objects; unavailable drivers say so plainly."""

from __future__ import annotations

from pathlib import Path

import pytest
from device_world import make_settings

from drivers.kerong import CU16, CU48, KerongBoard
from drivers.rdm6300 import Rdm6300Reader
from drivers.serial_ascii import SerialAsciiReader
from gateway.config import Settings
from gateway.devices import build_devices


def test_drivers_are_built_from_the_configuration(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        readers=[
            {"id": "bank-a", "driver": "rdm6300", "port": "a", "repeat_gap_s": 0.7},
            {"id": "door-1", "driver": "serial-ascii", "port": "d", "format": "decimal", "bit_width": 32},
        ],
        boards=[
            {"id": "b0", "driver": "kerong-cu16", "port": "bus", "address": 0, "unlock_ms": 1000},
            {"id": "b1", "driver": "kerong-cu16", "port": "bus", "address": 1, "latch_closed_bit": 0},
            {"id": "c0", "driver": "kerong-cu48", "port": "bus2"},
        ],
    )
    readers, boards = build_devices(settings)
    assert isinstance(readers["bank-a"], Rdm6300Reader) and readers["bank-a"].presence.repeat_gap_s == 0.7
    door = readers["door-1"]
    assert isinstance(door, SerialAsciiReader) and (door.format, door.bit_width, door.baudrate) == ("decimal", 32, 9600)
    b0, b1, c0 = boards["b0"], boards["b1"], boards["c0"]
    assert isinstance(b0, KerongBoard) and isinstance(b1, KerongBoard) and isinstance(c0, KerongBoard)
    assert b0.bus is b1.bus and c0.bus is not b0.bus  # one bus object per serial port
    assert (b0.codec, c0.codec) == (CU16, CU48)
    assert (b0.lock_count, c0.lock_count) == (16, 48)
    assert (b0.unlock_time_units, b1.latch_closed_bit) == (100, 0)
    assert not any(device.online for device in [*readers.values(), *boards.values()])


@pytest.mark.parametrize(
    ("driver", "port", "class_name"),
    [("pn532", "udp:127.0.0.1:54399", "Pn532Reader"), ("osdp", "/dev/ttyUSB9", "OsdpReader")],
)
def test_nfc_and_osdp_readers_are_built_from_their_optional_libraries(
    tmp_path: Path, driver: str, port: str, class_name: str
) -> None:
    settings = Settings.model_validate(
        {
            "gateway": {"id": "gw-test", "site": "test", "state_dir": str(tmp_path / "state")},
            "readers": [{"id": "r-1", "driver": driver, "port": port}],
        }
    )
    readers, boards = build_devices(settings)
    assert type(readers["r-1"]).__name__ == class_name and boards == {}
