"""Configuration: the shipped examples load, overrides work, and every bad file gets a plain answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
EXAMPLES = sorted(p for p in CONFIG_DIR.glob("*.toml") if not p.name.startswith("central"))  # central: its own tests

MINIMAL = """
[gateway]
id = "gw-01"
site = "north-school"
state_dir = "{state}"

[[boards]]
id = "board-a"
driver = "kerong-cu16"
port = "/dev/null"

[[lockers]]
id = "A-01"
board = "board-a"
lock = 1

[[readers]]
id = "bank-a"
driver = "rdm6300"
port = "/dev/null"
lockers = ["A-01"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace("{state}", str(tmp_path / "state")), encoding="utf-8")
    return path


def faults_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.faults


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_shipped_example_loads(path: Path) -> None:
    settings = load_config(path)
    assert settings.gateway.id and settings.lockers
    served = {locker for reader in settings.readers for locker in reader.lockers}
    assert served <= {locker.id for locker in settings.lockers}


def test_site_type_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"school", "healthcare", "workplace", "industrial", "leisure", "demo", "gateway.example"} <= names


def test_defaults_follow_the_spec(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, MINIMAL))
    assert settings.mqtt.topic_prefix == "lockers"
    assert settings.mqtt.keepalive == 30
    assert settings.policy.lockout_after == 5
    assert settings.boards[0].poll_ms == 250 and settings.boards[0].unlock_ms == 550
    assert settings.boards[0].latch_closed_bit == 1
    assert settings.readers[0].repeat_gap_s == 0.5
    assert settings.base_topic() == "lockers/north-school/gw-01"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKERGW_MQTT__URL", "mqtt://10.0.0.5:1883")
    monkeypatch.setenv("LOCKERGW_POLICY__LOCKOUT_AFTER", "3")
    settings = load_config(write(tmp_path, MINIMAL))
    assert settings.mqtt.url == "mqtt://10.0.0.5:1883"
    assert settings.policy.lockout_after == 3


def test_mistyped_environment_variable_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKERGW_MQTT__URLL", "mqtt://x")
    assert faults_of(write(tmp_path, MINIMAL)) == ["environment: LOCKERGW_MQTT__URLL: no key 'urll' in section 'mqtt'"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    text = MINIMAL.replace('site = "north-school"', 'site = "north-school"\ntimezon = "Europe/London"')
    assert faults_of(write(tmp_path, text)) == [
        "gateway.toml: gateway.timezon: unknown key (check the spelling; see config/gateway.example.toml)"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('driver = "rdm6300"', 'driver = "nosuch"'),
            "gateway.toml: readers[0].driver: unknown driver 'nosuch' (one of: rdm6300, serial-ascii, pn532, osdp)",
        ),
        (('id = "gw-01"\n', ""), "gateway.toml: gateway.id: missing (required)"),
        (('board = "board-a"', 'board = "board-z"'), "gateway.toml: lockers[0].board: no board with id 'board-z'"),
        (("lock = 1", "lock = 17"), "gateway.toml: lockers[0].lock: 17 is out of range for kerong-cu16 (1-16)"),
        (('lockers = ["A-01"]', 'lockers = ["A-09"]'), "gateway.toml: readers[0].lockers[0]: no locker with id 'A-09'"),
        (
            ('site = "north-school"', 'site = "North School"'),
            "gateway.toml: gateway.site: 'North School' does not match ^[a-z0-9-]+$",
        ),
        (
            ('state_dir = "{state}"', 'timezone = "Mars/Olympus"'),
            "gateway.toml: gateway.timezone: unknown time zone 'Mars/Olympus' (an IANA name such as 'Europe/London')",
        ),
    ],
)
def test_each_fault_is_one_line_naming_the_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert faults_of(write(tmp_path, MINIMAL.replace(*change))) == [expected]


def test_channel_used_twice(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[lockers]]\nid = "A-02"\nboard = "board-a"\nlock = 1\n'
    assert faults_of(write(tmp_path, text)) == [
        "gateway.toml: lockers[1].lock: channel 1 of board 'board-a' is already used by 'A-01'"
    ]


def test_run_reports_all_faults_and_exits_2(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('driver = "rdm6300"', 'driver = "nosuch"')
        .replace('id = "gw-01"\n', "")
        .replace('board = "board-a"', 'board = "board-z"')
    )
    path = write(tmp_path, text)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert "gateway.toml: gateway.id: missing (required)" in lines
    assert any(line.startswith("gateway.toml: readers[0].driver: unknown driver 'nosuch'") for line in lines)
    assert "gateway.toml: lockers[0].board: no board with id 'board-z'" in lines


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    assert faults_of(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: no such file (pass --config PATH)"]
    bad = write(tmp_path, "[gateway\nid=")
    (fault,) = faults_of(bad)
    assert fault.startswith("gateway.toml: not valid TOML:")
