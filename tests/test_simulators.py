"""The simulated site, its command language, and `lockergw sim` with its control socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import serial
from device_world import make_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.rdm6300 import Rdm6300Parser
from simulators.control import execute
from simulators.pty import SimError
from simulators.site import SimulatedSite

READERS = [
    {"id": "bank-a", "driver": "rdm6300", "port": "bank-a", "lockers": ["A-01", "A-02"]},
    {"id": "door-1", "driver": "serial-ascii", "port": "door-1", "format": "wiegand26"},
    {"id": "nfc-1", "driver": "pn532", "port": "udp:127.0.0.1:54321"},
]
BOARDS = [
    {"id": "board-a", "driver": "kerong-cu16", "port": "rs485-a", "address": 0},
    {"id": "board-a2", "driver": "kerong-cu16", "port": "rs485-a", "address": 1},
    {"id": "board-b", "driver": "kerong-cu48", "port": "rs485-b", "address": 0},
]
LOCKERS = [
    {"id": "A-01", "board": "board-a", "lock": 1},
    {"id": "A-02", "board": "board-a2", "lock": 16},
    {"id": "B-01", "board": "board-b", "lock": 48, "mode": "shared"},
    {"id": "K-01"},
]


def site_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, readers=READERS, boards=BOARDS, lockers=LOCKERS)


async def test_every_device_is_published_and_removed_on_exit(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    dev = tmp_path / "dev"
    async with SimulatedSite(settings) as site:
        published = sorted(path.name for path in dev.iterdir())
        assert published == ["bank-a", "door-1", "rs485-a", "rs485-b"]  # two boards share rs485-a
        assert all(str((dev / name).resolve()).startswith("/dev/pts/") for name in published)
        assert set(site.skipped) == {"nfc-1"}
        assert site.lockers == {"A-01": ("board-a", 1), "A-02": ("board-a2", 16), "B-01": ("board-b", 48)}
    assert list(dev.iterdir()) == []


async def test_a_stale_link_is_replaced_but_a_real_file_is_not(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "bank-a").symlink_to("/dev/pts/does-not-exist")
    async with SimulatedSite(settings):
        assert str((dev / "bank-a").resolve()).startswith("/dev/pts/")
    (dev / "rs485-b").write_text("not a port")
    with pytest.raises(SimError, match="exists and is not a symlink"):
        async with SimulatedSite(settings):
            pass
    assert sorted(path.name for path in dev.iterdir()) == ["rs485-b"]  # nothing half-started is left


async def test_the_door_state_machine(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    async with SimulatedSite(settings) as site:
        board = site.boards["board-a"]
        board.pulse(1)  # what an unlock frame does
        await asyncio.wait_for(site.wait_until(lambda: site.door_open("A-01")), 1)
        board.pulse(1)  # unlocking an open door changes nothing
        await site.close("A-01")
        assert not site.door_open("A-01")
        await site.jam("A-01")
        board.pulse(1)
        await asyncio.sleep(0.1)  # four times the time a good latch needs
        assert not site.door_open("A-01")
        await site.jam("A-01", False)
        await site.open("A-01")  # forced, no unlock
        assert site.door_open("A-01")
        assert await site.item("A-02") is True
        assert await site.item("A-02", False) is False


async def test_user_mistakes_are_one_line_sim_errors(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    async with SimulatedSite(settings) as site:
        mistakes = [
            lambda: site.tap("nobody", "3C00CE754C"),
            lambda: site.tap("bank-a", "not-a-card"),
            lambda: site.tap("bank-a", "0102030405060708"),  # longer than EM4100
            lambda: site.tap("nfc-1", "04A1B2C3"),
            lambda: site.tap("bank-a", "3C00CE754C", hold=-1),
        ]
        for mistake in mistakes:
            with pytest.raises(SimError) as caught:
                mistake()
            assert "\n" not in str(caught.value)
        for coroutine in (
            site.close("Z-99"),
            site.open("K-01"),
            site.keypad("bank-a", "12"),
            site.fault("bank-a", "x"),
        ):
            with pytest.raises(SimError):
                await coroutine


async def test_commands_answer_one_line_each(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    async with SimulatedSite(settings) as site:
        assert (await execute(site, "tap bank-a 3C00CE754C --hold 0.2")).line() == "ok card at bank-a for 0.2 s"
        assert (await execute(site, "open A-01")).line() == "ok A-01 forced open"
        assert (await execute(site, "close A-01")).line() == "ok A-01 closed"
        assert (await execute(site, "jam A-02")).ok
        assert (await execute(site, "item B-01 on")).line() == "ok B-01 item present"
        assert (await execute(site, "fault board-b silent")).ok
        assert (await execute(site, "reply-after-unlock board-a on")).ok
        assert (await execute(site, "unplug board-a2")).line().startswith("ok bus ")
        assert not (tmp_path / "dev" / "rs485-a").exists()
        assert (await execute(site, "plug board-a")).ok
        status = await execute(site, "status")
        assert status.line().startswith("ok {")
        data = json.loads(status.line()[3:])
        assert data["lockers"]["A-02"]["jammed"] is True
        assert data["boards"]["board-b"]["fault"] == "silent"
        assert data["readers"]["door-1"]["plugged"] is True
        for bad in ("frobnicate", "tap bank-a", "tap bank-a 3C00CE754C --hold soon", "close", 'tap "unclosed'):
            reply = await execute(site, bad)
            assert not reply.ok and reply.line().startswith("error ") and "\n" not in reply.line()
        assert (await execute(site, "quit")).quit


WORDS = ["tap", "close", "open", "jam", "unjam", "plug", "unplug", "fault", "item", "status", "keypad", "quit"]
ARGS = ["bank-a", "door-1", "nfc-1", "A-01", "K-01", "board-b", "on", "x", "--hold", "1e9", "nan", "3C00CE754C", "''"]
command_lines = st.one_of(
    st.text(max_size=40),
    st.builds(lambda word, args: " ".join([word, *args]), st.sampled_from(WORDS), st.lists(st.sampled_from(ARGS))),
)


def test_no_command_line_raises(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    site = SimulatedSite(site_settings(tmp_path))
    loop.run_until_complete(site.__aenter__())
    try:

        @settings(max_examples=200, deadline=None)
        @given(command_lines)
        def check(line: str) -> None:
            reply = loop.run_until_complete(execute(site, line))
            assert reply.ok or (reply.text and "\n" not in reply.line())

        check()
    finally:
        loop.run_until_complete(site.__aexit__(None, None, None))
        loop.run_until_complete(asyncio.sleep(0))  # let cancelled taps finish
        loop.close()


async def test_the_rdm6300_simulator_repeats_frames_every_65_ms(tmp_path: Path) -> None:
    settings = site_settings(tmp_path)
    async with SimulatedSite(settings) as site:

        def read_for(seconds: float) -> bytes:
            with serial.Serial(settings.readers[0].port, 9600, timeout=seconds) as link:
                return bytes(link.read(14 * 100))

        reading = asyncio.get_running_loop().run_in_executor(None, read_for, 1.2)
        await asyncio.sleep(0.1)
        await site.tap("bank-a", "3C00CE754C", hold=0.65)
        data = await reading
    parsed = Rdm6300Parser().feed(data)
    assert parsed.bad_frames == 0
    assert 6 <= len(parsed.uids) <= 11 and set(parsed.uids) == {"3C00CE754C"}  # ~10 at 65 ms


# ---- lockergw sim --------------------------------------------------------------------------------

CONFIG = """
[gateway]
id = "gw-sim"
site = "test"
state_dir = "{tmp}/state"

[[readers]]
id = "bank-a"
driver = "rdm6300"
port = "{tmp}/dev/bank-a"
lockers = ["A-01"]

[[boards]]
id = "board-a"
driver = "kerong-cu16"
port = "{tmp}/dev/rs485"

[[lockers]]
id = "A-01"
board = "board-a"
lock = 1
"""


async def start_sim(tmp_path: Path) -> tuple[asyncio.subprocess.Process, Path]:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    sock = tmp_path / "sim.sock"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "sim",
        "--config",
        str(config),
        "--socket",
        str(sock),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None

    async def ready() -> None:
        while b"control socket:" not in await process.stdout.readline():  # type: ignore[union-attr]
            pass

    await asyncio.wait_for(ready(), 10)
    return process, sock


async def test_lockergw_sim_takes_commands_on_its_socket_with_stdin_closed(tmp_path: Path) -> None:
    process, sock = await start_sim(tmp_path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))

        async def ask(line: str) -> str:
            writer.write(line.encode() + b"\n")
            return (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")

        assert await ask("tap bank-a 3C00CE754C") == "ok card at bank-a for 0.3 s"
        assert (await ask("open A-01")) == "ok A-01 forced open"
        status = json.loads((await ask("status"))[3:])
        assert status["lockers"]["A-01"]["door"] == "open"
        assert (await ask("no such thing")).startswith("error unknown command")
        assert (await ask("help")).startswith("ok commands:")
        assert await ask("quit") == "ok bye"
        assert await asyncio.wait_for(process.wait(), 5) == 0
        writer.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert not (tmp_path / "dev" / "bank-a").exists() and not sock.exists()


async def test_lockergw_sim_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    process, sock = await start_sim(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 5) == 0
    assert not (tmp_path / "dev" / "rs485").exists() and not sock.exists()


def test_lockergw_sim_start_up_problems_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "rs485").write_text("a file in the way")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sim", "--config", str(config), "--socket", str(tmp_path / "s.sock")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "is not a symlink" in result.stderr
    assert "Traceback" not in result.stderr
