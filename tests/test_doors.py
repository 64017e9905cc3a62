"""Door monitor (SPEC §6): the events a facilities team sees from latch readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.doors import DoorMonitor

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def monitor() -> DoorMonitor:
    doors = DoorMonitor(left_open_after_s=120, forced_open_grace_s=10)
    doors.add_locker("A-01", "board-a", 1, unlock_ms=550)
    doors.add_locker("A-02", "board-a", 2, unlock_ms=550)
    doors.observe("board-a", (True, True), at(0))  # learn: both closed
    return doors


def kinds(records: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(r["kind"], r["locker"]) for r in records]


def test_first_reading_is_learnt_silently() -> None:
    doors = DoorMonitor(120)
    doors.add_locker("A-01", "board-a", 1, 550)
    assert doors.door("A-01") == "unknown"
    assert doors.observe("board-a", (True,), at(0)) == []
    assert doors.door("A-01") == "closed"


def test_unlock_then_open_then_close() -> None:
    doors = monitor()
    doors.unlock_sent("A-01", at(1))
    assert kinds(doors.observe("board-a", (False, True), at(1.3))) == [("door.opened", "A-01")]
    assert doors.door("A-01") == "open"
    assert doors.tick(at(5)) == []  # confirmed: no unlock.failed
    assert kinds(doors.observe("board-a", (True, True), at(20))) == [("door.closed", "A-01")]


def test_open_without_unlock_is_forced() -> None:
    doors = monitor()
    assert kinds(doors.observe("board-a", (True, False), at(3))) == [
        ("door.opened", "A-02"),
        ("door.forced_open", "A-02"),
    ]


def test_jammed_door_opening_late_counts_as_forced() -> None:
    doors = monitor()
    doors.unlock_sent("A-01", at(0))
    assert kinds(doors.tick(at(1.6))) == [("unlock.failed", "A-01")]
    assert kinds(doors.observe("board-a", (False, True), at(11))) == [
        ("door.opened", "A-01"),
        ("door.forced_open", "A-01"),
    ]


def test_unlock_failed_once_after_pulse_plus_one_second() -> None:
    doors = monitor()
    doors.unlock_sent("A-01", at(0))
    assert doors.tick(at(1.5)) == []
    assert kinds(doors.tick(at(1.56))) == [("unlock.failed", "A-01")]
    assert doors.tick(at(3)) == []


def test_left_open_once_per_opening() -> None:
    doors = monitor()
    doors.unlock_sent("A-01", at(0))
    doors.observe("board-a", (False, True), at(0.2))
    assert doors.tick(at(100)) == []
    assert kinds(doors.tick(at(120.3))) == [("door.left_open", "A-01")]
    assert doors.tick(at(500)) == []
    doors.observe("board-a", (True, True), at(600))
    doors.unlock_sent("A-01", at(700))
    doors.observe("board-a", (False, True), at(700.1))
    assert kinds(doors.tick(at(821))) == [("door.left_open", "A-01")]


def test_offline_board_makes_doors_unknown_and_relearns_quietly() -> None:
    doors = monitor()
    doors.board_offline("board-a")
    assert doors.door("A-01") == "unknown"
    assert doors.observe("board-a", (True, True), at(30)) == []
    assert doors.door("A-01") == "closed"


def test_door_forced_while_the_board_was_offline_is_reported_when_it_answers_again() -> None:
    doors = monitor()
    doors.take_changed()
    doors.board_offline("board-a")
    records = doors.observe("board-a", (False, True), at(40))
    assert kinds(records) == [("door.opened", "A-01"), ("door.forced_open", "A-01")]
    assert doors.take_changed() == {"A-01", "A-02"}  # both retained states leave "unknown"


def test_door_closed_during_an_outage_is_reported() -> None:
    doors = monitor()
    doors.unlock_sent("A-01", at(0))
    doors.observe("board-a", (False, True), at(0.3))
    doors.board_offline("board-a")
    assert kinds(doors.observe("board-a", (True, True), at(50))) == [("door.closed", "A-01")]


def test_changed_lists_only_lockers_whose_door_moved() -> None:
    doors = monitor()
    doors.take_changed()
    doors.observe("board-a", (True, True), at(1))
    assert doors.take_changed() == set()
    doors.unlock_sent("A-02", at(2))
    doors.observe("board-a", (True, False), at(2.1))
    assert doors.take_changed() == {"A-02"}
