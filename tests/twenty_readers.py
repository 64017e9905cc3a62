"""A bank of 20 lockers on two Kerong CU16 boards, one RDM6300 reader and one card per locker: the
in-process site of the group-commit tests and of the tap-path benchmarks (bench/tap_world.py)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings

READERS = 20


def uid(n: int) -> str:
    """The card of reader n's locker holder."""
    return f"3C00CE75{n:02X}"


def reader_id(n: int) -> str:
    return f"r{n:02}"


def settings(root: Path, gateway_id: str = "gw-t") -> Settings:
    """Locker L-nn on board b1 (n < 10) or b2, lock n % 10 + 1, opened by reader rnn; no device is opened."""
    return Settings.model_validate(
        {
            "gateway": {"id": gateway_id, "site": "t", "state_dir": str(root / "state")},
            "boards": [
                {"id": "b1", "driver": "kerong-cu16", "port": "/dev/null"},
                {"id": "b2", "driver": "kerong-cu16", "port": "/dev/null-2"},
            ],
            "lockers": [
                {"id": f"L-{n:02}", "board": "b1" if n < 10 else "b2", "lock": n % 10 + 1} for n in range(READERS)
            ],
            "readers": [
                {"id": reader_id(n), "driver": "rdm6300", "port": f"/dev/null-r{n}", "lockers": [f"L-{n:02}"]}
                for n in range(READERS)
            ],
        }
    )
