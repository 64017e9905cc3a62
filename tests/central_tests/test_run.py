"""`lockergw central --config F` as an operator meets it: the example file is valid, and a bad file or an
unreachable database is one plain line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from central.config import load_central_config

ROOT = Path(__file__).resolve().parents[2]


def central(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "central", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_configuration_is_valid_and_has_the_documented_defaults() -> None:
    settings = load_central_config(ROOT / "config" / "central.example.toml")
    assert settings.central.batch_ms == 50 and settings.central.takeover_s == 30
    assert settings.mqtt.share_group == "lockergw-central"


def test_a_bad_configuration_is_one_line_per_fault_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text('[central]\nbatch_ms = "soon"\n[mqtt]\nurl = "http://x"\n')
    result = central(config)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and any("batch_ms" in line for line in lines) and any("mqtt.url" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text('[central]\ndatabase = "postgresql://postgres@127.0.0.1:5432/no_such_central_db"\n')
    result = central(config)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.strip().splitlines() if "alembic" not in line]
    assert "no_such_central_db" in line and "Traceback" not in result.stderr


def test_an_unreadable_broker_password_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "central.toml"
    config.write_text(
        f'[central]\ndatabase = "sqlite:///{tmp_path}/c.db"\n[mqtt]\nusername = "central"\n'
        f'password_file = "{tmp_path}/missing"\n'
    )
    result = central(config)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.strip().splitlines() if "alembic" not in line]
    assert "mqtt.password_file" in line and "Traceback" not in result.stderr
