"""Issue 7 in the commands an operator runs: keygen, journal verify, doctor's new checks, the demo's
Ctrl-C, `lockergw` alone, retention with no broker, and stopping or starting on a read-only disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gateway_world import Daemon, devices_online_all, running, write_site

from gateway.journal import Journal
from gateway.mqtt.link import check
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def lockergw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_keygen_writes_a_private_key_the_gateway_accepts_and_never_overwrites_one(tmp_path: Path) -> None:
    key = tmp_path / "requests.key"
    made = lockergw("keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text().strip()
    assert len(text) == 64 and int(text, 16) >= 0
    _, settings = write_site(tmp_path / "site", "mqtt://127.0.0.1:1883")
    check(settings.mqtt.model_copy(update={"hmac_key_file": str(key)}))
    again = lockergw("keygen", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr and key.read_text().strip() == text
    assert lockergw("keygen", "--out", str(key), "--force").returncode == 0 and key.read_text().strip() != text


def test_journal_verify_reports_the_first_bad_seq(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    state_dir = settings.gateway.state_dir
    with Journal.open(state_dir, site="test-site", gateway="gw-e2e", boot_id="b") as journal:
        journal.append([{"kind": "door.opened", "locker": "A-01"} for _ in range(5)], datetime.now(UTC))
    good = lockergw("journal", "verify", "--config", str(config))
    assert good.returncode == 0 and "journal ok: seq 1..5" in good.stdout
    db = sqlite3.connect(state_dir / "journal.db")
    envelope = json.loads(db.execute("SELECT envelope FROM events WHERE seq = 3").fetchone()[0])
    envelope["locker"] = "Z-99"
    db.execute("UPDATE events SET envelope = ? WHERE seq = 3", (json.dumps(envelope),))
    db.commit()
    db.close()
    bad = lockergw("journal", "verify", "--config", str(config))
    assert bad.returncode == 1 and "seq 3" in bad.stdout, bad.stdout
    doctor = lockergw("doctor", "--no-broker", "--config", str(config))
    assert "FAIL journal" in doctor.stdout and "seq 3" in doctor.stdout


def test_doctor_fails_unsigned_requests_a_short_key_and_osdp_without_a_secure_channel(tmp_path: Path) -> None:
    config, _ = write_site(tmp_path, "mqtt://127.0.0.1:1883")
    text = config.read_text()
    (tmp_path / "short.key").write_text("too short")
    cases = {
        "allow": text.replace("keepalive = 5", "keepalive = 5\nallow_unsigned_requests = true"),
        "none": text.replace(f'hmac_key_file = "{tmp_path}/signing.key"', 'hmac_key_file = ""'),
        "short": text.replace(f"{tmp_path}/signing.key", f"{tmp_path}/short.key"),
        "osdp": text.replace('driver = "serial-ascii"', 'driver = "osdp"'),
    }
    expected = {
        "allow": "FAIL mqtt.allow_unsigned_requests",
        "none": "FAIL mqtt.hmac_key_file: not set",
        "short": "fewer than 32",
        "osdp": "FAIL reader door-b scbk_file: not set",
    }
    for name, body in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(body)
        result = lockergw("doctor", "--no-broker", "--config", str(path))
        assert result.returncode == 1 and expected[name] in result.stdout, (name, result.stdout)
    demo = lockergw("doctor", "--no-broker", "--config", str(CONFIG_DIR / "demo.toml"))
    assert "FAIL mqtt.allow_unsigned_requests" in demo.stdout


def test_lockergw_alone_lists_the_commands() -> None:
    result = lockergw()
    assert result.returncode == 2
    for command in ("run", "credentials", "demo", "doctor", "journal", "keygen"):
        assert f"    {command}" in result.stdout
    enroll = lockergw("credentials", "enroll", "--help")
    assert "stop the gateway first" not in enroll.stdout and "control socket" in enroll.stdout


async def test_ctrl_c_in_the_demo_stops_everything(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "demo.toml").read_text().replace("/tmp/lockergw-demo", str(tmp_path))
    config = tmp_path / "demo.toml"
    config.write_text(text)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "demo", "--config", str(config), "--plain",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while "»" not in (await process.stdout.readline()).decode():
            pass
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):  # the scenario alone would go on for more than a minute
        rest, _ = await process.communicate()
    assert "That was the morning" not in rest.decode()
    assert process.returncode in (0, 130)


async def test_with_no_broker_retention_still_prunes_the_journal(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)  # url = "": nothing is ever sent
    state_dir = settings.gateway.state_dir
    old = datetime.now(UTC) - timedelta(days=45)
    with Journal.open(state_dir, site="test-site", gateway="gw-e2e", boot_id="b") as journal:
        journal.append([{"kind": "door.opened", "locker": "A-01"} for _ in range(20)], old)
    async with SimulatedSite(settings), running(config) as gw:
        await devices_online_all(gw)
        await gw.wait_until(lambda: any("journal retention (no broker): 20 events" in line for line in gw.lines))
    with Journal.open(state_dir, site="test-site", gateway="gw-e2e", boot_id="b") as journal:
        assert journal.first_seq == 21 and journal.verify() is None


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` made read-only with a read-only bind mount (root only); skips the test otherwise."""
    if os.geteuid() != 0:
        pytest.skip("needs root to remount a directory read-only")
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount: {mounted.stderr!r}")
    try:
        remount = ["mount", "-o", "remount,bind,ro", str(directory), str(directory)]
        if subprocess.run(remount, capture_output=True, check=False).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


async def test_stopping_and_starting_on_a_read_only_state_dir_say_so_in_one_line(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    state_dir = settings.gateway.state_dir
    async with SimulatedSite(settings):
        gw = await Daemon(config).start()
        try:
            await gw.wait_for("gateway.started", timeout=20)
            await devices_online_all(gw)
            with read_only(state_dir):
                assert await gw.stop(signal.SIGTERM) == 0
                assert any("could not remove" in line and "control.sock" in line for line in gw.lines), gw.lines
                assert not any("Traceback" in line for line in gw.lines)
                again = await asyncio.to_thread(lockergw, "run", "--config", str(config))
                assert again.returncode == 2
                lines = again.stderr.strip().splitlines()
                assert len(lines) == 1 and "read-only file system" in lines[0], again.stderr
        finally:
            if gw.process is not None and gw.process.returncode is None:
                gw.process.kill()


def test_a_short_signing_key_stops_start_up_in_one_line(tmp_path: Path) -> None:
    config, _ = write_site(tmp_path, "mqtt://127.0.0.1:1883")
    (tmp_path / "signing.key").write_text("sixteen-byte-key")
    result = lockergw("run", "--config", str(config), timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds 16 bytes, fewer than 32" in lines[0], result.stderr
    assert not (tmp_path / "state" / "journal.db").exists()  # refused before anything was journaled


@contextlib.contextmanager
def full_disk(directory: Path) -> Iterator[None]:
    """A small tmpfs at `directory`, filled to the last byte (root only; skips the test otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(directory)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs")
    try:
        with contextlib.suppress(OSError), open(directory / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def test_starting_on_a_full_disk_is_refused_in_one_line_naming_the_cause(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    with full_disk(settings.gateway.state_dir):
        result = lockergw("run", "--config", str(config), timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
