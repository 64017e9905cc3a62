"""Every timed rule runs on a clock that never steps (SPEC §5, §6): the daemon with an injected clock
whose wall time is stepped an hour back and forward, as NTP does to a Raspberry Pi without an RTC."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers.base import BoardStatus, CardRead, Feedback, Signal
from gateway.config import Settings
from gateway.daemon import Clock, Gateway

HOUR = timedelta(hours=1)


class SteppedClock(Clock):
    """Wall time that a test steps; monotonic time that only a test advances."""

    def __init__(self) -> None:
        self.now = datetime(2026, 7, 20, 9, 0, tzinfo=UTC)
        self.mono = 1000.0
        super().__init__()

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "gateway": {"id": "gw-t", "site": "t", "state_dir": str(tmp_path / "state")},
            "policy": {"lockout_after": 2, "lockout_s": 10, "door_left_open_s": 30},
            "boards": [{"id": "b", "driver": "kerong-cu16", "port": "/dev/null"}],
            "lockers": [{"id": "A-01", "board": "b", "lock": 1}],
            "readers": [{"id": "r", "driver": "rdm6300", "port": "/dev/null", "lockers": ["A-01"]}],
        }
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    clock = SteppedClock()
    gw = Gateway(settings(tmp_path), clock=clock)
    gw._open_state()
    yield gw  # type: ignore[misc]
    assert gw._writer is not None
    gw._writer.close()
    gw.journal.close()
    gw.store.close()
    if gw._follow_store_db is not None:
        gw._follow_store_db.close()


def journaled_kinds(gw: Gateway) -> list[str]:
    """What is in the journal once the writer thread has committed what was handed to it."""
    assert gw._writer is not None
    gw._writer.drain()
    return [e["kind"] for e in gw.journal.read(1)]


def lock_out(gw: Gateway) -> None:
    for guess in ("0000000001", "0000000002"):
        gw.handle_tap(CardRead("r", guess, gw.clock.wall()))
    assert [e["kind"] for e in gw.journal.read(1)][-1] == "reader.lockout"


@pytest.mark.parametrize("step", [-HOUR, HOUR, -(56 * 365 * 24) * HOUR])  # back, forward, to 1970
async def test_a_lockout_keeps_its_length_when_the_wall_clock_steps(gateway: Gateway, step: timedelta) -> None:
    clock = gateway.clock
    assert isinstance(clock, SteppedClock)
    lock_out(gateway)
    clock.now += step
    clock.mono += 5  # half the lockout
    envelopes = gateway.handle_tap(CardRead("r", "0000000003", clock.now))
    assert envelopes[0]["reason"] == "reader_locked_out"
    clock.advance(6)  # 11 s after the lockout began, whatever the wall clock says
    envelopes = gateway.handle_tap(CardRead("r", "0000000004", clock.now))
    assert envelopes[0]["reason"] == "unknown_credential"


@pytest.mark.parametrize("step", [-HOUR, HOUR])
async def test_door_left_open_fires_after_its_real_duration_when_the_wall_clock_steps(
    gateway: Gateway, step: timedelta
) -> None:
    clock = gateway.clock
    assert isinstance(clock, SteppedClock)
    closed, items = (True,) * 16, (False,) * 16
    gateway.handle_device_event(BoardStatus("b", clock.now, closed, items))
    gateway.handle_device_event(BoardStatus("b", clock.now, (False,) + (True,) * 15, items))  # forced open
    clock.now += step
    clock.advance(20)
    gateway._periodic_checks(clock.now)
    assert "door.left_open" not in journaled_kinds(gateway)
    clock.advance(11)
    gateway._periodic_checks(clock.now)
    assert journaled_kinds(gateway)[-1] == "door.left_open"


class Recorder:
    """A reader that keeps every signal it is given."""

    def __init__(self) -> None:
        self.given: list[Feedback] = []

    def feedback(self, feedback: Feedback) -> None:
        self.given.append(feedback)


@pytest.mark.parametrize("step", [-HOUR, HOUR])
async def test_the_lockout_signal_lasts_the_rest_of_the_real_lockout_when_the_wall_clock_steps(
    gateway: Gateway, step: timedelta
) -> None:
    clock = gateway.clock
    assert isinstance(clock, SteppedClock)
    reader = Recorder()
    gateway.readers["r"] = reader  # type: ignore[assignment]
    lock_out(gateway)
    assert reader.given[-1] == Feedback(Signal.LOCKED_OUT, 10)
    clock.now += step
    clock.mono += 4
    gateway.handle_tap(CardRead("r", "0000000003", clock.now))
    assert reader.given[-1] == Feedback(Signal.LOCKED_OUT, 6)  # not an hour more or an hour less


async def test_a_tap_the_journal_cannot_take_is_shown_red(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = Recorder()
    gateway.readers["r"] = reader  # type: ignore[assignment]

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(gateway.journal, "append_groups", full)
    assert gateway.handle_tap(CardRead("r", "0000000001", gateway.clock.wall())) == []
    assert reader.given == [Feedback(Signal.DENIED)]
