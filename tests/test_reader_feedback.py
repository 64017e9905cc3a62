"""Reader feedback: what the person at the reader is shown after each decision.

End to end through `lockergw run` in a subprocess: an OSDP reader simulated by libosdp's
PeripheralDevice, whose LED and buzzer commands are observed at the PD, and a serial reader whose
configured buzzer/LED line bytes are observed on its pty.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import osdp
import pytest
from gateway_world import running, write_site
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Feedback, Signal
from drivers.osdp_card import feedback_commands
from gateway.config import ConfigError
from gateway.feedback import tap_feedback
from gateway.policy import PolicySettings, ReaderState
from gateway.store import Store
from simulators.control import format_status
from simulators.osdp import SimulatedOsdp, describe_buzzer, describe_led
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(90)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GREEN, RED, AMBER = osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red, osdp.CommandLEDColor.Amber

OSDP_BANK = """
[[readers]]
id = "keypad-a"
driver = "osdp"
port = "{root}/dev/keypad-a"
lockers = ["A-01", "A-03"]
"""

SERIAL_WITH_FEEDBACK = """
[[readers]]
id = "door-c"
driver = "serial-ascii"
port = "{root}/dev/door-c"
lockers = ["A-03"]
feedback = {{ granted = "\\u0007G\\r", denied = "\\u0007R\\r", locked_out = "\\u0007L\\r" }}
"""

PEOPLE = [
    {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
    {"id": "E-1", "uid": "0C607C", "holder": "nurse-1", "role": "emergency"},
]


def seed(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(state_dir) as store:
        store.upsert(PEOPLE, by="test", now=datetime.now(UTC))


# ---- pure: which signal, which commands ------------------------------------------------------------


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "reason": None, "unlock": None, **fields}


def test_each_decision_has_its_signal() -> None:
    settings = PolicySettings(two_person_window_s=30, lockout_s=120)
    idle = ReaderState()
    granted = [envelope("access.granted", unlock="sent")]
    assert tap_feedback(granted, idle, settings, NOW) == Feedback(Signal.GRANTED)
    offline = [envelope("access.granted", unlock="failed")]
    assert tap_feedback(offline, idle, settings, NOW) == Feedback(Signal.DENIED)  # nothing opened
    denied = [envelope("access.denied", reason="unknown_credential")]
    assert tap_feedback(denied, idle, settings, NOW) == Feedback(Signal.DENIED)
    pending = [envelope("override.pending", reason="awaiting_second_person")]
    assert tap_feedback(pending, idle, settings, NOW) == Feedback(Signal.PENDING, 30)
    locked = ReaderState(locked_until=NOW + timedelta(seconds=120))
    lockout = [envelope("access.denied", reason="unknown_credential"), envelope("reader.lockout")]
    assert tap_feedback(lockout, locked, settings, NOW) == Feedback(Signal.LOCKED_OUT, 120)
    during = [envelope("access.denied", reason="reader_locked_out")]
    later = NOW + timedelta(seconds=100)
    assert tap_feedback(during, locked, settings, later) == Feedback(Signal.LOCKED_OUT, 20)
    assert tap_feedback([], idle, settings, NOW) is None


@given(st.sampled_from(list(Signal)), st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_every_signal_is_one_led_and_one_buzzer_command_within_osdp_ranges(signal: Signal, hold: float) -> None:
    led, buzzer = feedback_commands(Feedback(signal, hold))
    assert led["command"] == osdp.Command.LED and buzzer["command"] == osdp.Command.Buzzer
    assert 1 <= led["timer_count"] <= 0xFF  # libosdp's binding carries one byte of the timer
    assert all(0 <= led[key] <= 255 for key in ("on_count", "off_count"))
    assert all(0 <= buzzer[key] <= 255 for key in ("on_count", "off_count", "rep_count"))


def test_the_patterns_tell_the_four_signals_apart() -> None:
    shown = {
        signal: (describe_led(led), describe_buzzer(buzzer))
        for signal in Signal
        for led, buzzer in [feedback_commands(Feedback(signal))]
    }
    assert shown[Signal.GRANTED] == ("green for 2 s", "1 beep of 0.2 s")
    assert shown[Signal.DENIED] == ("red for 2 s", "2 beeps of 0.4 s")
    assert shown[Signal.PENDING][0] == "amber blinking for 25.5 s"
    assert shown[Signal.LOCKED_OUT] == ("red blinking for 25.5 s", "3 beeps of 0.2 s")
    assert len(set(shown.values())) == len(Signal)


# ---- end to end ------------------------------------------------------------------------------------


async def next_signal(site: SimulatedSite, pd: SimulatedOsdp, seen: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LED and buzzer commands of the next signal the PD receives after `seen` commands."""
    await asyncio.wait_for(site.wait_until(lambda: len(pd.commands) >= seen + 2), 5)
    led, buzzer = list(pd.commands)[seen : seen + 2]
    assert led["command"] == osdp.Command.LED and buzzer["command"] == osdp.Command.Buzzer
    return led, buzzer


async def test_osdp_reader_shows_grant_denial_pending_and_lockout(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, extra=OSDP_BANK.format(root=tmp_path))
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="keypad-a")
        await gw.wait_for("board.online", board="board-a")
        pd = site.readers["keypad-a"]
        assert isinstance(pd, SimulatedOsdp)

        await site.tap("keypad-a", "3C00CE754C")
        granted = await gw.wait_for("access.granted", reader="keypad-a")
        assert granted["locker"] == "A-03"
        led, buzzer = await next_signal(site, pd, 0)
        assert (led["on_color"], led["off_count"], buzzer["rep_count"]) == (GREEN, 0, 1)

        await site.tap("keypad-a", "DEADBEEF01")
        await gw.wait_for("access.denied", reader="keypad-a", reason="unknown_credential")
        led, buzzer = await next_signal(site, pd, 2)
        assert (led["on_color"], led["off_count"], buzzer["rep_count"]) == (RED, 0, 2)

        await site.tap("keypad-a", "0C607C")
        await gw.wait_for("override.pending", reader="keypad-a")
        led, buzzer = await next_signal(site, pd, 4)
        assert (led["on_color"], led["off_count"] > 0, led["timer_count"]) == (AMBER, True, 255)

        mark = len(gw.events)
        await site.tap("keypad-a", "DEADBEEF02")
        await gw.wait_for("access.denied", since=mark, reader="keypad-a")
        await next_signal(site, pd, 6)  # the second denial: red again
        await site.tap("keypad-a", "DEADBEEF03")
        await gw.wait_for("reader.lockout", reader="keypad-a")
        led, buzzer = await next_signal(site, pd, 8)
        assert (led["on_color"], led["off_count"] > 0, buzzer["rep_count"]) == (RED, True, 3)
        assert led["timer_count"] == 255  # 25.5 s at a time, renewed for the 60 s of the lockout
        assert "red blinking" in site.status()["readers"]["keypad-a"]["led"]
        shown = format_status(site.status())  # what `lockergw sim status` prints
        assert "led red blinking for 25.5 s, buzzer 3 beeps of 0.2 s" in shown


async def test_a_serial_reader_gets_its_configured_feedback_line(tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, extra=SERIAL_WITH_FEEDBACK.format(root=tmp_path))
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="door-c")
        await gw.wait_for("board.online", board="board-a")  # else a grant opens nothing: a red signal
        reader = site.readers["door-c"]
        await site.tap("door-c", "3C00CE754C")
        await gw.wait_for("access.granted", reader="door-c")
        await asyncio.wait_for(site.wait_until(lambda: reader.signals == ["granted"]), 5)
        await site.tap("door-c", "DEADBEEF01")
        await gw.wait_for("access.denied", reader="door-c")
        await asyncio.wait_for(site.wait_until(lambda: reader.signals == ["granted", "denied"]), 5)
        assert site.status()["readers"]["door-c"]["signal"] == "denied"
        assert "last signal denied" in format_status(site.status())


async def test_an_osdp_reader_can_be_told_to_leave_its_led_and_buzzer_alone(tmp_path: Path) -> None:
    extra = OSDP_BANK.format(root=tmp_path) + "osdp_feedback = false\n"
    config, settings = write_site(tmp_path, extra=extra)
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await gw.wait_for("reader.online", reader="keypad-a")
        await gw.wait_for("board.online", board="board-a")
        pd = site.readers["keypad-a"]
        await site.tap("keypad-a", "3C00CE754C")
        granted = await gw.wait_for("access.granted", reader="keypad-a")
        assert granted["unlock"] == "sent"
        await site.tap("keypad-a", "DEADBEEF01")  # a later decision: had the first sent anything, it is here by now
        await gw.wait_for("access.denied", reader="keypad-a")
    assert pd.signal_count == 0


def test_a_feedback_line_on_a_reader_that_cannot_take_one_is_a_config_fault(tmp_path: Path) -> None:
    extra = OSDP_BANK.format(root=tmp_path) + 'feedback = { granted = "G" }\n'
    with pytest.raises(ConfigError) as caught:
        write_site(tmp_path, extra=extra)
    assert caught.value.faults == [
        "gateway.toml: readers[2].feedback: only rdm6300 and serial-ascii readers take a feedback line "
        "(OSDP readers get LED and buzzer commands: see osdp_feedback)"
    ]
    bad_bytes = SERIAL_WITH_FEEDBACK.format(root=tmp_path).replace("\\u0007G", "\\u2603")
    with pytest.raises(ConfigError, match=r"readers\[2\]\.feedback\.granted: at most 64 bytes"):
        write_site(tmp_path, extra=bad_bytes)
