"""The daemon's control socket: enrolment hands over exactly one card, and only while someone waits."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from gateway.control import ControlServer, enroll_via_daemon


async def test_enrolment_gets_the_next_card_and_only_that_one(tmp_path: Path) -> None:
    async with ControlServer(tmp_path, lambda: {"desk"}) as control:
        assert stat.S_IMODE(control.path.stat().st_mode) == 0o600
        asking = asyncio.ensure_future(enroll_via_daemon(tmp_path, "desk", 10))
        async with asyncio.timeout(5):
            while not control.take_card("desk", "3C00CE754C"):
                await asyncio.sleep(0.01)  # until the request has arrived
        assert await asyncio.wait_for(asking, 5) == "uid 3C00CE754C"
        assert control.take_card("desk", "14008EC793") is False  # later taps are decided as usual


async def test_an_abandoned_enrolment_does_not_swallow_the_next_tap(tmp_path: Path) -> None:
    async with ControlServer(tmp_path, lambda: {"desk"}) as control:
        _reader, writer = await asyncio.open_unix_connection(str(control.path))
        writer.write(b"enroll desk 600\n")
        await writer.drain()
        async with asyncio.timeout(5):
            while "desk" not in control._waiting:
                await asyncio.sleep(0.01)
        writer.close()  # the operator pressed Ctrl-C
        async with asyncio.timeout(5):
            while "desk" in control._waiting:
                await asyncio.sleep(0.01)
        assert control.take_card("desk", "3C00CE754C") is False


async def test_bad_requests_and_no_gateway(tmp_path: Path) -> None:
    assert await enroll_via_daemon(tmp_path, "desk", 1) is None  # nobody listening: the CLI reads itself
    async with ControlServer(tmp_path, lambda: {"desk"}):
        assert await enroll_via_daemon(tmp_path, "nope", 1) == "error no reader 'nope' on this gateway"
        assert await enroll_via_daemon(tmp_path, "desk", 1) == "error no card within 1 s"
