"""The access rulebook (SPEC §5) as a pure function: `decide(snapshot, tap, now) -> Decision`.

No I/O, no clock, no globals: everything the rules need is in the `Snapshot`, and everything the
rules change (lockout counters, pending two-person overrides, shared allocations) comes back in the
`Decision` for the caller to apply. The same tap in the same snapshot always gives the same decision.

Two clocks come in as arguments, nothing else is read: `now`, the wall clock, for validity, schedules and
the times written into events; `timer`, a clock that never steps (the daemon's monotonic clock, shown
as an instant), for every duration — the lockout window and lockout, the two-person and keypad windows.
A wall clock stepped back an hour (a Raspberry Pi without an RTC boots in 1970 and steps when NTP
arrives) must neither stretch a 120 s lockout to an hour nor end it at once. `timer` defaults to `now`.
The reader state (denials, lockout, pending override, keypad entry) holds `timer` instants.
`tap.at` is the device's own timestamp and is not consulted. Windows are inclusive: an entry exactly
`keypad_window_s` old still counts, as does a denial exactly `lockout_window_s` old.

Choices where SPEC §5 is silent (each one fails secure):

- A keyed locker (no board) cannot be opened by the gateway. The rules treat it like an out-of-service
  locker: never in a grant's `lockers`, and a tap whose only target is keyed is denied
  `locker_out_of_service`. Keyed lockers are never allocated as shared lockers.
- A `physical_key` credential is never read by a reader; a tap that finds one is `unknown_credential`.
- A user's assigned lockers are the `assigned`-mode lockers in its scope. A shared locker is opened by
  a user only while it holds it (`occupant`, set by allocation or `lockers/assign`), whatever its scope.
- A master whose scope covers no locker of this reader, or whose keypad entry names a locker outside its
  scope, is denied `no_locker_here`; a bank-reader tap with no usable keypad entry is `target_required`.
- A schedule text that does not parse opens nothing (`outside_schedule`); the store refuses such text.
- A pending emergency override is dropped once its first credential is no longer active.
- At a bank reader the first emergency tap may come before the keypad entry: the target is then taken
  from a keypad entry made before the second tap.
- Visitor and contractor codes are `mobile` credentials. A mobile credential is bound to its scope for
  shared lockers too: it is allocated only a shared locker its scope names (a card may take any free
  one). A `single_use` credential is used up by the grant that completes its use — the opening of an
  assigned locker, or at a shared bank the reopening that releases the locker (the allocation that
  stores the visitor's things is not the end of the visit); the decision names it in `used_up` and
  the snapshot's `used_up` ids are refused `credential_revoked` from then on (row 5), until the
  store says `revoked` itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from functools import lru_cache

from gateway.events import format_ts
from gateway.model import Credential, KeypadEntry, Kind, Locker, LockerMode, PolicyEvent, Role, Service, Status, Tap
from gateway.schedule import parse_schedule
from gateway.uid import EM4100, printed_form_keys

GRANTED = "access.granted"
DENIED = "access.denied"
OVERRIDE_PENDING = "override.pending"


class Reason(StrEnum):
    """Every `reason` a decision can carry, grants and denials alike."""

    READER_LOCKED_OUT = "reader_locked_out"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_LOST = "credential_lost"
    CREDENTIAL_SUSPENDED = "credential_suspended"
    CREDENTIAL_REVOKED = "credential_revoked"
    CREDENTIAL_RETURNED = "credential_returned"
    CREDENTIAL_REPLACED = "credential_replaced"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    ASSIGNED_LOCKER = "assigned_locker"
    LOCKER_OUT_OF_SERVICE = "locker_out_of_service"
    SHARED_REOPEN = "shared_reopen"
    SHARED_ALLOCATED = "shared_allocated"
    NO_FREE_LOCKER = "no_free_locker"
    NO_LOCKER_HERE = "no_locker_here"
    MASTER_SECTION = "master_section"
    MASTER_DEPARTMENT = "master_department"
    MASTER_SITE = "master_site"
    TARGET_REQUIRED = "target_required"
    AWAITING_SECOND_PERSON = "awaiting_second_person"
    OVERRIDE_NEEDS_SECOND_PERSON = "override_needs_second_person"
    EMERGENCY_OVERRIDE = "emergency_override"


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
    #: Single-use credentials (ids) whose use is journaled but not yet `revoked` in the store.
    used_up: AbstractSet[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one tap.

    `kind` is the main event: "access.granted", "access.denied" or "override.pending".
    `lockers` are the lockers to open (grant) — one `access.granted` event is journaled per locker;
    for a denial they are the lockers concerned, possibly empty.
    `events` are further events to journal with it (credential.lost_presented, reader.lockout,
    locker.allocated, locker.released), in order.
    `reader_state` replaces the reader's state; `allocations` are (locker id, new occupant or None).
    `used_up` names the single-use credential this grant uses up (to be revoked), or is None.
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
    used_up: str | None = None

    @property
    def granted(self) -> bool:
        return self.kind == "access.granted"


# ---- the rulebook ------------------------------------------------------------------------------


def decide(snapshot: Snapshot, tap: Tap, now: datetime, timer: datetime | None = None) -> Decision:
    """Apply SPEC §5 in order; the first rule that applies gives the result."""
    timer = now if timer is None else timer
    credential = find_credential(snapshot.credentials, tap)
    state = _current_state(snapshot, tap.reader, timer)
    # Exempt by role, whatever the status: a lost emergency card is then still reported as presented.
    exempt = credential is not None and credential.role in _LOCKOUT_EXEMPT
    if state.locked_until is not None and not exempt:  # row 2 (an expired lockout was already cleared)
        return Decision(DENIED, Reason.READER_LOCKED_OUT.value, tap.reader, credential, reader_state=state)
    outcome = _rules(snapshot, tap.reader, credential, state, now, timer)
    decision = _settle(outcome, tap.reader, credential, snapshot.settings, now, timer)
    if credential is not None and credential.single_use and decision.granted and decision.reason in _USING_UP:
        return replace(decision, used_up=credential.id)
    return decision


def find_credential(credentials: Mapping[str, Credential], tap: Tap) -> Credential | None:
    """The credential of a tap: its exact uid; for an EM4100 tap (`tap.family`), also a credential
    enrolled from what is printed on such a fob, by the low 32 or 24 bits (see gateway.uid)."""
    found = credentials.get(tap.uid)
    if found is None and tap.family == EM4100:
        for key in printed_form_keys(tap.uid):
            found = credentials.get(key)
            if found is not None:
                break
    return found


def with_keypad(state: ReaderState, entry: KeypadEntry) -> ReaderState:
    """The reader's state after a keypad entry (the target for a master opening at a bank reader)."""
    return replace(state, keypad=entry)


# Enum members as module constants: reading one off its Enum class costs ~0.2 µs in Python 3.11,
# and the rules below run on every tap.
_ACTIVE, _LOST = Status.ACTIVE, Status.LOST
_USER, _EMERGENCY, _SITE_MASTER = Role.USER, Role.EMERGENCY, Role.SITE_MASTER
#: Decided by the other rules at a locked-out reader, so that a lockout never blocks an emergency.
_LOCKOUT_EXEMPT = frozenset({Role.EMERGENCY, Role.SITE_MASTER})
_SHARED = LockerMode.SHARED
_IN_SERVICE = Service.IN_SERVICE
_PHYSICAL_KEY, _MOBILE = Kind.PHYSICAL_KEY, Kind.MOBILE
#: The grants that complete a single-use credential's use.
_USING_UP = frozenset({"assigned_locker", "shared_reopen"})


def _rules(
    snapshot: Snapshot, reader: str, credential: Credential | None, state: ReaderState, now: datetime, timer: datetime
) -> _Outcome:
    if credential is None or credential.kind == _PHYSICAL_KEY:  # row 3
        return _Outcome(DENIED, Reason.UNKNOWN_CREDENTIAL, state)
    if credential.status == _LOST:  # row 4
        lost = PolicyEvent("credential.lost_presented", reason=Reason.CREDENTIAL_LOST.value)
        return _Outcome(DENIED, Reason.CREDENTIAL_LOST, state, events=(lost,))
    if credential.status != _ACTIVE:  # row 5
        return _Outcome(DENIED, _STATUS_REASONS[credential.status], state)
    if credential.single_use and credential.id in snapshot.used_up:  # row 5: used, revocation on its way
        return _Outcome(DENIED, Reason.CREDENTIAL_REVOKED, state)
    invalid = _validity(credential, snapshot.timezone, now)  # row 6
    if invalid is not None:
        return _Outcome(DENIED, invalid, state)
    served = snapshot.readers.get(reader, ())
    role = credential.role
    if role == _EMERGENCY or (
        role == _SITE_MASTER and state.pending is not None and snapshot.settings.emergency_two_person
    ):
        return _emergency(snapshot, credential, served, state, timer)  # row 11
    if role == _USER:
        return _user(snapshot, credential, served, state)  # rows 7-9
    return _master(snapshot, credential, served, state)  # row 10


_STATUS_REASONS = {
    Status.SUSPENDED: Reason.CREDENTIAL_SUSPENDED,
    Status.REVOKED: Reason.CREDENTIAL_REVOKED,
    Status.RETURNED: Reason.CREDENTIAL_RETURNED,
    Status.REPLACED: Reason.CREDENTIAL_REPLACED,
}


def _validity(credential: Credential, zone: tzinfo, now: datetime) -> Reason | None:
    if credential.valid_from is not None and now < credential.valid_from:
        return Reason.NOT_YET_VALID
    if credential.valid_until is not None and now >= credential.valid_until:
        return Reason.EXPIRED
    if credential.schedule:
        try:
            schedule = parse_schedule(credential.schedule)
        except ValueError:
            return Reason.OUTSIDE_SCHEDULE
        if not schedule.allows(now.astimezone(zone)):
            return Reason.OUTSIDE_SCHEDULE
    return None


def _user(snapshot: Snapshot, credential: Credential, served: tuple[str, ...], state: ReaderState) -> _Outcome:
    lockers = snapshot.lockers
    # Walk the (short) scope, not the reader's lockers: this is the path most taps take.
    assigned = [
        lockers[locker_id]
        for locker_id in credential.scope
        if locker_id in served and locker_id in lockers and lockers[locker_id].mode != _SHARED
    ]
    if assigned:  # row 7
        if len(assigned) > 1:
            assigned.sort(key=lambda locker: served.index(locker.id))
        openable = tuple(locker.id for locker in assigned if _openable(locker))
        if openable:
            return _Outcome(GRANTED, Reason.ASSIGNED_LOCKER, state, lockers=openable)
        return _Outcome(DENIED, Reason.LOCKER_OUT_OF_SERVICE, state, lockers=tuple(locker.id for locker in assigned))
    shared = [locker for locker in _lockers_here(snapshot, served) if locker.mode == _SHARED]
    if credential.kind == _MOBILE:  # a visitor code is bound to the shared lockers its scope names
        shared = [locker for locker in shared if locker.id in credential.scope]
    if shared:  # row 8
        held = [locker for locker in shared if locker.occupant == credential.id]
        if held:
            reopened = tuple(locker.id for locker in held if _openable(locker))
            if not reopened:
                return _Outcome(
                    DENIED, Reason.LOCKER_OUT_OF_SERVICE, state, lockers=tuple(locker.id for locker in held)
                )
            return _Outcome(
                GRANTED,
                Reason.SHARED_REOPEN,
                state,
                lockers=reopened,
                allocations=tuple((locker_id, None) for locker_id in reopened),
                events=tuple(PolicyEvent("locker.released", locker=locker_id) for locker_id in reopened),
            )
        free = [locker for locker in shared if locker.occupant is None and _openable(locker)]
        if not free:
            return _Outcome(DENIED, Reason.NO_FREE_LOCKER, state)
        chosen = min(free, key=lambda locker: locker_order(locker.id)).id
        return _Outcome(
            GRANTED,
            Reason.SHARED_ALLOCATED,
            state,
            lockers=(chosen,),
            allocations=((chosen, credential.id),),
            events=(PolicyEvent("locker.allocated", locker=chosen),),
        )
    return _Outcome(DENIED, Reason.NO_LOCKER_HERE, state)  # row 9


_MASTER_REASONS = {
    Role.SECTION_MASTER: Reason.MASTER_SECTION,
    Role.DEPARTMENT_MASTER: Reason.MASTER_DEPARTMENT,
    Role.SITE_MASTER: Reason.MASTER_SITE,
}


def _master(snapshot: Snapshot, credential: Credential, served: tuple[str, ...], state: ReaderState) -> _Outcome:
    scope = credential.scope
    in_scope: Callable[[Locker], bool]
    if credential.role == Role.SECTION_MASTER:
        in_scope = lambda locker: bool(locker.section) and locker.section in scope  # noqa: E731
    elif credential.role == Role.DEPARTMENT_MASTER:
        in_scope = lambda locker: bool(locker.department) and locker.department in scope  # noqa: E731
    else:
        in_scope = _anywhere
    target = _target(snapshot, served, state, in_scope)
    if isinstance(target, Reason):
        return _Outcome(DENIED, target, state)
    locker, used_keypad = target
    if not _openable(locker):
        return _Outcome(DENIED, Reason.LOCKER_OUT_OF_SERVICE, state, lockers=(locker.id,))
    if used_keypad:
        state = replace(state, keypad=None)
    return _Outcome(GRANTED, _MASTER_REASONS[credential.role], state, lockers=(locker.id,), override=True)


def _emergency(
    snapshot: Snapshot, credential: Credential, served: tuple[str, ...], state: ReaderState, now: datetime
) -> _Outcome:
    """Row 11: an emergency credential, or a site master completing a pending two-person opening."""
    pending = state.pending
    if not snapshot.settings.emergency_two_person:
        return _open_in_emergency(snapshot, served, state, None, (credential,))
    if pending is None:
        target = _target(snapshot, served, state, _anywhere)
        target_id: str | None = None
        if isinstance(target, tuple):
            locker, used_keypad = target
            if not _openable(locker):
                return _Outcome(DENIED, Reason.LOCKER_OUT_OF_SERVICE, state, lockers=(locker.id,))
            target_id = locker.id
            state = replace(state, keypad=None) if used_keypad else state
        elif target is not Reason.TARGET_REQUIRED:  # at a bank reader the keypad may come before the 2nd tap
            return _Outcome(DENIED, target, state)
        state = replace(state, pending=PendingOverride(credential=credential, at=now, target=target_id))
        return _Outcome(
            OVERRIDE_PENDING,
            Reason.AWAITING_SECOND_PERSON,
            state,
            lockers=(target_id,) if target_id else (),
            override=True,
            authorizers=(credential,),
        )
    if same_person(pending.credential.holder, credential.holder):
        lockers = (pending.target,) if pending.target else ()
        return _Outcome(DENIED, Reason.OVERRIDE_NEEDS_SECOND_PERSON, state, lockers=lockers)
    return _open_in_emergency(snapshot, served, state, pending.target, (pending.credential, credential))


def same_person(first: str, second: str) -> bool:
    """Holder ids are compared without regard to case (`nurse-1` and `NURSE-1` are one person)."""
    return first.strip().casefold() == second.strip().casefold()


def _open_in_emergency(
    snapshot: Snapshot,
    served: tuple[str, ...],
    state: ReaderState,
    target_id: str | None,
    authorizers: tuple[Credential, ...],
) -> _Outcome:
    used_keypad = False
    if target_id is not None:
        found = snapshot.lockers.get(target_id)
        if found is None:
            return _Outcome(DENIED, Reason.NO_LOCKER_HERE, state)
        locker = found
    else:
        target = _target(snapshot, served, state, _anywhere)
        if isinstance(target, Reason):
            return _Outcome(DENIED, target, state)
        locker, used_keypad = target
    if not _openable(locker):
        return _Outcome(DENIED, Reason.LOCKER_OUT_OF_SERVICE, state, lockers=(locker.id,))
    state = replace(state, pending=None, keypad=None if used_keypad else state.keypad)
    return _Outcome(
        GRANTED, Reason.EMERGENCY_OVERRIDE, state, lockers=(locker.id,), override=True, authorizers=authorizers
    )


# ---- targets and lockers -----------------------------------------------------------------------


def _anywhere(locker: Locker) -> bool:
    return True


def _openable(locker: Locker) -> bool:
    """Whether the gateway can open this locker now: in service and on a lock board (not keyed)."""
    return locker.service == _IN_SERVICE and locker.board is not None


def _lockers_here(snapshot: Snapshot, served: tuple[str, ...]) -> list[Locker]:
    lockers = snapshot.lockers
    return [lockers[locker_id] for locker_id in served if locker_id in lockers]


def _target(
    snapshot: Snapshot, served: tuple[str, ...], state: ReaderState, allowed: Callable[[Locker], bool]
) -> tuple[Locker, bool] | Reason:
    """The one locker a master or emergency tap opens, and whether the keypad entry named it.

    A per-locker reader's target is its locker; a bank reader's target is the locker its keypad entry
    names. Denies `no_locker_here` when the credential may open none of the reader's lockers (or the
    keypad names one it may not), `target_required` when a bank reader has no usable keypad entry.
    """
    here = _lockers_here(snapshot, served)
    if not any(allowed(locker) for locker in here):
        return Reason.NO_LOCKER_HERE
    if len(served) == 1:
        return here[0], False
    if state.keypad is None:
        return Reason.TARGET_REQUIRED
    named = keypad_target(state.keypad.digits, served)
    if named is None or named not in snapshot.lockers:
        return Reason.TARGET_REQUIRED
    locker = snapshot.lockers[named]
    if not allowed(locker):
        return Reason.NO_LOCKER_HERE
    return locker, True


_TRAILING_DIGITS = re.compile(r"(\d+)$")


@lru_cache(maxsize=65536)
def locker_number(locker_id: str) -> int | None:
    """The number at the end of a locker id (`A-07` → 7), or None when it ends in no digit."""
    match = _TRAILING_DIGITS.search(locker_id)
    return int(match.group(1)) if match else None


def locker_order(locker_id: str) -> tuple[bool, int, str]:
    """Sort key for "lowest-numbered": by the id's number, then the id; ids without a number last."""
    number = locker_number(locker_id)
    return (number is None, number or 0, locker_id)


def keypad_target(digits: str, served: tuple[str, ...]) -> str | None:
    """The served locker whose number equals the typed number (`1`, `01` and `001` all name `A-01`).

    None when the entry is not a number, names no served locker, or names more than one (ambiguous).
    """
    typed = digits.strip().rstrip("#")
    if not typed or not typed.isascii() or not typed.isdigit():
        return None
    number = int(typed)
    matches = [locker_id for locker_id in served if locker_number(locker_id) == number]
    return matches[0] if len(matches) == 1 else None


# ---- reader state: lockout, expiry -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A rule's result before lockout accounting turns it into a `Decision`."""

    kind: str
    reason: Reason
    state: ReaderState
    lockers: tuple[str, ...] = ()
    override: bool = False
    authorizers: tuple[Credential, ...] = ()
    events: tuple[PolicyEvent, ...] = ()
    allocations: tuple[tuple[str, str | None], ...] = ()


_NO_STATE = ReaderState()


def _current_state(snapshot: Snapshot, reader: str, now: datetime) -> ReaderState:
    """The reader's state as of `now`: lapsed lockout, stale denials, pending override and keypad dropped."""
    state = snapshot.reader_states.get(reader)
    if state is None:
        return _NO_STATE
    settings = snapshot.settings
    denials, locked_until, pending, keypad = state.denials, state.locked_until, state.pending, state.keypad
    changed = False
    if locked_until is not None and now >= locked_until:
        locked_until, denials, changed = None, (), True  # the lockout has passed: counting restarts
    if denials:
        window = timedelta(seconds=settings.lockout_window_s)
        recent = tuple(at for at in denials if now - at <= window)
        denials, changed = recent, changed or len(recent) != len(denials)
    if pending is not None and (
        now - pending.at > timedelta(seconds=settings.two_person_window_s) or not _still_active(snapshot, pending)
    ):
        pending, changed = None, True
    if keypad is not None and (
        keypad.reader != reader or now - keypad.at > timedelta(seconds=settings.keypad_window_s)
    ):
        keypad, changed = None, True
    if not changed:
        return state
    return ReaderState(denials=denials, locked_until=locked_until, pending=pending, keypad=keypad)


def _still_active(snapshot: Snapshot, pending: PendingOverride) -> bool:
    current = snapshot.credentials.get(pending.credential.uid)
    return current is not None and current.id == pending.credential.id and current.status == _ACTIVE


def _settle(
    outcome: _Outcome,
    reader: str,
    credential: Credential | None,
    settings: PolicySettings,
    now: datetime,
    timer: datetime,
) -> Decision:
    """Lockout accounting: denials count in a sliding window (a grant does not reset them, or guesses
    interleaved with one's own card would never lock the reader); the one that reaches `lockout_after`
    locks the reader. A denial of an exempt (emergency, site master) credential at a reader that is
    already locked out does not extend the lockout."""
    state, events = outcome.state, outcome.events
    if outcome.kind == DENIED and state.locked_until is None:
        denials = (*state.denials, timer)
        if len(denials) >= settings.lockout_after:
            lockout_s = timedelta(seconds=settings.lockout_s)
            state = ReaderState(locked_until=timer + lockout_s, pending=state.pending, keypad=state.keypad)
            lockout = PolicyEvent(
                "reader.lockout",
                data=(("locked_until", format_ts(now + lockout_s)), ("denials", len(denials))),
            )
            events = (*events, lockout)
        else:
            state = ReaderState(denials, state.locked_until, state.pending, state.keypad)
    return Decision(
        kind=outcome.kind,
        reason=outcome.reason.value,
        reader=reader,
        credential=credential,
        lockers=outcome.lockers,
        override=outcome.override,
        authorizers=outcome.authorizers,
        events=events,
        reader_state=state,
        allocations=outcome.allocations,
    )
