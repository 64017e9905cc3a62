"""What commands write for people and spreadsheets (SPEC §4): formulas neutralised in every CSV, no
control characters from stored text reaching a terminal, full values when piped."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from broker.kit import running_gateway

from gateway.journal import Journal
from gateway.store import Store

CONFIG = """
[gateway]
id = "gw-h"
site = "hygiene"
state_dir = "{state}"

[[lockers]]
id = "A-01"
"""


def lockergw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60)


def site(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    with Store.open(tmp_path / "state") as store:
        store.upsert(
            [{"id": "C-1", "uid": "0A0B0C0D0E", "holder": "=1+2", "role": "user", "scope": ["A-01"],
              "approved_by": "@x"}],
            by="-cmd",
            now=datetime.now(UTC),
        )  # fmt: skip
    with Journal.open(tmp_path / "state", site="hygiene", gateway="gw-h", boot_id="b") as journal:
        journal.append(
            [{"kind": "access.granted", "locker": "A-01", "reason": "remote_open", "override": True,
              "unlock": "sent", "operator": "\x1b[2Jmallory", "note": "x", "authorizers": []}],
            datetime.now(UTC),
        )  # fmt: skip
    return config


def test_every_csv_neutralises_formulas(tmp_path: Path) -> None:
    config = site(tmp_path)
    listed = lockergw("credentials", "list", "--csv", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "'=1+2" in listed.stdout and "'@x" in listed.stdout and "'-cmd" in listed.stdout
    assert ",=1+2" not in listed.stdout
    report = lockergw("report", "holders", "--csv", "--config", str(config))
    assert report.returncode == 0 and "'=1+2" in report.stdout and ",=1+2" not in report.stdout


def test_reports_never_print_control_characters_and_are_not_cut_when_piped(tmp_path: Path) -> None:
    config = site(tmp_path)
    report = lockergw("report", "overrides", "--config", str(config))
    assert report.returncode == 0, report.stderr
    assert "\x1b" not in report.stdout and "\\x1b[2Jmallory" in report.stdout
    holders = lockergw("report", "lockers", "--config", str(config))
    assert "…" not in holders.stdout and "=1+2 (#1)" in holders.stdout  # full values, one row per line


async def test_control_characters_in_request_text_are_refused(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path / "state", "mqtt://127.0.0.1:9", connect=False, allow_unsigned_requests=True
    ) as rig:
        handler = rig.service.requests
        for field in ("operator", "reason"):
            body = {"locker": "A-01", "operator": "op", "reason": "r", field: "a\x1b[2Jb"}
            response = await handler.handle("lockers/open", json.dumps(body).encode())
            assert not response.ok and f"{field}: contains a control character" in response.payload["error"]
        authorizers = {"locker": "A-01", "operator": "op", "reason": "r", "authorizers": [{"id": "x\ny"}]}
        response = await handler.handle("lockers/open", json.dumps(authorizers).encode())
        assert not response.ok and "control character" in response.payload["error"]
        assert rig.bank.opened == []


def test_events_tail_never_prints_control_characters_from_the_broker() -> None:
    from gateway.commands.events import describe

    line = describe({"ts": "t", "site": "s", "gateway": "g", "seq": 1, "kind": "access.granted",
                     "reason": "\x1b[2J", "credential": {"id": "C-1", "holder": "h\x07"}})  # fmt: skip
    assert "\x1b" not in line and "\x07" not in line and "\\x1b[2J" in line
