"""Properties of the rulebook that must hold for any site state, any credential and any order of taps."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_world import LOCKERS, NOW, READERS, apply, credential, keypad, snapshot, tap

from gateway.model import Credential, KeypadEntry, LockerMode, Role, Service, Status
from gateway.policy import (
    DENIED,
    GRANTED,
    OVERRIDE_PENDING,
    PendingOverride,
    PolicySettings,
    ReaderState,
    Reason,
    Snapshot,
    decide,
)
from gateway.schedule import parse_schedule

LOCKER_IDS = sorted(LOCKERS)
READER_IDS = sorted(READERS)
SECTIONS = sorted({locker.section for locker in LOCKERS.values()} | {"Z"})
DEPARTMENTS = sorted({locker.department for locker in LOCKERS.values()} | {"music"})
SCHEDULES = [None, "Mon-Fri 07:30-18:00", "Sat-Sun 00:00-24:00", "22:00-06:00", "Wed 09:00-11:00"]
HOLDERS = ["h-1", "h-2", "h-3"]
CREDENTIAL_IDS = ["C-1", "C-2", "C-3", "C-4"]

offsets = st.integers(-3 * 86400, 3 * 86400).map(lambda s: timedelta(seconds=s))


@st.composite
def credentials(draw: st.DrawFn, ident: str | None = None, role: Role | None = None) -> Credential:
    role = role or draw(st.sampled_from(list(Role)))
    if role == Role.USER:
        scope = draw(st.lists(st.sampled_from(LOCKER_IDS), unique=True, max_size=4))
    elif role == Role.SECTION_MASTER:
        scope = draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=2))
    elif role == Role.DEPARTMENT_MASTER:
        scope = draw(st.lists(st.sampled_from(DEPARTMENTS), unique=True, max_size=2))
    else:
        scope = []
    valid_from = draw(st.none() | offsets.map(lambda d: NOW + d))
    valid_until = draw(st.none() | offsets.map(lambda d: NOW + d))
    return credential(
        ident or draw(st.sampled_from(CREDENTIAL_IDS)),
        role,
        scope,
        holder=draw(st.sampled_from(HOLDERS)),
        status=draw(st.sampled_from(list(Status))),
        valid_from=valid_from,
        valid_until=valid_until,
        schedule=draw(st.sampled_from(SCHEDULES)),
    )


@st.composite
def reader_states(draw: st.DrawFn, reader: str, now: datetime) -> ReaderState:
    ago = st.integers(0, 200).map(lambda s: now - timedelta(seconds=s))
    denials = tuple(sorted(draw(st.lists(ago, max_size=3))))
    locked_until = draw(st.none() | st.integers(-100, 100).map(lambda s: now + timedelta(seconds=s)))
    pending = None
    if draw(st.booleans()):
        first = draw(credentials(role=Role.EMERGENCY))
        pending = PendingOverride(first, draw(ago), draw(st.none() | st.sampled_from(LOCKER_IDS)))
    entry = None
    if draw(st.booleans()):
        digits = draw(st.sampled_from(["1", "01", "2", "3", "9", "10", "x", ""]))
        entry = KeypadEntry(reader=reader, digits=digits, at=draw(ago))
    return ReaderState(denials=denials, locked_until=locked_until, pending=pending, keypad=entry)


@st.composite
def situations(draw: st.DrawFn, tapped: st.SearchStrategy[Credential]) -> tuple[Snapshot, Credential, str, datetime]:
    """A random site state, a credential among others, a reader and a moment."""
    cred = draw(tapped)
    others = draw(st.lists(credentials(), max_size=3))
    now = NOW + draw(offsets)
    reader = draw(st.sampled_from(READER_IDS))
    occupant = st.none() | st.sampled_from([*CREDENTIAL_IDS, "C-gone"])
    occupants = {locker_id: draw(occupant) for locker_id in LOCKER_IDS}
    service = {locker_id: draw(st.sampled_from(list(Service))) for locker_id in LOCKER_IDS}
    policy = PolicySettings(emergency_two_person=draw(st.booleans()), lockout_after=draw(st.integers(1, 6)))
    state = draw(reader_states(reader, now))
    first_person = [state.pending.credential] if state.pending else []  # known to the store, so it stays live
    snap = snapshot(
        [*others, *first_person, cred],
        occupants={k: v for k, v in occupants.items() if v is not None},
        service=service,
        settings=policy,
        states={reader: state},
    )
    return snap, cred, reader, now


def is_usable(cred: Credential, now: datetime, snap: Snapshot) -> bool:
    """Independent statement of rows 4-6: active, inside validity, inside the schedule."""
    if cred.status != Status.ACTIVE:
        return False
    if cred.valid_from is not None and now < cred.valid_from:
        return False
    if cred.valid_until is not None and now >= cred.valid_until:
        return False
    return cred.schedule is None or parse_schedule(cred.schedule).allows(now.astimezone(snap.timezone))


@given(situations(credentials()))
def test_a_credential_that_is_not_usable_never_opens_anything(situation: tuple) -> None:
    snap, cred, reader, now = situation
    decision = decide(snap, tap(cred, reader, now), now)
    if not is_usable(cred, now, snap):
        assert decision.kind == DENIED
        assert decision.allocations == ()
        assert decision.authorizers == ()
        state_before = snap.reader_states[reader]
        assert decision.reader_state.pending in (None, state_before.pending)


@given(situations(credentials(role=Role.USER)))
def test_a_user_opens_only_its_own_lockers(situation: tuple) -> None:
    snap, cred, reader, now = situation
    decision = decide(snap, tap(cred, reader, now), now)
    allocated = {locker_id for locker_id, occupant in decision.allocations if occupant == cred.id}
    for locker_id in decision.lockers if decision.granted else ():
        locker = snap.lockers[locker_id]
        own = locker.occupant == cred.id or locker_id in allocated
        if locker.mode == LockerMode.SHARED:
            assert own, f"{cred.id} opened shared locker {locker_id} it does not hold"
        else:
            assert locker_id in cred.scope
    assert not decision.override


@given(situations(credentials()))
def test_same_snapshot_and_tap_give_the_same_decision(situation: tuple) -> None:
    snap, cred, reader, now = situation
    copy = replace(snap, lockers=dict(snap.lockers), reader_states=dict(snap.reader_states))
    assert decide(snap, tap(cred, reader, now), now) == decide(copy, tap(cred, reader, now), now)


@given(situations(credentials()))
def test_grants_open_only_lockers_that_can_open_at_this_reader(situation: tuple) -> None:
    snap, cred, reader, now = situation
    decision = decide(snap, tap(cred, reader, now), now)
    if decision.granted:
        assert decision.lockers
        for locker_id in decision.lockers:
            locker = snap.lockers[locker_id]
            assert locker_id in READERS[reader]
            assert locker.service == Service.IN_SERVICE and locker.board is not None
        assert decision.override == (cred.role != Role.USER)
    if decision.reason == Reason.EMERGENCY_OVERRIDE:
        holders = [c.holder for c in decision.authorizers]
        assert len(set(holders)) == len(holders) == (2 if snap.settings.emergency_two_person else 1)
    if decision.kind != GRANTED:
        assert decision.allocations == ()


@given(
    lockout_after=st.integers(1, 8),
    window_s=st.integers(10, 300),
    lockout_s=st.integers(1, 600),
    gaps=st.lists(st.floats(0, 1), min_size=8, max_size=8),
    later=st.lists(st.floats(0, 0.999), min_size=1, max_size=5),
)
@settings(max_examples=50)
def test_lockout_after_n_denials(
    lockout_after: int, window_s: int, lockout_s: int, gaps: list[float], later: list[float]
) -> None:
    """N denials within the window lock the reader at the N-th, for lockout_s, for everyone."""
    owner = credential("C-owner", scope=("A-01",))
    policy = PolicySettings(lockout_after=lockout_after, lockout_window_s=window_s, lockout_s=lockout_s)
    snap = snapshot([owner], settings=policy)
    step = window_s / lockout_after / 1.01
    moment = NOW
    for n in range(lockout_after):
        moment += timedelta(seconds=gaps[n] * step)
        decision = decide(snap, tap("0000000000", "door-a01", moment), moment)
        snap = apply(snap, decision)
        assert decision.reason == Reason.UNKNOWN_CREDENTIAL
        assert [e.kind for e in decision.events] == (["reader.lockout"] if n == lockout_after - 1 else [])
    locked_at = moment
    for fraction in sorted(later):
        moment = locked_at + timedelta(seconds=fraction * lockout_s)
        decision = decide(snap, tap(owner, "door-a01", moment), moment)
        snap = apply(snap, decision)
        assert (decision.reason, decision.events) == (Reason.READER_LOCKED_OUT, ())
    moment = locked_at + timedelta(seconds=lockout_s)
    assert decide(snap, tap(owner, "door-a01", moment), moment).granted


@given(
    first_holder=st.sampled_from(HOLDERS),
    second_holder=st.sampled_from(HOLDERS),
    second_role=st.sampled_from([Role.EMERGENCY, Role.SITE_MASTER]),
    delay_s=st.integers(0, 60),
    reader=st.sampled_from(["door-a01", "door-b01", "bank-s"]),
)
def test_two_person_rule(first_holder: str, second_holder: str, second_role: Role, delay_s: int, reader: str) -> None:
    """An emergency opening needs a second tap by another person within the window; nothing less opens."""
    first = credential("C-first", Role.EMERGENCY, holder=first_holder)
    second = credential("C-second", second_role, holder=second_holder)
    snap = keypad(snapshot([first, second]), reader, "10") if reader == "bank-s" else snapshot([first, second])
    pending = decide(snap, tap(first, reader), NOW)
    assert (pending.kind, pending.lockers) == (OVERRIDE_PENDING, (READERS[reader][0],))
    later = NOW + timedelta(seconds=delay_s)
    decision = decide(apply(snap, pending), tap(second, reader, later), later)
    if delay_s > 30:
        assert decision.reason != Reason.EMERGENCY_OVERRIDE
    elif first_holder == second_holder:
        assert (decision.kind, decision.reason) == (DENIED, Reason.OVERRIDE_NEEDS_SECOND_PERSON)
    else:
        assert (decision.reason, decision.lockers) == (Reason.EMERGENCY_OVERRIDE, pending.lockers)
        assert decision.authorizers == (first, second)


# ---- random days at the site --------------------------------------------------------------------

POOL = [
    credential("C-1", scope=("A-01", "A-02")),
    credential("C-2", scope=("A-03", "B-01")),
    credential("C-3"),
    credential("C-4", scope=("K-01",)),
    credential("C-5", Role.SECTION_MASTER, ("A", "S")),
    credential("C-6", Role.DEPARTMENT_MASTER, ("science",)),
    credential("C-7", Role.SITE_MASTER, holder="h-site"),
    credential("C-8", Role.EMERGENCY, holder="h-nurse"),
    credential("C-9", Role.EMERGENCY, holder="h-doctor"),
    credential("C-10", Role.EMERGENCY, holder="h-nurse"),
    credential("C-11", status=Status.LOST, scope=("A-01",)),
]
UNKNOWN = "FFFFFFFFFF"

actions = st.one_of(
    st.tuples(st.just("tap"), st.sampled_from([*POOL, None]), st.sampled_from(READER_IDS), st.integers(0, 40)),
    st.tuples(st.just("keypad"), st.sampled_from(["1", "2", "3", "9", "10", "01"]), st.sampled_from(READER_IDS)),
)


@given(st.lists(actions, min_size=1, max_size=40), st.booleans(), st.integers(1, 6))
@settings(max_examples=60)
def test_invariants_over_any_sequence_of_taps(actions: list[tuple], two_person: bool, lockout_after: int) -> None:
    policy = PolicySettings(emergency_two_person=two_person, lockout_after=lockout_after, lockout_s=30)
    snap = snapshot(POOL, settings=policy)
    now = NOW
    for action in actions:
        if action[0] == "keypad":
            snap = keypad(snap, action[2], action[1], now)
            continue
        _, cred, reader, wait_s = action
        now += timedelta(seconds=wait_s)
        decision = decide(snap, tap(cred.uid if cred else UNKNOWN, reader, now), now)
        before = snap
        snap = apply(snap, decision)
        state = decision.reader_state
        lockout_events = [e for e in decision.events if e.kind == "reader.lockout"]

        assert len(state.denials) < lockout_after
        if lockout_events:
            assert decision.kind == DENIED and state.locked_until is not None
        if decision.reason == Reason.EMERGENCY_OVERRIDE:
            holders = [c.holder for c in decision.authorizers]
            assert len(set(holders)) == len(holders) == (2 if two_person else 1)
        if decision.kind == OVERRIDE_PENDING:
            assert cred is not None and cred.role == Role.EMERGENCY and two_person
            assert state.pending is not None and state.pending.credential == cred
        for locker_id, occupant in decision.allocations:
            previous = before.lockers[locker_id].occupant
            if occupant is None:  # a release: only by the holder, at the tap that reopens it
                assert cred is not None and previous == cred.id and locker_id in decision.lockers
            else:  # an allocation: only of a free shared locker
                assert previous is None and before.lockers[locker_id].mode == LockerMode.SHARED
        if decision.granted:
            # A grant does not reset the denial count (SPEC §5); at a locked-out reader only an emergency
            # or site-master credential is decided, so only such a grant happens there.
            assert set(state.denials) <= set(before.reader_states.get(reader, ReaderState()).denials)
            assert state.locked_until is None or (cred is not None and cred.role in (Role.EMERGENCY, Role.SITE_MASTER))
        for locker_id in decision.lockers if decision.granted else ():
            assert snap.lockers[locker_id].service == Service.IN_SERVICE
            assert snap.lockers[locker_id].board is not None
        holding_here = [snap.lockers[locker_id].occupant for locker_id in READERS["bank-s"]]
        held = [occupant for occupant in holding_here if occupant is not None]
        assert len(held) == len(set(held)), "one person holds at most one shared locker at a bank"
