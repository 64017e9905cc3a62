"""Door monitor (SPEC §6): turns latch readings and unlocks into door events.

A plain state machine with no I/O and no clock: the daemon feeds it what boards report
(`observe`), what it sent (`unlock_sent`) and the time (`tick`), and journals the records it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

Record = dict[str, Any]


@dataclass(slots=True)
class DoorState:
    locker: str
    board: str
    unlock_ms: int
    #: True = open, False = closed, None = not known (board offline or not yet polled).
    open: bool | None = None
    opened_at: datetime | None = None
    left_open_reported: bool = False
    last_unlock_at: datetime | None = None
    #: An unlock waiting for the latch to report open; unlock.failed if it has not by this time.
    unlock_deadline: datetime | None = None
    #: What the door was when its board went offline: a different reading afterwards is a change.
    before_outage: bool | None = None


class DoorMonitor:
    def __init__(self, left_open_after_s: float, forced_open_grace_s: float = 10.0) -> None:
        self.left_open_after = timedelta(seconds=left_open_after_s)
        self.forced_grace = timedelta(seconds=forced_open_grace_s)
        self.doors: dict[str, DoorState] = {}
        self._by_channel: dict[tuple[str, int], str] = {}
        self._changed: set[str] = set()

    def add_locker(self, locker: str, board: str, lock: int, unlock_ms: int) -> None:
        self.doors[locker] = DoorState(locker=locker, board=board, unlock_ms=unlock_ms)
        self._by_channel[(board, lock)] = locker

    def door(self, locker: str) -> str:
        """ "open", "closed" or "unknown" — the retained topic's `door` field."""
        state = self.doors.get(locker)
        if state is None or state.open is None:
            return "unknown"
        return "open" if state.open else "closed"

    def take_changed(self) -> set[str]:
        """Lockers whose `door()` value changed since the last call (for the retained topics)."""
        changed, self._changed = self._changed, set()
        return changed

    def unlock_sent(self, locker: str, at: datetime) -> None:
        state = self.doors[locker]
        state.last_unlock_at = at
        if state.open:
            return  # already open: nothing to confirm
        state.unlock_deadline = at + timedelta(milliseconds=state.unlock_ms) + timedelta(seconds=1)

    def observe(self, board: str, closed: tuple[bool, ...], at: datetime) -> list[Record]:
        """A status reply from `board`: `closed[i]` is lock i+1's latch (True = closed)."""
        records: list[Record] = []
        for index, is_closed in enumerate(closed):
            locker = self._by_channel.get((board, index + 1))
            if locker is not None:
                records += self._observe_one(self.doors[locker], not is_closed, at)
        return records

    def _observe_one(self, state: DoorState, is_open: bool, at: datetime) -> list[Record]:
        previous = state.open
        if previous is None:
            # First reading after start-up or after the board was offline. Compared with what the
            # door was before an outage, a difference is a real change (a door forced while the bus
            # was cut); at start-up there is nothing to compare with, so the state is only learnt.
            previous, state.before_outage = state.before_outage, None
            self._changed.add(state.locker)
            if previous is None:
                state.open = is_open
                if is_open:
                    state.opened_at = at
                    state.left_open_reported = False
                return []
        state.open = is_open
        if previous == is_open:
            return []
        self._changed.add(state.locker)
        base = {"locker": state.locker, "board": state.board}
        if not is_open:
            state.opened_at = None
            state.left_open_reported = False
            return [{"kind": "door.closed", **base}]
        state.opened_at = at
        state.left_open_reported = False
        state.unlock_deadline = None
        records = [{"kind": "door.opened", **base}]
        recent_unlock = state.last_unlock_at is not None and at - state.last_unlock_at <= self.forced_grace
        if not recent_unlock:
            records.append({"kind": "door.forced_open", **base})
        return records

    def board_offline(self, board: str) -> None:
        """Door states of an offline board are unknown until it answers again."""
        for state in self.doors.values():
            if state.board == board:
                if state.open is not None:
                    state.before_outage = state.open
                state.open = None

    def tick(self, now: datetime) -> list[Record]:
        records: list[Record] = []
        for state in self.doors.values():
            base = {"locker": state.locker, "board": state.board}
            if state.unlock_deadline is not None and now >= state.unlock_deadline:
                state.unlock_deadline = None
                records.append({"kind": "unlock.failed", "reason": "latch_did_not_open", **base})
            if (
                state.open
                and state.opened_at is not None
                and not state.left_open_reported
                and now - state.opened_at >= self.left_open_after
            ):
                state.left_open_reported = True
                records.append({"kind": "door.left_open", **base})
        return records
