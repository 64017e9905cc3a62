"""Issue 7 through the real daemon: signing is the default, one gateway per state directory, lockout
that guesses cannot dodge, short card numbers that match nothing longer, private files, and a journal
that cannot commit made visible — then recovered without a restart."""

from __future__ import annotations

import asyncio
import os
import resource
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from broker.kit import Capture
from broker.mosquitto import Mosquitto
from gateway_world import Daemon, devices_online_all, running, write_site

from gateway.journal import Journal
from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)

BASE = "lockers/test-site/gw-e2e"
PEOPLE = [
    {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
    {"id": "W-1", "uid": "5A0144", "holder": "wiegand", "role": "user", "scope": ["A-01"]},
    {"id": "P-1", "uid": "dec:0011259375", "holder": "printed", "role": "user", "scope": ["A-01"]},
    {"id": "E-1", "uid": "62E3086CED", "holder": "nurse-1", "role": "emergency", "scope": []},
]


def seed(state_dir: Path) -> None:
    with Store.open(state_dir) as store:
        store.upsert(PEOPLE, by="test", now=datetime.now(UTC))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_an_unsigned_open_with_no_key_configured_is_refused_and_nothing_unlocks(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config, settings = write_site(tmp_path, broker.url)
    seed(settings.gateway.state_dir)
    # An empty environment override must not switch signing off: requests are refused, not accepted.
    async with (
        SimulatedSite(settings) as site,
        running(config, env={"LOCKERGW_MQTT__HMAC_KEY_FILE": ""}) as gw,
        Capture(broker.url, f"{BASE}/#", signing_key=None) as capture,
    ):
        await devices_online_all(gw)
        await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "online")
        assert any("no mqtt.hmac_key_file" in line for line in gw.lines)
        refused = await capture.request(BASE, "lockers/open", {"locker": "A-01", "operator": "x", "reason": "y"})
        assert refused["status"] == "error" and "signing is required" in refused["error"]
        upsert = {"credentials": [{"id": "X-1", "uid": "0A0B0C0D0E", "holder": "me", "role": "site_master"}]}
        assert (await capture.request(BASE, "credentials/upsert", upsert))["status"] == "error"
        assert (await capture.request(BASE, "health_check", {}))["status"] == "ok"
        await site.tap("bank-a", "3C00CE754C")  # the gateway goes on deciding taps
        await gw.wait_for("access.granted", locker="A-03")
        assert gw.find("access.granted", locker="A-01") is None
        assert [f for f in site.frames_received("board-a") if len(f) >= 3 and f[2] == 0x31 and f[3] == 1] == []
    with Store.open(settings.gateway.state_dir) as store:
        assert store.get("X-1") is None


async def test_a_second_gateway_on_the_same_state_dir_exits_2_naming_the_pid(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await devices_online_all(gw)
        assert gw.process is not None
        second = await Daemon(config).start()
        assert second.process is not None
        async with asyncio.timeout(30):
            code = await second.process.wait()
            await second.stop()
        assert code == 2
        assert any(f"pid {gw.process.pid}" in line for line in second.lines), second.lines
        assert not any("Traceback" in line for line in second.lines)
        assert (settings.gateway.state_dir / "control.sock").exists()  # the first one's socket is untouched
        since = len(gw.events)
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", since=since, locker="A-03")
        assert await gw.stop() == 0
    with Journal.open(settings.gateway.state_dir, site="test-site", gateway="gw-e2e", boot_id="check") as journal:
        assert journal.verify() is None
        assert sum(1 for e in journal.read(1, 10_000) if e["kind"] == "gateway.started") == 1


async def test_guesses_interleaved_with_a_good_card_lock_the_reader_and_an_emergency_card_is_still_decided(
    tmp_path: Path,
) -> None:
    config, settings = write_site(tmp_path, repeat_gap=0.1)  # lockout_after = 3; own card tapped again soon
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await devices_online_all(gw)
        for guess in ("0000000001", "0000000002", "0000000003"):
            since = len(gw.events)
            await site.tap("bank-a", guess)
            await gw.wait_for("access.denied", since=since, reason="unknown_credential")
            since = len(gw.events)
            await site.tap("bank-a", "3C00CE754C")  # one's own card between guesses
            await gw.wait_until(lambda s=since: any(e["kind"].startswith("access.") for e in gw.events[s:]))
        await gw.wait_for("reader.lockout", reader="bank-a")
        # The good card tapped after the third guess already met the lockout.
        assert gw.find("access.denied", reason="reader_locked_out")["credential"]["id"] == "C-1"  # type: ignore[index]
        since = len(gw.events)
        await site.tap("bank-a", "62E3086CED")  # an emergency card is decided by the other rules
        pending = await gw.wait_for("override.pending", since=since)
        assert pending["reader"] == "bank-a"


async def test_a_short_card_number_does_not_open_for_a_longer_tag_but_a_printed_fob_form_does(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await devices_online_all(gw)
        since = len(gw.events)
        await site.tap("bank-a", "00115A0144")  # an EM4100 tag ending in W-1's Wiegand-26 number
        denied = await gw.wait_for("access.denied", since=since)
        assert denied["reason"] == "unknown_credential" and denied["credential"]["id"] is None
        since = len(gw.events)
        await site.tap("bank-a", "7700ABCDEF")  # the fob whose printed number is 0011259375
        granted = await gw.wait_for("access.granted", since=since, locker="A-01")
        assert granted["credential"]["id"] == "P-1"


async def test_state_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path)
    state_dir = settings.gateway.state_dir
    umask = os.umask(0o022)
    try:
        cli = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "credentials", "add", "--config", str(config), "--id", "C-9",
             "--uid", "0A0B0C0D0E", "--holder", "h", "--role", "user", "--scope", "A-01"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert mode(state_dir) == 0o700
        os.chmod(state_dir, 0o755)  # made looser by hand: the daemon tightens it
        async with SimulatedSite(settings), running(config) as gw:
            await devices_online_all(gw)
            assert any("tightened to 700" in line for line in gw.lines)
    finally:
        os.umask(umask)
    assert mode(state_dir) == 0o700
    private = [p for p in state_dir.iterdir() if p.name != "gateway.lock" and p.suffix != ".sock"]
    assert {p.name for p in private} >= {"credentials.db", "journal.db", "site.key"}
    assert {p.name: mode(p) for p in private} == {p.name: 0o600 for p in private}


async def test_a_journal_that_cannot_commit_is_visible_and_recovers_without_a_restart(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config, settings = write_site(tmp_path, broker.url, repeat_gap=0.1)
    seed(settings.gateway.state_dir)
    async with (
        SimulatedSite(settings) as site,
        running(config) as gw,
        Capture(broker.url, f"{BASE}/#") as capture,
    ):
        await devices_online_all(gw)
        await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json().get("journal") == "ok")
        assert gw.process is not None
        pid = gw.process.pid
        unlocks_before = len([f for f in site.frames_received("board-a") if len(f) >= 3 and f[2] == 0x31])
        # The disk refuses every write (a file size limit of 1 byte: each write fails with EFBIG).
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        try:
            since = len(gw.events)
            for _ in range(2):
                await site.tap("bank-a", "3C00CE754C")
                await asyncio.sleep(0)  # taps are refused: nothing to wait for but the health below
            health = await capture.request(BASE, "health_check", {})
            while health["data"]["journal"]["status"] != "failing":
                health = await capture.request(BASE, "health_check", {})
            assert health["data"]["status"] == "degraded" and health["data"]["journal"]["since"]
            try:
                state = await capture.wait_for(
                    lambda m: m.topic == f"{BASE}/state" and m.json().get("journal") == "failing"
                )
            except TimeoutError:
                raise AssertionError("\n".join(gw.lines[-30:])) from None
            assert state.json()["journal_failing_since"]
            await gw.wait_until(lambda: sum("journal cannot commit" in line for line in gw.lines) >= 1)
            await site.tap("bank-a", "3C00CE754C")
            await capture.request(BASE, "health_check", {})
            assert gw.find("access.granted", since=since) is None
            # Requests that cannot be committed get a plain error naming the cause.
            opened = await capture.request(BASE, "lockers/open", {"locker": "B-01", "operator": "op", "reason": "r"})
            assert opened["status"] == "error" and "journal cannot commit" in opened["error"], opened
            upsert = {"credentials": [{"id": "N-1", "uid": "0A0B0C0D0E", "holder": "h", "role": "user"}]}
            refused = await capture.request(BASE, "credentials/upsert", upsert)
            assert refused["status"] == "error" and "cannot commit" in refused["error"], refused
            assert "internal error" not in refused["error"]
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        record = await gw.wait_for("journal.unavailable", since=since)
        assert record["refused_taps"] >= 1 and record["unavailable_from"] <= record["unavailable_until"]
        errors = [line for line in gw.lines if '"level": "error"' in line]
        assert len(errors) == 1 and "journal cannot commit" in errors[0], errors  # one ERROR line per episode
        assert not any("Traceback" in line for line in gw.lines)
        unlocks = [f for f in site.frames_received("board-a") if len(f) >= 3 and f[2] == 0x31]
        assert len(unlocks) == unlocks_before  # nothing opened while nothing could be journaled
        await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json().get("journal") == "ok")
        since = len(gw.events)
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", since=since, locker="A-03")
        assert (await capture.request(BASE, "health_check", {}))["data"]["journal"]["status"] == "ok"
