"""What a technician and a facilities manager run: demo, doctor, reports, metrics, reload."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gateway_world import devices_online_all, running, write_site

from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def lockergw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def seed(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(state_dir) as store:
        store.upsert(
            [
                {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
                {
                    "id": "C-2",
                    "uid": "14008EC793",
                    "holder": "ben",
                    "role": "user",
                    "scope": ["A-01"],
                    "status": "lost",
                },
            ],
            by="test",
            now=datetime.now(UTC),
        )


def test_demo_runs_the_whole_morning(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "demo.toml").read_text(encoding="utf-8")
    text = text.replace("/tmp/lockergw-demo", str(tmp_path)).replace("door_left_open_s = 20", "door_left_open_s = 2")
    config = tmp_path / "demo.toml"
    config.write_text(text, encoding="utf-8")
    result = lockergw("demo", "--config", str(config), "--plain", "--speed", "20", timeout=110)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for expected in (
        "access.granted reader=bank-a locker=A-01 holder=amira reason=assigned_locker",
        "locker.allocated reader=bank-b locker=B-01 holder=ella",
        "reason=shared_reopen",
        "credential.lost_presented",
        "reader.lockout",
        "unlock.failed board=board-a locker=A-03",
        "reason=master_section",
        "override.pending",
        "reason=emergency_override by=head+deputy",
        "door.forced_open board=board-a locker=A-05",
        "door.left_open board=board-a locker=A-02",
        "reader door-a-01 shows: pending",
        "access.granted reader=visitor-a locker=A-06 holder=dana-contractor reason=assigned_locker",
        "reader visitor-a shows: granted",
        "access.denied reader=visitor-a holder=dana-contractor reason=credential_revoked",
        "credentials.changed reason=single_use",
        "reader visitor-a shows: denied",
        "reader.lockout reader=visitor-a",
        "reader visitor-a shows: locked_out",
        "gateway.stopped",
    ):
        assert expected in out, expected
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("dev/*")), "simulated ports left behind"


async def test_doctor_says_what_is_wrong_and_what_is_fine(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, "mqtt://127.0.0.1:1883")
    missing = await asyncio.to_thread(lockergw, "doctor", "--config", str(config))
    assert missing.returncode == 1
    assert f"FAIL reader bank-a: {tmp_path}/dev/bank-a does not exist" in missing.stdout
    assert "fix:" in missing.stdout
    async with SimulatedSite(settings):
        healthy = await asyncio.to_thread(lockergw, "doctor", "--config", str(config))
    assert healthy.returncode == 0, healthy.stdout
    assert "ok   broker 127.0.0.1:1883: connected" in healthy.stdout
    assert healthy.stdout.strip().endswith("all checks passed")


def test_doctor_on_a_bad_file_lists_the_faults(tmp_path: Path) -> None:
    config, _ = write_site(tmp_path)
    config.write_text(config.read_text().replace('driver = "rdm6300"', 'driver = "rdm630"'))
    result = lockergw("doctor", "--config", str(config))
    assert result.returncode == 2
    assert "readers[0].driver: unknown driver 'rdm630'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_reports_metrics_and_reload_on_a_running_gateway(tmp_path: Path) -> None:
    port = _free_port()
    config, settings = write_site(tmp_path, extra=f"\n[metrics]\nport = {port}\n")
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await devices_online_all(gw)
        await site.tap("bank-a", "14008EC793")  # lost card
        await gw.wait_for("credential.lost_presented")
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", locker="A-03")
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert 'lockergw_taps_total{reader="bank-a"} 2.0' in body
        assert 'lockergw_denials_total{reason="credential_lost"} 1.0' in body
        assert 'lockergw_grants_total{reason="assigned_locker"} 1.0' in body
        assert "lockergw_decision_seconds_count 2.0" in body

        lost = await asyncio.to_thread(lockergw, "report", "lost", "--config", str(config), "--csv")
        assert lost.returncode == 0, lost.stderr
        assert lost.stdout.splitlines()[1] == "ben,C-2,card,,1,1"
        lockers = await asyncio.to_thread(lockergw, "report", "lockers", "--config", str(config), "--csv")
        assert "A-03,A,,assigned,electronic,in_service,,1,amira (#1)" in lockers.stdout
        overrides = await asyncio.to_thread(lockergw, "report", "overrides", "--config", str(config), "--csv")
        assert overrides.stdout.strip() == "seq,ts,locker,reader,reason,credential,holder,authorizers"

        # SIGHUP: credentials and policy re-read, taps keep working.
        config.write_text(config.read_text().replace("lockout_after = 3", "lockout_after = 2"))
        assert gw.process is not None
        gw.process.send_signal(signal.SIGHUP)
        await gw.wait_until(lambda: any("reloaded credentials" in line for line in gw.lines))
        mark = len(gw.events)
        for _ in range(2):
            await site.tap("bank-a", "DEADBEEF01", hold=0.05)
            await asyncio.sleep(0.6)  # a new presentation of the same card
        await gw.wait_for("reader.lockout", since=mark)  # the new lockout_after (2) is in force


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
