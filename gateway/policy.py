"""The access rulebook (SPEC §5) as a pure function: `decide(snapshot, tap, now) -> Decision`.

No I/O, no clock, no globals: everything the rules need is in the `Snapshot`, and everything the
rules change (lockout counters, pending two-person overrides, shared allocations) comes back in the
`Decision` for the caller to apply. The same tap in the same snapshot always gives the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from gateway.model import Credential, KeypadEntry, Locker, PolicyEvent, Tap


@dataclass(frozen=True, slots=True)
class PolicySettings:
    lockout_after: int = 5
    lockout_window_s: float = 60
    lockout_s: float = 120
    emergency_two_person: bool = True
    two_person_window_s: float = 30
    keypad_window_s: float = 10


@dataclass(frozen=True, slots=True)
class PendingOverride:
    """The first tap of a two-person emergency opening, waiting for a second person."""

    credential: Credential
    at: datetime
    target: str | None = None


@dataclass(frozen=True, slots=True)
class ReaderState:
    """What the rules remember about one reader between taps."""

    denials: tuple[datetime, ...] = ()
    locked_until: datetime | None = None
    pending: PendingOverride | None = None
    keypad: KeypadEntry | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything `decide` may look at.

    `credentials` maps canonical uid → credential (one dict lookup per tap, whatever its size).
    `lockers` maps locker id → locker, including service state and shared occupant.
    `readers` maps reader id → the locker ids it serves, in configuration order.
    """

    credentials: Mapping[str, Credential]
    lockers: Mapping[str, Locker]
    readers: Mapping[str, tuple[str, ...]]
    settings: PolicySettings
    timezone: tzinfo
    reader_states: Mapping[str, ReaderState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one tap.

    `kind` is the main event: "access.granted", "access.denied" or "override.pending".
    `lockers` are the lockers to open (grant) — one `access.granted` event is journaled per locker;
    for a denial they are the lockers concerned, possibly empty.
    `events` are further events to journal with it (credential.lost_presented, reader.lockout,
    locker.allocated, locker.released), in order.
    `reader_state` replaces the reader's state; `allocations` are (locker id, new occupant or None).
    """

    kind: str
    reason: str
    reader: str
    credential: Credential | None
    lockers: tuple[str, ...] = ()
    override: bool = False
    authorizers: tuple[Credential, ...] = ()
    events: tuple[PolicyEvent, ...] = ()
    reader_state: ReaderState = ReaderState()
    allocations: tuple[tuple[str, str | None], ...] = ()

    @property
    def granted(self) -> bool:
        return self.kind == "access.granted"


def decide(snapshot: Snapshot, tap: Tap, now: datetime) -> Decision:
    """Apply SPEC §5 in order; the first rule that applies gives the result."""
    raise NotImplementedError


def with_keypad(state: ReaderState, entry: KeypadEntry) -> ReaderState:
    """The reader's state after a keypad entry (the target for a master opening at a bank reader)."""
    raise NotImplementedError
