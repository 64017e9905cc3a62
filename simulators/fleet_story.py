"""What happens at one simulated bank of lockers: plausible taps and doors, one journal record at a time.

Pure and seeded (no clock, no I/O): `BankStory.next_record()` returns the next record the gateway
journals, in the shape `gateway.journal.Journal.append` takes (`kind` plus envelope fields). People
tap at two readers — `bank-a` for their assigned lockers, `bank-s` for the shared ones — and are
granted or denied as SPEC §5 would decide; a grant is followed a few events later by the door
opening and closing again (now and then `door.left_open` first); shared lockers are allocated at one
tap and released at the tap that reopens them. Unknown cards are denied.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]

BOARD = "board-a"
ASSIGNED_READER = "bank-a"
SHARED_READER = "bank-s"
ASSIGNED_LOCKERS = tuple(f"A-{n:02d}" for n in range(1, 13))
SHARED_LOCKERS = tuple(f"S-{n:02d}" for n in range(1, 5))
#: Share of taps made with a card the gateway does not know.
UNKNOWN_CARD_RATE = 0.08
#: Share of openings that stay open long enough for `door.left_open`.
LEFT_OPEN_RATE = 0.03
#: A door opens this many events (of this gateway) after its grant, at most; and closes as late again.
DOOR_DELAY_EVENTS = 4


@dataclass(frozen=True, slots=True)
class Person:
    """Someone who taps here: the envelope's `credential` object (never a raw uid) and their locker."""

    credential: dict[str, Any]
    locker: str | None  # an assigned locker at this bank; None for a user of the shared lockers


@dataclass(slots=True)
class LockerNow:
    door: str = "closed"
    service: str = "in_service"
    occupant: str | None = None  # the credential id holding a shared locker


@dataclass(slots=True)
class _Later:
    due: int
    record: Record


@dataclass(slots=True)
class BankStory:
    """The lockers of one gateway and the people using them. `people()` is asked at every new tap, so a
    change of the credential set (pushed by central) shows in the very next events."""

    rng: random.Random
    people: Callable[[], Sequence[Person]]
    unknown_uid_hash: Callable[[], str]
    lockers: dict[str, LockerNow] = field(
        default_factory=lambda: {locker: LockerNow() for locker in (*ASSIGNED_LOCKERS, *SHARED_LOCKERS)}
    )
    #: Lockers whose retained `lockers/{id}` state changed since `take_changed_lockers()`.
    changed: set[str] = field(default_factory=set)
    _step: int = 0
    _ready: list[Record] = field(default_factory=list)
    _later: list[_Later] = field(default_factory=list)
    _opening: set[str] = field(default_factory=set)

    def next_record(self) -> Record:
        self._step += 1
        if not self._ready:
            due = [later for later in self._later if later.due <= self._step]
            if due:
                first = min(due, key=lambda later: later.due)
                self._later.remove(first)
                self._ready.append(first.record)
            else:
                self._ready.extend(self._tap())
        record = self._ready.pop(0)
        self._apply(record)
        return record

    def take_changed_lockers(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    # ---- a tap and what follows it -----------------------------------------------------------

    def _tap(self) -> list[Record]:
        people = self.people()
        if not people or self.rng.random() < UNKNOWN_CARD_RATE:
            reader = self.rng.choice((ASSIGNED_READER, SHARED_READER))
            credential = {"id": None, "holder": None, "role": None, "uid_hash": self.unknown_uid_hash()}
            return [_decision("access.denied", reader, None, credential, "unknown_credential")]
        person = self.rng.choice(people)
        if person.locker is not None:
            if self.lockers[person.locker].service != "in_service":
                return [
                    _decision(
                        "access.denied", ASSIGNED_READER, person.locker, person.credential, "locker_out_of_service"
                    )
                ]
            grant = _decision("access.granted", ASSIGNED_READER, person.locker, person.credential, "assigned_locker")
            self.open_door_later(person.locker)
            return [grant]
        holder_id = person.credential.get("id")
        held = [locker for locker in SHARED_LOCKERS if self.lockers[locker].occupant == holder_id]
        if held:
            locker = held[0]
            grant = _decision("access.granted", SHARED_READER, locker, person.credential, "shared_reopen")
            self.open_door_later(locker)
            return [grant, _side("locker.released", SHARED_READER, locker, person.credential)]
        free = [
            locker
            for locker in SHARED_LOCKERS
            if self.lockers[locker].occupant is None and self.lockers[locker].service == "in_service"
        ]
        if not free:
            return [_decision("access.denied", SHARED_READER, None, person.credential, "no_free_locker")]
        locker = free[0]
        grant = _decision("access.granted", SHARED_READER, locker, person.credential, "shared_allocated")
        self.open_door_later(locker)
        return [grant, _side("locker.allocated", SHARED_READER, locker, person.credential)]

    def open_door_later(self, locker: str) -> None:
        """The person opens the door a little later and shuts it again (unless it is open already)."""
        if self.lockers[locker].door == "open" or locker in self._opening:
            return
        self._opening.add(locker)
        opens = self._step + self.rng.randint(1, DOOR_DELAY_EVENTS)
        closes = opens + self.rng.randint(1, DOOR_DELAY_EVENTS)
        door = {"locker": locker, "board": BOARD}
        self._later.append(_Later(opens, {"kind": "door.opened", **door}))
        if self.rng.random() < LEFT_OPEN_RATE:
            self._later.append(_Later(closes, {"kind": "door.left_open", **door}))
            closes += DOOR_DELAY_EVENTS
        self._later.append(_Later(closes, {"kind": "door.closed", **door}))

    def _apply(self, record: Record) -> None:
        kind, locker = record["kind"], record.get("locker")
        if locker is None or locker not in self.lockers:
            return
        state = self.lockers[locker]
        if kind == "door.opened":
            self._opening.discard(locker)
            state.door = "open"
        elif kind == "door.closed":
            state.door = "closed"
        elif kind == "locker.allocated":
            state.occupant = record["credential"]["id"]
        elif kind == "locker.released":
            state.occupant = None
        else:
            return
        self.changed.add(locker)


def _decision(kind: str, reader: str, locker: str | None, credential: dict[str, Any], reason: str) -> Record:
    granted = kind == "access.granted"
    return {
        "kind": kind,
        "reader": reader,
        "locker": locker,
        "credential": credential,
        "reason": reason,
        "override": False,
        "unlock": "sent" if granted else None,
    }


def _side(kind: str, reader: str, locker: str, credential: dict[str, Any]) -> Record:
    return {"kind": kind, "reader": reader, "locker": locker, "credential": credential, "reason": None}
