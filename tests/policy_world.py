"""A small site for the policy tests: a bank of assigned lockers, a bank of shared ones, door readers.

bank-a   → A-01 A-02 A-03      (assigned, section A, department sports; A-03 out of service)
door-a01 → A-01                door-a03 → A-03
door-k01 → K-01                (a keyed locker: no board)
bank-s   → S-10 S-9 S-2        (shared, section S, department leisure; lowest-numbered is S-2)
door-b01 → B-01                (assigned, section B, department science)
lobby    → (no lockers)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.model import Credential, KeypadEntry, Locker, LockerMode, Role, Service, Status, Tap
from gateway.policy import Decision, PolicySettings, ReaderState, Snapshot, decide, with_keypad
from gateway.uid import CredentialIndex

LONDON = ZoneInfo("Europe/London")
#: A Wednesday, 10:00 in London (BST, UTC+1).
NOW = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)


def _locker(ident: str, board: str | None, lock: int | None, section: str, department: str, **kw: object) -> Locker:
    return Locker(id=ident, board=board, lock=lock, section=section, department=department, **kw)  # type: ignore[arg-type]


LOCKERS: dict[str, Locker] = {
    "A-01": _locker("A-01", "board-a", 1, "A", "sports"),
    "A-02": _locker("A-02", "board-a", 2, "A", "sports"),
    "A-03": _locker("A-03", "board-a", 3, "A", "sports", service=Service.OUT_OF_SERVICE),
    "K-01": _locker("K-01", None, None, "A", "sports"),
    "S-10": _locker("S-10", "board-s", 10, "S", "leisure", mode=LockerMode.SHARED),
    "S-9": _locker("S-9", "board-s", 9, "S", "leisure", mode=LockerMode.SHARED),
    "S-2": _locker("S-2", "board-s", 2, "S", "leisure", mode=LockerMode.SHARED),
    "B-01": _locker("B-01", "board-b", 1, "B", "science"),
}

READERS: dict[str, tuple[str, ...]] = {
    "bank-a": ("A-01", "A-02", "A-03"),
    "door-a01": ("A-01",),
    "door-a03": ("A-03",),
    "door-k01": ("K-01",),
    "bank-s": ("S-10", "S-9", "S-2"),
    "door-b01": ("B-01",),
    "lobby": (),
}


def credential(
    ident: str, role: Role = Role.USER, scope: Iterable[str] = (), *, holder: str | None = None, **kw: object
) -> Credential:
    """A credential whose uid is derived from its id, so a test can tap it with `tap(cred, reader)`."""
    uid = kw.pop("uid", None) or hashlib.sha256(ident.encode()).hexdigest()[:10].upper()
    return Credential(id=ident, uid=str(uid), holder=holder or f"h-{ident}", role=role, scope=tuple(scope), **kw)  # type: ignore[arg-type]


def snapshot(
    credentials: Iterable[Credential] = (),
    *,
    lockers: Mapping[str, Locker] | None = None,
    settings: PolicySettings | None = None,
    states: Mapping[str, ReaderState] | None = None,
    occupants: Mapping[str, str] | None = None,
    service: Mapping[str, Service] | None = None,
) -> Snapshot:
    world = dict(lockers if lockers is not None else LOCKERS)
    for locker_id, occupant in (occupants or {}).items():
        world[locker_id] = replace(world[locker_id], occupant=occupant)
    for locker_id, state in (service or {}).items():
        world[locker_id] = replace(world[locker_id], service=state)
    return Snapshot(
        credentials=CredentialIndex((c.uid, c) for c in credentials),
        lockers=world,
        readers=READERS,
        settings=settings or PolicySettings(),
        timezone=LONDON,
        reader_states=dict(states or {}),
    )


def tap(cred: Credential | str, reader: str, at: datetime = NOW) -> Tap:
    return Tap(reader=reader, uid=cred if isinstance(cred, str) else cred.uid, at=at)


def apply(snap: Snapshot, decision: Decision) -> Snapshot:
    """What the daemon does with a decision: keep the reader's new state and the shared allocations."""
    lockers = dict(snap.lockers)
    for locker_id, occupant in decision.allocations:
        lockers[locker_id] = replace(lockers[locker_id], occupant=occupant)
    states = {**snap.reader_states, decision.reader: decision.reader_state}
    return replace(snap, lockers=lockers, reader_states=states)


def keypad(snap: Snapshot, reader: str, digits: str, at: datetime = NOW) -> Snapshot:
    state = snap.reader_states.get(reader, ReaderState())
    entry = KeypadEntry(reader=reader, digits=digits, at=at)
    return replace(snap, reader_states={**snap.reader_states, reader: with_keypad(state, entry)})


def run(snap: Snapshot, cred: Credential | str, reader: str, at: datetime = NOW) -> tuple[Decision, Snapshot]:
    """Decide a tap at `at` and apply it, as the daemon would."""
    decision = decide(snap, tap(cred, reader, at), at)
    return decision, apply(snap, decision)


INACTIVE_STATUSES = tuple(status for status in Status if status is not Status.ACTIVE)
