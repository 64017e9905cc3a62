"""The tap-to-door path end to end: `lockergw run` in a subprocess, the project's simulators as its
readers and lock board over real pseudo-terminals, events read from the daemon's own log lines."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gateway_world import running, write_site

from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(90)

PEOPLE = [
    {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
    {"id": "C-2", "uid": "14008EC793", "holder": "ben", "role": "user", "scope": ["A-01"]},
    {"id": "C-3", "uid": "5A0144", "holder": "chloe", "role": "user", "scope": []},
]
UNLOCK_LOCK_3_BOARD_0 = bytes.fromhex("0202310338")  # PROTOCOLS.md §3a, spec example


def seed(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(state_dir) as store:
        store.upsert(PEOPLE, by="test", now=datetime.now(UTC))


def expect_frame(site: SimulatedSite, frame: bytes) -> asyncio.Future[None]:
    """Start listening for `frame` on board-a's bus now (before the action that should cause it)."""
    return asyncio.ensure_future(site.wait_for_frame("board-a", frame))


def unlock_frames(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if len(f) >= 3 and f[2] == 0x31]


@pytest.fixture
def site_files(tmp_path: Path) -> tuple[Path, object]:
    config, settings = write_site(tmp_path)
    seed(settings.gateway.state_dir)
    return config, settings


async def devices_online(gw: object) -> None:
    from gateway_world import Daemon

    assert isinstance(gw, Daemon)
    await gw.wait_for("board.online", board="board-a")
    await gw.wait_for("reader.online", reader="bank-a")
    await gw.wait_for("reader.online", reader="door-b")


async def test_valid_tap_unlocks_the_right_lock_and_doors_report(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        unlock = expect_frame(site, UNLOCK_LOCK_3_BOARD_0)
        await site.tap("bank-a", "3C00CE754C")
        granted = await gw.wait_for("access.granted", locker="A-03")
        assert granted["reason"] == "assigned_locker"
        assert granted["unlock"] == "sent"
        assert granted["credential"]["id"] == "C-1" and "uid" not in granted["credential"]
        await asyncio.wait_for(unlock, 5)
        opened = await gw.wait_for("door.opened", locker="A-03")
        assert opened["seq"] > granted["seq"]
        assert gw.find("door.forced_open", locker="A-03") is None
        await site.close("A-03")
        await gw.wait_for("door.closed", locker="A-03")
    assert not any("3C00CE754C" in line for line in gw.lines), "raw card number in the log"


async def test_denied_tap_sends_no_unlock(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await site.tap("bank-a", "DEADBEEF01")
        denied = await gw.wait_for("access.denied", reader="bank-a")
        assert denied["reason"] == "unknown_credential" and denied["unlock"] is None
        # A later grant's frame proves the bus was listened to after the denial.
        unlock = expect_frame(site, UNLOCK_LOCK_3_BOARD_0)
        await site.tap("bank-a", "3C00CE754C")
        await asyncio.wait_for(unlock, 5)
        assert unlock_frames(site.frames_received("board-a")) == [UNLOCK_LOCK_3_BOARD_0]


async def test_jammed_lock_gives_unlock_failed(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await site.jam("A-01")
        await site.tap("bank-a", "14008EC793")
        granted = await gw.wait_for("access.granted", locker="A-01")
        failed = await gw.wait_for("unlock.failed", locker="A-01")
        assert failed["seq"] > granted["seq"]
        assert gw.find("door.opened", locker="A-01") is None


async def test_unplugged_reader_comes_back_and_reads_again(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        mark = len(gw.events)
        await site.unplug("bank-a")
        await gw.wait_for("reader.offline", since=mark, reader="bank-a")
        await site.plug("bank-a")
        await gw.wait_for("reader.online", since=mark, reader="bank-a", timeout=5)
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", since=mark, locker="A-03")


async def test_garbage_raises_one_reader_fault_and_the_reader_keeps_working(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await site.fault("bank-a", "garbage")
        fault = await gw.wait_for("reader.fault", reader="bank-a")
        assert fault["bad_frames"] >= 10
        await site.fault("bank-a", "none")
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", locker="A-03")
        assert len([e for e in gw.events if e["kind"] == "reader.fault"]) == 1


async def test_shared_allocation_survives_restart_and_start_is_fail_secure(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site:  # type: ignore[arg-type]
        async with running(config) as gw:
            await devices_online(gw)
            await site.tap("door-b", "5A0144")
            granted = await gw.wait_for("access.granted", reader="door-b")
            assert (granted["locker"], granted["reason"]) == ("B-01", "shared_allocated")
            await gw.wait_for("locker.allocated", locker="B-01")
            await gw.wait_for("door.opened", locker="B-01")
            await site.close("B-01")
            await gw.wait_for("door.closed", locker="B-01")
            assert await gw.stop() == 0
            assert gw.find("gateway.stopped") is not None
        frames_before = len(unlock_frames(site.frames_received("board-a")))
        async with running(config) as gw2:
            await devices_online(gw2)
            polls = len(site.frames_received("board-a"))
            await asyncio.wait_for(site.bus_of("board-a").wait_for_frame(bytes.fromhex("0200300335")), 5)
            assert len(site.frames_received("board-a")) > polls
            assert len(unlock_frames(site.frames_received("board-a"))) == frames_before, "opened a lock by itself"
            await site.tap("door-b", "5A0144")
            reopened = await gw2.wait_for("access.granted", reader="door-b")
            assert (reopened["locker"], reopened["reason"]) == ("B-01", "shared_reopen")
            await gw2.wait_for("locker.released", locker="B-01")
            assert reopened["seq"] > granted["seq"]


async def test_sigterm_journals_stop_and_exits_zero(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings), running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await gw.stop(signal.SIGTERM, timeout=10) == 0
        assert loop.time() - started < 5
        stopped = gw.find("gateway.stopped")
        assert stopped is not None and stopped["boot_id"] == gw.events[0]["boot_id"]


async def test_cli_change_reaches_the_running_gateway(site_files: tuple[Path, object]) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await site.tap("bank-a", "62E3086CED")
        assert (await gw.wait_for("access.denied", reader="bank-a"))["reason"] == "unknown_credential"
        mark = len(gw.events)
        result = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "credentials",
                "add",
                "--config",
                str(config),
                "--id",
                "C-9",
                "--uid",
                "62E3086CED",
                "--holder",
                "dana",
                "--role",
                "user",
                "--scope",
                "A-01",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        changed = await gw.wait_for("credentials.changed", since=mark, timeout=3)
        assert "C-9" in changed.get("ids", [])
        await asyncio.sleep(0.6)  # the person steps back: a new presentation needs repeat_gap_s of silence
        await site.tap("bank-a", "62E3086CED")
        granted = await gw.wait_for("access.granted", since=mark, locker="A-01")
        assert granted["credential"]["holder"] == "dana"


async def test_grant_at_an_offline_board_is_journaled_failed_and_never_sent_later(
    site_files: tuple[Path, object],
) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await site.fault("board-a", "silent")
        await gw.wait_for("board.offline", board="board-a")
        await site.tap("door-b", "5A0144")
        granted = await gw.wait_for("access.granted", reader="door-b")
        assert (granted["reason"], granted["unlock"]) == ("shared_allocated", "failed")
        await site.tap("bank-a", "3C00CE754C")
        assert (await gw.wait_for("access.granted", locker="A-03"))["unlock"] == "failed"
        mark = len(gw.events)
        await site.fault("board-a", "none")
        await gw.wait_for("board.online", since=mark, board="board-a")
        # Nothing was queued: after the board is back, a poll goes by and no unlock follows.
        await asyncio.wait_for(site.bus_of("board-a").wait_for_frame(bytes.fromhex("0200300335")), 5)
        assert unlock_frames(site.frames_received("board-a")) == []
        # The shared locker was never allocated (nobody got into it), so the next tap allocates it now.
        assert gw.find("locker.allocated") is None
        await asyncio.sleep(0.6)  # a new presentation of the same card
        await site.tap("door-b", "5A0144")
        again = await gw.wait_for("access.granted", since=mark, reader="door-b")
        assert (again["locker"], again["reason"], again["unlock"]) == ("B-01", "shared_allocated", "sent")


async def test_master_at_an_osdp_bank_reader_opens_the_locker_named_on_its_keypad(tmp_path: Path) -> None:
    keypad_reader = f"""
[[readers]]
id = "keypad-a"
driver = "osdp"
port = "{tmp_path}/dev/keypad-a"
lockers = ["A-01", "A-03"]
"""
    config, settings = write_site(tmp_path, extra=keypad_reader)
    seed(settings.gateway.state_dir)
    with Store.open(settings.gateway.state_dir) as store:
        store.upsert(
            [{"id": "M-1", "uid": "0C607C", "holder": "ms-patel", "role": "section_master", "scope": ["A"]}],
            by="test",
            now=datetime.now(UTC),
        )
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        await gw.wait_for("reader.online", reader="keypad-a")
        await site.tap("keypad-a", "0C607C")
        refused = await gw.wait_for("access.denied", reader="keypad-a")
        assert refused["reason"] == "target_required"
        unlock = expect_frame(site, UNLOCK_LOCK_3_BOARD_0)
        await site.keypad("keypad-a", "3")
        await asyncio.sleep(0.6)  # a new presentation of the same card
        await site.tap("keypad-a", "0C607C")
        granted = await gw.wait_for("access.granted", reader="keypad-a")
        assert (granted["locker"], granted["reason"], granted["override"]) == ("A-03", "master_section", True)
        await asyncio.wait_for(unlock, 5)


async def test_enrolment_while_the_gateway_runs_takes_the_next_card_without_deciding_it(
    site_files: tuple[Path, object],
) -> None:
    config, settings = site_files
    async with SimulatedSite(settings) as site, running(config) as gw:  # type: ignore[arg-type]
        await devices_online(gw)
        enroll = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "credentials",
            "enroll",
            "--reader",
            "bank-a",
            "--timeout",
            "20",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert enroll.stderr is not None
        waiting = await asyncio.wait_for(enroll.stderr.readline(), 20)
        assert b"waiting" in waiting
        mark = len(gw.events)
        # The CLI connects right after printing; tap until it has the card (a person tries again).
        async with asyncio.timeout(20):
            while enroll.returncode is None:
                await site.tap("bank-a", "62E3086CED", hold=0.1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(enroll.wait()), 0.7)
        out, err = await enroll.communicate()
        assert enroll.returncode == 0, err
        assert out.decode().strip() == "62E3086CED"
        # Taps before the CLI was listening were decided; the one it took was not.
        denials = [e for e in gw.events[mark:] if e["kind"] == "access.denied"]
        assert gw.find("access.granted", since=mark) is None
        assert all(e["reason"] == "unknown_credential" for e in denials)
        assert any("handed to an enrolment" in line for line in gw.lines)
