"""SPEC §5 row by row: what a person tapping a card sees, and what the gateway records."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from policy_world import LOCKERS, LONDON, NOW, READERS, apply, credential, keypad, run, snapshot, tap

from gateway.model import KeypadEntry, Kind, Locker, Role, Service, Status
from gateway.policy import (
    DENIED,
    GRANTED,
    OVERRIDE_PENDING,
    PendingOverride,
    PolicySettings,
    ReaderState,
    Reason,
    decide,
    keypad_target,
    locker_order,
    with_keypad,
)

SECOND = timedelta(seconds=1)

# ---- one tap, one row: every reason code --------------------------------------------------------

USER_A = credential("C-user-a", scope=("A-01", "A-02", "A-03"))
SECTION_A = credential("C-sec-a", Role.SECTION_MASTER, ("A",))
SECTION_B = credential("C-sec-b", Role.SECTION_MASTER, ("B",))
DEPT_SPORTS = credential("C-dept", Role.DEPARTMENT_MASTER, ("sports",))
SITE = credential("C-site", Role.SITE_MASTER, holder="h-site")
EMERGENCY_1 = credential("C-em-1", Role.EMERGENCY, holder="h-nurse")
EMERGENCY_2 = credential("C-em-2", Role.EMERGENCY, holder="h-doctor")
EMERGENCY_1_SPARE = credential("C-em-1b", Role.EMERGENCY, holder="h-nurse")
STRANGER = "DEADBEEF01"


@dataclass
class Case:
    name: str
    tapped: object  # a Credential, or a uid nobody holds
    reader: str
    kind: str
    reason: Reason
    lockers: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    occupants: dict[str, str] = field(default_factory=dict)
    service: dict[str, Service] = field(default_factory=dict)
    state: ReaderState | None = None
    digits: str | None = None
    digits_age_s: float = 0
    settings: PolicySettings = field(default_factory=PolicySettings)


CASES = [
    Case(
        "reader locked out",
        USER_A,
        "bank-a",
        DENIED,
        Reason.READER_LOCKED_OUT,
        state=ReaderState(locked_until=NOW + SECOND),
    ),
    Case("unknown card", STRANGER, "bank-a", DENIED, Reason.UNKNOWN_CREDENTIAL),
    Case(
        "physical key record is never read by a reader",
        credential("K-1", scope=("A-01",), kind=Kind.PHYSICAL_KEY),
        "door-a01",
        DENIED,
        Reason.UNKNOWN_CREDENTIAL,
    ),
    Case(
        "lost card",
        credential("C-lost", scope=("A-01",), status=Status.LOST),
        "door-a01",
        DENIED,
        Reason.CREDENTIAL_LOST,
        events=("credential.lost_presented",),
    ),
    *(
        Case(
            f"{status} card",
            credential(f"C-{status}", scope=("A-01",), status=status),
            "door-a01",
            DENIED,
            Reason(f"credential_{status}"),
        )
        for status in (Status.SUSPENDED, Status.REVOKED, Status.RETURNED, Status.REPLACED)
    ),
    Case(
        "not yet valid",
        credential("C-early", scope=("A-01",), valid_from=NOW + SECOND),
        "door-a01",
        DENIED,
        Reason.NOT_YET_VALID,
    ),
    Case(
        "valid_from is inclusive",
        credential("C-from", scope=("A-01",), valid_from=NOW),
        "door-a01",
        GRANTED,
        Reason.ASSIGNED_LOCKER,
        ("A-01",),
    ),
    Case(
        "valid_until is exclusive",
        credential("C-late", scope=("A-01",), valid_until=NOW),
        "door-a01",
        DENIED,
        Reason.EXPIRED,
    ),
    Case(
        "outside schedule (10:00 on a Wednesday)",
        credential("C-weekend", scope=("A-01",), schedule="Sat-Sun 08:00-20:00"),
        "door-a01",
        DENIED,
        Reason.OUTSIDE_SCHEDULE,
    ),
    Case(
        "inside schedule",
        credential("C-weekday", scope=("A-01",), schedule="Mon-Fri 07:30-18:00"),
        "door-a01",
        GRANTED,
        Reason.ASSIGNED_LOCKER,
        ("A-01",),
    ),
    Case(
        "a schedule that does not parse opens nothing",
        credential("C-garbled", scope=("A-01",), schedule="whenever"),
        "door-a01",
        DENIED,
        Reason.OUTSIDE_SCHEDULE,
    ),
    Case(
        "a master out of schedule is refused too",
        credential("C-night-site", Role.SITE_MASTER, schedule="Sat 00:00-24:00"),
        "door-a01",
        DENIED,
        Reason.OUTSIDE_SCHEDULE,
    ),
    Case(
        "assigned lockers at a bank: every in-service one opens",
        USER_A,
        "bank-a",
        GRANTED,
        Reason.ASSIGNED_LOCKER,
        ("A-01", "A-02"),
    ),
    Case(
        "assigned locker out of service",
        USER_A,
        "door-a03",
        DENIED,
        Reason.LOCKER_OUT_OF_SERVICE,
        ("A-03",),
    ),
    Case(
        "all assigned lockers here out of service",
        USER_A,
        "bank-a",
        DENIED,
        Reason.LOCKER_OUT_OF_SERVICE,
        ("A-01", "A-02", "A-03"),
        service={"A-01": Service.OUT_OF_SERVICE, "A-02": Service.OUT_OF_SERVICE},
    ),
    Case(
        "a keyed locker is never opened",
        credential("C-keyed", scope=("K-01",)),
        "door-k01",
        DENIED,
        Reason.LOCKER_OUT_OF_SERVICE,
        ("K-01",),
    ),
    Case(
        "an assigned locker is opened through scope only, not an occupant field",
        credential("C-assigned"),
        "door-b01",
        DENIED,
        Reason.NO_LOCKER_HERE,
        occupants={"B-01": "C-assigned"},
    ),
    Case(
        "shared: lowest-numbered free locker is allocated",
        credential("C-visitor"),
        "bank-s",
        GRANTED,
        Reason.SHARED_ALLOCATED,
        ("S-9",),
        ("locker.allocated",),
        occupants={"S-2": "C-other"},
    ),
    Case(
        "shared: holder reopens and releases",
        credential("C-holder"),
        "bank-s",
        GRANTED,
        Reason.SHARED_REOPEN,
        ("S-10",),
        ("locker.released",),
        occupants={"S-10": "C-holder"},
    ),
    Case(
        "shared: held locker out of service stays shut and held",
        credential("C-holder"),
        "bank-s",
        DENIED,
        Reason.LOCKER_OUT_OF_SERVICE,
        ("S-10",),
        occupants={"S-10": "C-holder"},
        service={"S-10": Service.OUT_OF_SERVICE},
    ),
    Case(
        "shared: all taken",
        credential("C-late-visitor"),
        "bank-s",
        DENIED,
        Reason.NO_FREE_LOCKER,
        occupants={"S-2": "x", "S-9": "y", "S-10": "z"},
    ),
    Case(
        "shared: out-of-service lockers are not free",
        credential("C-late-visitor"),
        "bank-s",
        DENIED,
        Reason.NO_FREE_LOCKER,
        occupants={"S-2": "x", "S-9": "y"},
        service={"S-10": Service.OUT_OF_SERVICE},
    ),
    Case("user at a bank with none of its lockers", USER_A, "door-b01", DENIED, Reason.NO_LOCKER_HERE),
    Case("user at a reader with no lockers", USER_A, "lobby", DENIED, Reason.NO_LOCKER_HERE),
    Case(
        "user scope naming a shared locker does not open it",
        credential("C-sneaky", scope=("S-2",)),
        "bank-s",
        GRANTED,
        Reason.SHARED_ALLOCATED,
        ("S-9",),
        ("locker.allocated",),
        occupants={"S-2": "C-owner"},
    ),
    Case("section master, own section", SECTION_A, "door-a01", GRANTED, Reason.MASTER_SECTION, ("A-01",)),
    Case("section master, other section", SECTION_B, "door-a01", DENIED, Reason.NO_LOCKER_HERE),
    Case("department master", DEPT_SPORTS, "door-a01", GRANTED, Reason.MASTER_DEPARTMENT, ("A-01",)),
    Case(
        "department master, other department",
        DEPT_SPORTS,
        "door-b01",
        DENIED,
        Reason.NO_LOCKER_HERE,
    ),
    Case(
        "department names are not section names",
        credential("C-dept-a", Role.DEPARTMENT_MASTER, ("A",)),
        "door-a01",
        DENIED,
        Reason.NO_LOCKER_HERE,
    ),
    Case("site master anywhere", SITE, "door-b01", GRANTED, Reason.MASTER_SITE, ("B-01",)),
    Case("master at a locker out of service", SITE, "door-a03", DENIED, Reason.LOCKER_OUT_OF_SERVICE, ("A-03",)),
    Case("master at a keyed locker", SITE, "door-k01", DENIED, Reason.LOCKER_OUT_OF_SERVICE, ("K-01",)),
    Case("master at a bank without keypad entry", SECTION_A, "bank-a", DENIED, Reason.TARGET_REQUIRED),
    Case(
        "master at a bank with keypad entry",
        SECTION_A,
        "bank-a",
        GRANTED,
        Reason.MASTER_SECTION,
        ("A-02",),
        digits="2",
    ),
    Case(
        "keypad entry with leading zeros",
        SITE,
        "bank-a",
        GRANTED,
        Reason.MASTER_SITE,
        ("A-01",),
        digits="001",
    ),
    Case("keypad names no locker here", SITE, "bank-a", DENIED, Reason.TARGET_REQUIRED, digits="7"),
    Case("keypad entry is not a number", SITE, "bank-a", DENIED, Reason.TARGET_REQUIRED, digits="1*2"),
    Case(
        "keypad entry 10 s old still counts",
        SITE,
        "bank-s",
        GRANTED,
        Reason.MASTER_SITE,
        ("S-10",),
        digits="10",
        digits_age_s=10,
    ),
    Case("keypad entry too old", SITE, "bank-a", DENIED, Reason.TARGET_REQUIRED, digits="1", digits_age_s=10.001),
    Case(
        "keypad names a locker out of the master's scope",
        SECTION_A,
        "bank-s",
        DENIED,
        Reason.NO_LOCKER_HERE,
        digits="2",
    ),
    Case(
        "keypad names a locker out of service",
        SITE,
        "bank-a",
        DENIED,
        Reason.LOCKER_OUT_OF_SERVICE,
        ("A-03",),
        digits="3",
    ),
    Case(
        "emergency: first person",
        EMERGENCY_1,
        "door-a01",
        OVERRIDE_PENDING,
        Reason.AWAITING_SECOND_PERSON,
        ("A-01",),
    ),
    Case(
        "emergency: second person",
        EMERGENCY_2,
        "door-a01",
        GRANTED,
        Reason.EMERGENCY_OVERRIDE,
        ("A-01",),
        state=ReaderState(pending=PendingOverride(EMERGENCY_1, NOW - 29 * SECOND, "A-01")),
    ),
    Case(
        "emergency: same holder twice",
        EMERGENCY_1_SPARE,
        "door-a01",
        DENIED,
        Reason.OVERRIDE_NEEDS_SECOND_PERSON,
        ("A-01",),
        state=ReaderState(pending=PendingOverride(EMERGENCY_1, NOW - SECOND, "A-01")),
    ),
    Case(
        "emergency: the first tap has lapsed, so this is a first tap again",
        EMERGENCY_2,
        "door-a01",
        OVERRIDE_PENDING,
        Reason.AWAITING_SECOND_PERSON,
        ("A-01",),
        state=ReaderState(pending=PendingOverride(EMERGENCY_1, NOW - 31 * SECOND, "A-01")),
    ),
    Case(
        "emergency alone when two-person rule is off",
        EMERGENCY_1,
        "door-a01",
        GRANTED,
        Reason.EMERGENCY_OVERRIDE,
        ("A-01",),
        settings=PolicySettings(emergency_two_person=False),
    ),
    Case(
        "emergency alone at a bank still needs a target",
        EMERGENCY_1,
        "bank-a",
        DENIED,
        Reason.TARGET_REQUIRED,
        settings=PolicySettings(emergency_two_person=False),
    ),
    Case("emergency at a reader with no lockers", EMERGENCY_1, "lobby", DENIED, Reason.NO_LOCKER_HERE),
    Case(
        "site master completes a pending emergency opening",
        SITE,
        "door-a01",
        GRANTED,
        Reason.EMERGENCY_OVERRIDE,
        ("A-01",),
        state=ReaderState(pending=PendingOverride(EMERGENCY_1, NOW - SECOND, "A-01")),
    ),
]

EVERY_CREDENTIAL = [case.tapped for case in CASES if not isinstance(case.tapped, str)] + [
    EMERGENCY_1,
    EMERGENCY_2,
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rule_table(case: Case) -> None:
    snap = snapshot(EVERY_CREDENTIAL, occupants=case.occupants, service=case.service, settings=case.settings)
    if case.state is not None:
        snap = replace(snap, reader_states={case.reader: case.state})
    if case.digits is not None:
        snap = keypad(snap, case.reader, case.digits, NOW - timedelta(seconds=case.digits_age_s))

    decision = decide(snap, tap(case.tapped, case.reader), NOW)  # type: ignore[arg-type]

    assert (decision.kind, decision.reason, decision.lockers) == (case.kind, case.reason, case.lockers)
    assert tuple(event.kind for event in decision.events) == case.events
    assert decision.reader == case.reader
    if not isinstance(case.tapped, str) and case.reason is not Reason.UNKNOWN_CREDENTIAL:
        assert decision.credential == case.tapped
    granted_by_master = decision.granted and case.reason not in (
        Reason.ASSIGNED_LOCKER,
        Reason.SHARED_ALLOCATED,
        Reason.SHARED_REOPEN,
    )
    assert decision.override == (granted_by_master or decision.kind == OVERRIDE_PENDING)


def test_every_reason_and_event_is_reached() -> None:
    reached = {case.reason for case in CASES}
    assert reached == set(Reason)
    events = {kind for case in CASES for kind in case.events} | {"reader.lockout"}  # lockout: see below
    assert events == {
        "credential.lost_presented",
        "locker.allocated",
        "locker.released",
        "reader.lockout",
    }


# ---- what the decision carries ------------------------------------------------------------------


def test_shared_allocation_and_release_name_the_credential() -> None:
    visitor = credential("C-visitor")
    snap = snapshot([visitor])

    allocated, snap = run(snap, visitor, "bank-s")
    assert allocated.lockers == ("S-2",)
    assert allocated.allocations == (("S-2", "C-visitor"),)
    assert [(e.kind, e.locker) for e in allocated.events] == [("locker.allocated", "S-2")]
    assert snap.lockers["S-2"].occupant == "C-visitor"

    reopened, snap = run(snap, visitor, "bank-s", NOW + timedelta(hours=2))
    assert (reopened.reason, reopened.lockers) == (Reason.SHARED_REOPEN, ("S-2",))
    assert reopened.allocations == (("S-2", None),)
    assert [(e.kind, e.locker) for e in reopened.events] == [("locker.released", "S-2")]
    assert snap.lockers["S-2"].occupant is None

    again, _ = run(snap, visitor, "bank-s", NOW + timedelta(hours=3))
    assert (again.reason, again.lockers) == (Reason.SHARED_ALLOCATED, ("S-2",))


def test_shared_lockers_fill_in_numeric_order() -> None:
    visitors = [credential(f"C-v{n}") for n in range(4)]
    snap = snapshot(visitors)
    given = []
    for visitor in visitors:
        decision, snap = run(snap, visitor, "bank-s")
        given.append(decision.lockers or decision.reason)
    assert given == [("S-2",), ("S-9",), ("S-10",), Reason.NO_FREE_LOCKER]


def test_locker_order_is_numeric_then_by_id() -> None:
    ids = ["S-10", "S-9", "B-02", "A-02", "lobby", "S-1"]
    assert sorted(ids, key=locker_order) == ["S-1", "A-02", "B-02", "S-9", "S-10", "lobby"]


def test_keypad_target_rules() -> None:
    served = ("A-01", "A-02", "B-01", "C-10")
    assert keypad_target("2", served) == "A-02"
    assert keypad_target("002#", served) == "A-02"
    assert keypad_target("10", served) == "C-10"
    assert keypad_target("1", served) is None  # A-01 and B-01: ambiguous
    assert keypad_target("3", served) is None
    assert keypad_target("", served) is None
    assert keypad_target("٣", ("A-03",)) is None  # only ASCII digits are a locker number


def test_keypad_entry_is_consumed_by_the_master_grant() -> None:
    snap = keypad(snapshot([SITE]), "bank-a", "2")
    first, snap = run(snap, SITE, "bank-a")
    assert first.lockers == ("A-02",)
    assert first.reader_state.keypad is None
    second, _ = run(snap, SITE, "bank-a", NOW + SECOND)
    assert second.reason == Reason.TARGET_REQUIRED


def test_keypad_entry_at_another_reader_does_not_count() -> None:
    snap = snapshot([SITE])
    stray = KeypadEntry(reader="bank-s", digits="2", at=NOW)
    snap = replace(snap, reader_states={"bank-a": with_keypad(ReaderState(), stray)})
    assert decide(snap, tap(SITE, "bank-a"), NOW).reason == Reason.TARGET_REQUIRED


def test_a_denied_master_keeps_the_keypad_entry() -> None:
    snap = keypad(snapshot([SITE, SECTION_B]), "bank-a", "1")
    denied, snap = run(snap, SECTION_B, "bank-a")
    assert denied.reason == Reason.NO_LOCKER_HERE
    granted, _ = run(snap, SITE, "bank-a", NOW + SECOND)
    assert (granted.reason, granted.lockers) == (Reason.MASTER_SITE, ("A-01",))


def test_with_keypad_keeps_the_rest_of_the_state() -> None:
    state = ReaderState(denials=(NOW,), pending=PendingOverride(EMERGENCY_1, NOW))
    entry = KeypadEntry(reader="bank-a", digits="2", at=NOW)
    assert with_keypad(state, entry) == ReaderState(denials=(NOW,), pending=state.pending, keypad=entry)


# ---- two-person emergency opening ---------------------------------------------------------------


def test_two_person_emergency_opening_names_both_people() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_2])
    first, snap = run(snap, EMERGENCY_1, "door-a01")
    assert first.kind == OVERRIDE_PENDING and not first.granted
    assert first.reader_state.pending is not None
    second, snap = run(snap, EMERGENCY_2, "door-a01", NOW + 30 * SECOND)
    assert (second.kind, second.reason, second.lockers) == (GRANTED, Reason.EMERGENCY_OVERRIDE, ("A-01",))
    assert second.override
    assert [(c.id, c.holder) for c in second.authorizers] == [("C-em-1", "h-nurse"), ("C-em-2", "h-doctor")]
    assert second.reader_state.pending is None


def test_same_holder_cannot_be_both_people() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_1_SPARE, EMERGENCY_2])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    again, snap = run(snap, EMERGENCY_1, "door-a01", NOW + SECOND)
    assert again.reason == Reason.OVERRIDE_NEEDS_SECOND_PERSON
    spare, snap = run(snap, EMERGENCY_1_SPARE, "door-a01", NOW + 2 * SECOND)
    assert spare.reason == Reason.OVERRIDE_NEEDS_SECOND_PERSON
    # the first tap still stands for its window, so the real second person can complete it
    done, _ = run(snap, EMERGENCY_2, "door-a01", NOW + 3 * SECOND)
    assert done.reason == Reason.EMERGENCY_OVERRIDE


def test_second_person_at_another_reader_does_not_complete() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_2])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    elsewhere, _ = run(snap, EMERGENCY_2, "door-b01", NOW + SECOND)
    assert elsewhere.kind == OVERRIDE_PENDING


def test_pending_override_expires() -> None:
    snap = snapshot([EMERGENCY_1, SITE])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    late, _ = run(snap, SITE, "door-a01", NOW + 31 * SECOND)
    assert late.reason == Reason.MASTER_SITE  # a plain master opening, not the override
    assert late.authorizers == ()


def test_pending_override_is_void_once_the_first_card_is_suspended() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_2])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    suspended = replace(EMERGENCY_1, status=Status.SUSPENDED)
    snap = replace(snap, credentials={EMERGENCY_1.uid: suspended, EMERGENCY_2.uid: EMERGENCY_2})
    second, _ = run(snap, EMERGENCY_2, "door-a01", NOW + SECOND)
    assert second.kind == OVERRIDE_PENDING
    assert second.authorizers == (EMERGENCY_2,)


def test_pending_override_is_not_a_denial() -> None:
    settings = PolicySettings(lockout_after=2)
    snap = snapshot([EMERGENCY_1], settings=settings)
    for n in range(5):
        decision, snap = run(snap, EMERGENCY_1, f"door-{'a01' if n % 2 else 'b01'}", NOW + n * 40 * SECOND)
        assert decision.kind == OVERRIDE_PENDING
    assert all(not state.denials and state.locked_until is None for state in snap.reader_states.values())


def test_emergency_at_a_bank_reader_with_keypad_before_the_first_tap() -> None:
    snap = keypad(snapshot([EMERGENCY_1, EMERGENCY_2]), "bank-a", "02")
    first, snap = run(snap, EMERGENCY_1, "bank-a", NOW + SECOND)
    assert (first.kind, first.lockers) == (OVERRIDE_PENDING, ("A-02",))
    assert first.reader_state.keypad is None
    second, _ = run(snap, EMERGENCY_2, "bank-a", NOW + 2 * SECOND)
    assert (second.reason, second.lockers) == (Reason.EMERGENCY_OVERRIDE, ("A-02",))


def test_emergency_at_a_bank_reader_with_keypad_before_the_second_tap() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_2])
    first, snap = run(snap, EMERGENCY_1, "bank-a")
    assert (first.kind, first.lockers) == (OVERRIDE_PENDING, ())
    no_target, snap = run(snap, EMERGENCY_2, "bank-a", NOW + SECOND)
    assert no_target.reason == Reason.TARGET_REQUIRED
    snap = keypad(snap, "bank-a", "1", NOW + 2 * SECOND)
    done, snap = run(snap, EMERGENCY_2, "bank-a", NOW + 3 * SECOND)
    assert (done.reason, done.lockers) == (Reason.EMERGENCY_OVERRIDE, ("A-01",))
    assert done.reader_state.keypad is None and done.reader_state.pending is None


def test_first_emergency_tap_at_a_locker_out_of_service_is_refused_at_once() -> None:
    decision = decide(snapshot([EMERGENCY_1]), tap(EMERGENCY_1, "door-a03"), NOW)
    assert (decision.kind, decision.reason) == (DENIED, Reason.LOCKER_OUT_OF_SERVICE)
    assert decision.reader_state.pending is None


def test_site_master_alone_is_a_master_when_nothing_is_pending() -> None:
    decision = decide(snapshot([SITE]), tap(SITE, "door-a01"), NOW)
    assert (decision.reason, decision.authorizers) == (Reason.MASTER_SITE, ())


def test_site_master_second_person_needs_a_different_holder() -> None:
    site_nurse = credential("C-site-nurse", Role.SITE_MASTER, holder="h-nurse")
    snap = snapshot([EMERGENCY_1, site_nurse])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    decision, _ = run(snap, site_nurse, "door-a01", NOW + SECOND)
    assert decision.reason == Reason.OVERRIDE_NEEDS_SECOND_PERSON


def test_a_user_tap_does_not_disturb_a_pending_override() -> None:
    snap = snapshot([EMERGENCY_1, EMERGENCY_2, USER_A])
    _, snap = run(snap, EMERGENCY_1, "door-a01")
    user, snap = run(snap, USER_A, "door-a01", NOW + SECOND)
    assert user.reason == Reason.ASSIGNED_LOCKER
    done, _ = run(snap, EMERGENCY_2, "door-a01", NOW + 2 * SECOND)
    assert done.reason == Reason.EMERGENCY_OVERRIDE


# ---- lockout ------------------------------------------------------------------------------------


def test_lockout_after_five_denials_then_reopens_after_lockout_s() -> None:
    snap = snapshot([USER_A])
    for n in range(4):
        denied, snap = run(snap, STRANGER, "bank-a", NOW + n * SECOND)
        assert denied.reason == Reason.UNKNOWN_CREDENTIAL and not denied.events
    fifth, snap = run(snap, STRANGER, "bank-a", NOW + 4 * SECOND)
    assert fifth.reason == Reason.UNKNOWN_CREDENTIAL
    [lockout] = fifth.events
    assert lockout.kind == "reader.lockout"
    assert dict(lockout.data)["locked_until"] == "2026-06-10T09:02:04.000Z"
    assert fifth.reader_state.locked_until == NOW + 124 * SECOND

    # the rightful owner is refused too while it lasts; these taps neither extend it nor count
    for n in range(10):
        refused, snap = run(snap, USER_A, "bank-a", NOW + (5 + n * 10) * SECOND)
        assert refused.reason == Reason.READER_LOCKED_OUT and not refused.events
        assert refused.reader_state.locked_until == NOW + 124 * SECOND
    other_reader, _ = run(snap, USER_A, "door-a01", NOW + 10 * SECOND)
    assert other_reader.granted

    after, snap = run(snap, USER_A, "bank-a", NOW + 124 * SECOND)
    assert after.reason == Reason.ASSIGNED_LOCKER
    assert after.reader_state == ReaderState()


def test_counting_restarts_when_a_lockout_ends() -> None:
    settings = PolicySettings(lockout_after=2, lockout_s=10)
    snap = snapshot([], settings=settings)
    _, snap = run(snap, STRANGER, "bank-a", NOW)
    locking, snap = run(snap, STRANGER, "bank-a", NOW + SECOND)
    assert [e.kind for e in locking.events] == ["reader.lockout"]
    first_after, snap = run(snap, STRANGER, "bank-a", NOW + 11 * SECOND)
    assert first_after.reason == Reason.UNKNOWN_CREDENTIAL and not first_after.events
    second_after, _ = run(snap, STRANGER, "bank-a", NOW + 12 * SECOND)
    assert [e.kind for e in second_after.events] == ["reader.lockout"]


def test_a_grant_does_not_reset_the_denial_count() -> None:
    """SPEC §5: otherwise an attacker interleaves his own card with guesses and is never locked out."""
    snap = snapshot([USER_A])
    events: list[str] = []
    for n in range(8):
        denied, snap = run(snap, STRANGER[:-1] + str(n), "bank-a", NOW + (2 * n) * SECOND)
        events += [e.kind for e in denied.events]
        granted, snap = run(snap, USER_A, "bank-a", NOW + (2 * n + 1) * SECOND)
        if "reader.lockout" in events:
            assert granted.reason == Reason.READER_LOCKED_OUT
            break
        assert granted.granted
    assert events == ["reader.lockout"]


def test_emergency_and_site_master_cards_are_decided_at_a_locked_out_reader() -> None:
    site_master = credential("C-site", Role.SITE_MASTER, holder="h-head")
    snap = snapshot([USER_A, EMERGENCY_1, site_master], settings=PolicySettings(emergency_two_person=False))
    for n in range(5):
        _, snap = run(snap, STRANGER, "door-a01", NOW + n * SECOND)
    assert run(snap, USER_A, "door-a01", NOW + 6 * SECOND)[0].reason == Reason.READER_LOCKED_OUT
    emergency, snap = run(snap, EMERGENCY_1, "door-a01", NOW + 7 * SECOND)
    assert emergency.granted and emergency.reason == Reason.EMERGENCY_OVERRIDE
    master, snap = run(snap, site_master, "door-a01", NOW + 8 * SECOND)
    assert master.granted and master.reason == Reason.MASTER_SITE
    assert snap.reader_states["door-a01"].locked_until == NOW + 124 * SECOND  # not extended, not lifted


def test_durations_run_on_the_timer_not_the_wall_clock() -> None:
    """The wall clock steps back an hour (NTP on a Pi without an RTC): the lockout keeps its length."""
    snap = snapshot([USER_A], settings=PolicySettings(lockout_after=2, lockout_s=10))
    for n in range(2):
        decision = decide(snap, tap(STRANGER, "door-a01"), NOW + n * SECOND, timer=NOW + n * SECOND)
        snap = apply(snap, decision)
    stepped_back = NOW - 3600 * SECOND
    still = decide(snap, tap(USER_A, "door-a01"), stepped_back + 2 * SECOND, timer=NOW + 5 * SECOND)
    assert still.reason == Reason.READER_LOCKED_OUT
    over = decide(snap, tap(USER_A, "door-a01"), stepped_back + 12 * SECOND, timer=NOW + 12 * SECOND)
    assert over.granted
    stepped_forward = NOW + 7200 * SECOND
    early = decide(snap, tap(USER_A, "door-a01"), stepped_forward, timer=NOW + 5 * SECOND)
    assert early.reason == Reason.READER_LOCKED_OUT


def test_denials_older_than_the_window_do_not_count() -> None:
    snap = snapshot([])
    for n in range(20):
        denied, snap = run(snap, STRANGER, "bank-a", NOW + n * 16 * SECOND)  # 4 within any 60 s
        assert denied.reason == Reason.UNKNOWN_CREDENTIAL and not denied.events
    assert len(snap.reader_states["bank-a"].denials) == 4


def test_lockout_counts_per_reader() -> None:
    snap = snapshot([])
    for n in range(8):
        reader = "bank-a" if n % 2 else "bank-s"
        denied, snap = run(snap, STRANGER, reader, NOW + n * SECOND)
        assert not denied.events


# ---- validity and schedules in the gateway's zone -----------------------------------------------


def london(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=LONDON).astimezone(UTC)


@pytest.mark.parametrize(
    ("at", "opens"),
    [
        # 2026-03-29: clocks go forward at 01:00 GMT → 02:00 BST; the window is still 07:30-18:00 local
        (datetime(2026, 3, 29, 6, 29, 59, tzinfo=UTC), False),  # 07:29:59 BST
        (datetime(2026, 3, 29, 6, 30, tzinfo=UTC), True),  # 07:30 BST
        (datetime(2026, 3, 29, 7, 30, tzinfo=UTC), True),  # 08:30 BST (07:30 GMT would be too early)
        (datetime(2026, 3, 29, 16, 59, 59, tzinfo=UTC), True),  # 17:59:59 BST
        (datetime(2026, 3, 29, 17, 0, tzinfo=UTC), False),  # 18:00 BST
        # 2026-10-25: clocks go back at 02:00 BST → 01:00 GMT
        (datetime(2026, 10, 25, 7, 29, 59, tzinfo=UTC), False),  # 07:29:59 GMT
        (datetime(2026, 10, 25, 6, 45, tzinfo=UTC), False),  # 06:45 GMT, which would be 07:45 in BST
        (datetime(2026, 10, 25, 7, 30, tzinfo=UTC), True),  # 07:30 GMT
        (datetime(2026, 10, 25, 17, 59, 59, tzinfo=UTC), True),  # 17:59:59 GMT
        (datetime(2026, 10, 25, 18, 0, tzinfo=UTC), False),  # 18:00 GMT
    ],
)
def test_schedule_follows_local_wall_clock_across_dst(at: datetime, opens: bool) -> None:
    every_day = credential("C-day", scope=("A-01",), schedule="Mon-Sun 07:30-18:00")
    decision = decide(snapshot([every_day]), tap(every_day, "door-a01", at), at)
    assert decision.granted is opens
    if not opens:
        assert decision.reason == Reason.OUTSIDE_SCHEDULE


def test_night_shift_window_crosses_midnight_in_local_time() -> None:
    night = credential("C-night", scope=("A-01",), schedule="Fri 22:00-06:00")
    snap = snapshot([night])

    def opens(at: datetime) -> bool:
        return decide(snap, tap(night, "door-a01", at), at).granted

    assert opens(london(2026, 6, 12, 22, 0))  # Friday 22:00
    assert opens(london(2026, 6, 13, 5, 59))  # Saturday 05:59
    assert not opens(london(2026, 6, 13, 6, 0))  # Saturday 06:00
    assert not opens(london(2026, 6, 11, 23, 0))  # Thursday night
    assert not opens(london(2026, 6, 12, 5, 0))  # Friday early morning belongs to Thursday's window


def test_validity_precedes_the_locker_rules() -> None:
    expired_master = credential("C-old-site", Role.SITE_MASTER, valid_until=NOW - SECOND)
    expired_emergency = credential("C-old-em", Role.EMERGENCY, valid_until=NOW - SECOND)
    expired_user = credential("C-old-user", valid_until=NOW - SECOND)
    snap = snapshot([expired_master, expired_emergency, expired_user])
    for cred, reader in ((expired_master, "door-a01"), (expired_emergency, "door-a01"), (expired_user, "lobby")):
        assert decide(snap, tap(cred, reader), NOW).reason == Reason.EXPIRED


def test_unknown_reader_serves_nothing() -> None:
    assert decide(snapshot([USER_A, SITE]), tap(USER_A, "nowhere"), NOW).reason == Reason.NO_LOCKER_HERE
    assert decide(snapshot([USER_A, SITE]), tap(SITE, "nowhere"), NOW).reason == Reason.NO_LOCKER_HERE


def test_snapshot_world_is_consistent() -> None:
    """Guard for the fixtures themselves: every served locker exists."""
    assert all(locker_id in LOCKERS for served in READERS.values() for locker_id in served)
    assert all(isinstance(locker, Locker) for locker in LOCKERS.values())
    assert apply(snapshot([]), decide(snapshot([]), tap(STRANGER, "lobby"), NOW)).reader_states["lobby"].denials


def test_holder_ids_differing_only_in_case_are_one_person() -> None:
    shouting = credential("C-em-1c", Role.EMERGENCY, holder="H-NURSE")
    snap = snapshot([EMERGENCY_1, shouting])
    first, snap = run(snap, EMERGENCY_1, "door-a01")
    assert first.kind == "override.pending"
    second, _ = run(snap, shouting, "door-a01", NOW + SECOND)
    assert second.reason == Reason.OVERRIDE_NEEDS_SECOND_PERSON
