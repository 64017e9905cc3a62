"""The credential store against real SQLite files: issuing, duplicate control, replacement, removal,
snapshots, incremental change feeds and the published digest (SPEC §4, §7)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_changes import changes_since

from gateway.credential_input import FieldError, parse_credential_fields
from gateway.model import Kind, Role, Status
from gateway.sitekey import load_or_create_site_key, uid_hash
from gateway.store import Store, StoreError, UpsertRefused
from gateway.uid import normalise_uid

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def card(ident: str, uid: str, holder: str = "u-1", scope: str | list[str] = "A-01", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "uid": uid, "holder": holder, "role": "user", "scope": scope, **extra}


def key(ident: str, code: str, holder: str = "u-1", scope: str = "K-01", **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "holder": holder,
        "role": "user",
        "kind": "physical_key",
        "key_code": code,
        "scope": scope,
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path, zone=LONDON) as opened:
        yield opened


# ---- issuing -----------------------------------------------------------------------------------


def test_a_new_credential_is_stored_with_its_issue_details(store: Store) -> None:
    (stored,) = store.upsert([card("C-1", "3c00ce754c", scope="A-01;A-02")], by="office", now=NOW)
    assert store.get("C-1") == stored
    assert stored.uid == "3C00CE754C"
    assert stored.scope == ("A-01", "A-02")
    assert (stored.status, stored.kind, stored.role) == (Status.ACTIVE, Kind.CARD, Role.USER)
    assert (stored.issue_no, stored.issued_at, stored.issued_by) == (1, NOW, "office")
    assert store.count() == 1 and store.rev == 1


def test_an_update_keeps_issue_number_and_issue_details(store: Store) -> None:
    store.upsert([card("C-1", "3C00CE754C")], by="office", now=NOW)
    later = NOW + timedelta(days=3)
    (updated,) = store.upsert([card("C-1", "3C00CE754C", scope="A-07", deposit="10 GBP")], by="mqtt", now=later)
    assert updated.scope == ("A-07",) and updated.deposit == "10 GBP"
    assert (updated.issue_no, updated.issued_at, updated.issued_by) == (1, NOW, "office")


def test_fob_numbers_are_stored_in_canonical_form(store: Store) -> None:
    (stored,) = store.upsert([card("C-1", "dec:0013530444")], by="t", now=NOW)
    assert stored.uid == "00CE754C"


def test_times_without_offset_are_read_in_the_gateway_zone(store: Store) -> None:
    (stored,) = store.upsert(
        [card("C-1", "AA01", valid_from="2026-07-01T08:00", valid_until="2026-07-31")], by="t", now=NOW
    )
    # British Summer Time: 08:00 local is 07:00 UTC; a date-only valid_until covers the whole of 31 July.
    assert stored.valid_from == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert stored.valid_until == datetime(2026, 7, 31, 23, 0, tzinfo=UTC)
    assert store.get("C-1") == stored


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (card("C-1", "AA01", valid_from="2026-05-02", valid_until="2026-05-01"), "valid_until"),
        (card("C-1", "AA01", valid_from="2026-05-02T10:00", valid_until="2026-05-02T10:00"), "valid_until"),
        (card("C-1", "not-a-card"), "uid"),
        (card("C-1", "AA01", nickname="x"), "nickname"),
        ({"id": "C-1", "uid": "AA01", "role": "user"}, "holder"),
        (card("", "AA01"), "id"),
        (card("C\x07", "AA01"), "id"),
        (card("C-1", "AA01", holder="h" * 129), "holder"),
        (card("C-1", "AA01", role="janitor"), "role"),
        (card("C-1", "AA01", status="misplaced"), "status"),
        (card("C-1", "AA01", schedule="Mon-Fri 25:00-18:00"), "schedule"),
        (card("C-1", "AA01", valid_from="next tuesday"), "valid_from"),
        (card("C-1", "AA01", key_code="7"), "key_code"),
        ({"id": "K-1", "uid": "AA01", "holder": "h", "role": "user", "kind": "physical_key", "key_code": "7"}, "uid"),
        ({"id": "K-1", "holder": "h", "role": "user", "kind": "physical_key"}, "key_code"),
        ({"id": "M-1", "uid": "AA01", "holder": "h", "role": "section_master"}, "scope"),
    ],
)
def test_a_bad_field_is_refused_naming_it(store: Store, item: dict[str, Any], field: str) -> None:
    with pytest.raises(UpsertRefused) as refused:
        store.upsert([item], by="t", now=NOW)
    assert refused.value.problems[0].field == field
    assert f"{field}: " in str(refused.value)
    assert store.count() == 0 and store.rev == 0


def test_a_batch_is_all_or_nothing_and_every_bad_item_is_reported(store: Store) -> None:
    batch = [card("C-1", "AA01"), card("C-2", "zz"), card("C-3", "AA03", holder="u-3"), card("C-4", "AA04", role="x")]
    with pytest.raises(UpsertRefused) as refused:
        store.upsert(batch, by="t", now=NOW)
    assert [(p.index, p.field) for p in refused.value.problems] == [(1, "uid"), (3, "role")]
    assert str(refused.value).startswith("C-2: uid: ")
    assert "and 1 more bad item" in str(refused.value)
    assert store.count() == 0 and store.rev == 0


def test_the_same_id_twice_in_one_batch_is_refused(store: Store) -> None:
    with pytest.raises(UpsertRefused, match="C-1 is given twice"):
        store.upsert([card("C-1", "AA01"), card("C-1", "AA02")], by="t", now=NOW)


def test_a_dry_run_checks_everything_and_changes_nothing(store: Store) -> None:
    result = store.merge([card("C-1", "AA01")], by="t", now=NOW, dry_run=True)
    assert result.added == 1 and store.count() == 0 and store.rev == 0


# ---- uids ----------------------------------------------------------------------------------------


def test_a_uid_on_another_credential_is_refused_and_masked(store: Store) -> None:
    store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
    with pytest.raises(StoreError) as refused:
        store.upsert([card("C-2", "3C00CE754C", holder="u-2")], by="t", now=NOW)
    message = str(refused.value)
    assert "C-1" in message and "C-2" in message and "…754C" in message
    assert "3C00CE754C" not in message


def test_a_bad_uid_is_not_echoed_in_full(store: Store) -> None:
    with pytest.raises(StoreError) as refused:
        store.upsert([card("C-1", "3C00CE754CXZ")], by="t", now=NOW)
    assert "3C00CE754C" not in str(refused.value)


def test_a_uid_can_move_between_credentials_within_one_batch(store: Store) -> None:
    store.upsert([card("C-1", "AA01"), card("C-2", "BB02", holder="u-2")], by="t", now=NOW)
    store.upsert([card("C-1", "CC03"), card("C-2", "AA01", holder="u-2")], by="t", now=NOW)
    assert store.get("C-2").uid == "AA01"  # type: ignore[union-attr]


# ---- duplicate control ---------------------------------------------------------------------------


def test_a_second_active_key_for_the_same_holder_and_locker_needs_approval(store: Store) -> None:
    store.upsert([card("C-1", "AA01", scope="A-01;A-02")], by="t", now=NOW)
    with pytest.raises(StoreError) as refused:
        store.upsert([card("C-2", "AA02", scope="A-02")], by="t", now=NOW)
    assert "C-1" in str(refused.value) and "C-2" in str(refused.value) and "approved_by" in str(refused.value)
    (second,) = store.upsert([card("C-2", "AA02", scope="A-02", approved_by="head")], by="t", now=NOW)
    assert second.issue_no == 2 and second.approved_by == "head"
    assert [k.credential_id for k in store.keys_for_locker("A-02")] == ["C-1", "C-2"]
    assert {locker: len(store.keys_for_locker(locker)) for locker in ("A-01", "A-02")} == {"A-01": 1, "A-02": 2}


def test_keys_for_other_lockers_or_other_holders_are_not_duplicates(store: Store) -> None:
    store.upsert([card("C-1", "AA01", scope="A-01")], by="t", now=NOW)
    store.upsert([card("C-2", "AA02", scope="A-02"), card("C-3", "AA03", holder="u-2", scope="A-01")], by="t", now=NOW)
    assert [c.issue_no for c in store.all()] == [1, 1, 1]


def test_a_returned_key_does_not_count_as_a_duplicate(store: Store) -> None:
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)
    store.set_status("C-1", Status.RETURNED, by="t", now=NOW)
    (again,) = store.upsert([card("C-2", "AA02")], by="t", now=NOW)
    assert again.issue_no == 2  # the holder's second key for A-01, though the first is back


def test_duplicate_control_applies_within_a_batch(store: Store) -> None:
    with pytest.raises(UpsertRefused) as refused:
        store.upsert([card("C-1", "AA01"), card("C-2", "AA02")], by="t", now=NOW)
    assert [(p.index, p.field) for p in refused.value.problems] == [(1, "approved_by")]
    stored = store.upsert([card("C-1", "AA01"), card("C-2", "AA02", approved_by="head")], by="t", now=NOW)
    assert [c.issue_no for c in stored] == [1, 2]


def test_reimporting_an_approved_duplicate_set_is_not_refused(store: Store) -> None:
    batch = [card("C-1", "AA01"), card("C-2", "AA02", approved_by="head")]
    store.upsert(batch, by="t", now=NOW)
    result = store.merge(batch, by="t", now=NOW + timedelta(hours=1))
    assert result.unchanged == 2 and store.rev == 1
    store.upsert([card("C-1", "AA01", deposit="5")], by="t", now=NOW)  # the original may change


def test_reactivating_a_suspended_key_beside_another_needs_approval(store: Store) -> None:
    store.upsert([card("C-1", "AA01", status="suspended"), card("C-2", "AA02", approved_by="head")], by="t", now=NOW)
    with pytest.raises(UpsertRefused, match="approved_by"):
        store.upsert([card("C-1", "AA01")], by="t", now=NOW)


def test_a_further_physical_key_cut_to_the_same_code_needs_approval(store: Store) -> None:
    store.upsert([key("K-1", "9A-114")], by="t", now=NOW)
    with pytest.raises(StoreError) as refused:
        store.upsert([key("K-2", "9A-114", holder="u-2")], by="t", now=NOW)
    assert "K-1" in str(refused.value) and "K-2" in str(refused.value)
    (second,) = store.upsert([key("K-2", "9A-114", holder="u-2", approved_by="estates")], by="t", now=NOW)
    assert second.uid == "" and second.issue_no == 2
    assert [(k.credential_id, k.holder, k.issue_no) for k in store.keys_for_code("9A-114")] == [
        ("K-1", "u-1", 1),
        ("K-2", "u-2", 2),
    ]
    assert {"9A-114": len(store.keys_for_code("9A-114"))} == {"9A-114": 2}
    store.set_status("K-1", "lost", by="t", now=NOW)
    assert len(store.keys_for_code("9A-114")) == 2  # a lost key is still out there
    store.set_status("K-1", "returned", by="t", now=NOW)
    assert [k.credential_id for k in store.keys_for_code("9A-114")] == ["K-2"]


# ---- status, replacement, removal ---------------------------------------------------------------


def test_set_status_changes_and_logs_with_reason(store: Store) -> None:
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)
    lost = store.set_status("C-1", "LOST", by="desk", now=NOW, reason="left on the bus")
    assert lost.status is Status.LOST and store.get("C-1") == lost
    entry = changes_since(store, 1).log[0]
    assert (entry.action, entry.by, entry.ids, entry.reason) == ("set_status", "desk", ("C-1",), "left on the bus")


def test_set_status_refuses_unknown_ids_and_statuses(store: Store) -> None:
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)
    with pytest.raises(StoreError, match="no credential with id 'C-9'"):
        store.set_status("C-9", "lost", by="t", now=NOW)
    with pytest.raises(StoreError, match="unknown status 'gone'"):
        store.set_status("C-1", "gone", by="t", now=NOW)


def test_replace_retires_the_old_key_and_issues_its_successor(store: Store) -> None:
    store.upsert(
        [card("C-1", "AA01", scope="A-01;A-02", valid_until="2026-07-31", schedule="Mon-Fri 07:30-18:00")],
        by="t",
        now=NOW,
    )
    store.set_status("C-1", "lost", by="t", now=NOW)
    later = NOW + timedelta(days=1)
    successor = store.replace("C-1", "bb:02:cc:03", by="desk", now=later)
    old = store.get("C-1")
    assert old is not None and old.status is Status.REPLACED
    assert successor.id == "C-1-2" and successor.uid == "BB02CC03" and successor.status is Status.ACTIVE
    assert (successor.holder, successor.role, successor.kind, successor.scope) == (
        old.holder,
        old.role,
        old.kind,
        old.scope,
    )
    assert (successor.valid_until, successor.schedule) == (old.valid_until, old.schedule)
    assert (successor.issue_no, successor.issued_at, successor.issued_by) == (2, later, "desk")
    assert store.get("C-1-2") == successor
    third = store.replace("C-1-2", "DD04", by="desk", now=later, new_id="C-1-third")
    assert (third.id, third.issue_no) == ("C-1-third", 3)


def test_replace_refusals(store: Store) -> None:
    store.upsert(
        [card("C-1", "AA01"), card("C-1-2", "AA02", holder="u-2"), card("C-3", "AA03", holder="u-3")], by="t", now=NOW
    )
    with pytest.raises(StoreError, match="C-1-2 already exists"):
        store.replace("C-1", "BB01", by="t", now=NOW)
    with pytest.raises(StoreError, match="already on credential C-3"):
        store.replace("C-1", "AA03", by="t", now=NOW, new_id="C-1-new")
    store.set_status("C-3", "returned", by="t", now=NOW)
    with pytest.raises(StoreError, match="C-3 is returned"):
        store.replace("C-3", "BB03", by="t", now=NOW)
    with pytest.raises(StoreError, match="no credential"):
        store.replace("C-9", "BB09", by="t", now=NOW)
    assert store.get("C-1").status is Status.ACTIVE  # type: ignore[union-attr]


def test_replacing_a_physical_key_cuts_another_to_the_same_code(store: Store) -> None:
    store.upsert([key("K-1", "9A-114")], by="t", now=NOW)
    successor = store.replace("K-1", "", by="t", now=NOW)
    assert (successor.id, successor.uid, successor.key_code, successor.issue_no) == ("K-1-2", "", "9A-114", 2)
    with pytest.raises(StoreError, match="physical key"):
        store.replace("K-1-2", "AA01", by="t", now=NOW)


def test_remove_refuses_outstanding_keys_unless_forced(store: Store) -> None:
    store.upsert([card("C-1", "AA01"), card("C-2", "AA02", holder="u-2")], by="t", now=NOW)
    for status in ("active", "suspended", "lost"):
        store.set_status("C-1", status, by="t", now=NOW)
        with pytest.raises(StoreError, match=f"C-1 is still {status}"):
            store.remove("C-1", by="t", now=NOW)
    store.set_status("C-1", "returned", by="t", now=NOW)
    store.remove("C-1", by="t", now=NOW)
    store.remove("C-2", by="t", now=NOW, force=True)
    assert store.count() == 0
    assert store.keys_for_locker("A-01") == []
    with pytest.raises(StoreError, match="no credential"):
        store.remove("C-1", by="t", now=NOW)


# ---- change feed, snapshot, digest -----------------------------------------------------------------


def test_changes_since_gives_only_what_changed_after_a_revision(store: Store) -> None:
    store.upsert([card("C-1", "AA01"), card("C-2", "AA02", holder="u-2")], by="t", now=NOW)
    seen = store.rev
    store.set_status("C-1", "returned", by="desk", now=NOW)
    store.remove("C-1", by="desk", now=NOW)
    store.upsert([card("C-3", "AA03", holder="u-3")], by="mqtt", now=NOW)
    changes = changes_since(store, seen)
    assert changes.rev == store.rev == seen + 3
    assert [c.id for c in changes.upserted] == ["C-3"]
    assert changes.removed == ("C-1",)
    assert [(e.action, e.ids) for e in changes.log] == [
        ("set_status", ("C-1",)),
        ("remove", ("C-1",)),
        ("upsert", ("C-3",)),
    ]
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)  # back again: no longer a removal
    assert changes_since(store, seen).removed == ()
    assert changes_since(store, store.rev) == type(changes)(store.rev, (), (), ())


def test_an_unchanged_upsert_does_not_bump_the_revision(store: Store) -> None:
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)
    result = store.merge([card("C-1", "aa01")], by="t", now=NOW + timedelta(days=1))
    assert (result.added, result.updated, result.unchanged, result.rev) == (0, 0, 1, 1)


def test_replace_all_makes_the_set_exactly_the_snapshot(store: Store) -> None:
    store.upsert([card("C-1", "AA01"), card("C-2", "AA02", holder="u-2"), key("K-1", "7")], by="t", now=NOW)
    seen = store.rev
    count = store.replace_all(
        [card("C-2", "AA01", holder="u-2", scope="B-01"), card("C-3", "AA02", holder="u-3")], by="central", now=NOW
    )
    assert count == 2
    assert {c.id: c.uid for c in store.all()} == {"C-2": "AA01", "C-3": "AA02"}
    changes = changes_since(store, seen)
    assert sorted(changes.removed) == ["C-1", "K-1"] and changes.log[0].action == "snapshot"
    assert store.get("C-2").issued_at == NOW  # type: ignore[union-attr]
    with pytest.raises(StoreError):
        store.replace_all([card("C-4", "AA09"), card("C-5", "AA09", holder="u-5")], by="central", now=NOW)
    assert store.count() == 2


def _expected_digest(records: list[dict[str, Any]]) -> str:
    """The recipe as an integrator would write it from the store's documentation."""
    total = 0
    for record in records:
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        total += int(hashlib.sha256(canonical).hexdigest(), 16)
    return f"{total % 2**256:064x}"


def _records(store: Store) -> list[dict[str, Any]]:
    """Every credential's upsert fields as the digest recipe reads them (from `list --csv`-like data)."""

    def utc(moment: datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return [
        {
            "id": c.id,
            "uid": c.uid,
            "holder": c.holder,
            "role": c.role.value,
            "scope": list(c.scope),
            "kind": c.kind.value,
            "status": c.status.value,
            "valid_from": utc(c.valid_from),
            "valid_until": utc(c.valid_until),
            "schedule": c.schedule,
            "key_code": c.key_code,
            "deposit": c.deposit,
            "approved_by": c.approved_by,
        }
        for c in store.all()
    ]


def test_the_digest_is_what_a_central_system_computes_from_what_it_sent(store: Store) -> None:
    store.upsert(
        [card("C-2", "AA02", holder="u-2", valid_until="2026-07-31"), key("K-1", "7", deposit="5")], by="t", now=NOW
    )
    version, digest = store.version_and_digest()
    blank = dict.fromkeys(("valid_from", "valid_until", "schedule", "key_code", "deposit", "approved_by"))
    common = {**blank, "role": "user", "status": "active"}
    expected = _expected_digest(
        [
            {**common, "id": "C-2", "uid": "AA02", "holder": "u-2", "scope": ["A-01"], "kind": "card"}
            | {"valid_until": "2026-07-31T23:00:00Z"},
            {**common, "id": "K-1", "uid": "", "holder": "u-1", "scope": ["K-01"], "kind": "physical_key"}
            | {"key_code": "7", "deposit": "5"},
        ]
    )
    assert (version, digest) == (1, expected)


def test_the_digest_follows_content_not_history(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a", zone=LONDON) as a, Store.open(tmp_path / "b", zone=LONDON) as b:
        a.upsert([card("C-1", "AA01"), card("C-2", "AA02", holder="u-2")], by="x", now=NOW)
        b.upsert([card("C-2", "AA02", holder="u-2")], by="y", now=NOW + timedelta(days=1))
        b.upsert([card("C-1", "AA01", status="lost")], by="y", now=NOW)
        assert a.version_and_digest()[1] != b.version_and_digest()[1]
        b.set_status("C-1", "active", by="y", now=NOW)
        assert a.version_and_digest()[1] == b.version_and_digest()[1]
        assert a.version_and_digest()[0] != b.version_and_digest()[0]


def test_an_empty_set_has_the_zero_digest(store: Store) -> None:
    assert store.version_and_digest() == (0, "0" * 64)
    store.upsert([card("C-1", "AA01")], by="t", now=NOW)
    store.remove("C-1", by="t", now=NOW, force=True)
    assert store.version_and_digest() == (2, "0" * 64)


def test_the_digest_stays_right_through_every_kind_of_change(store: Store) -> None:
    steps = [
        lambda: store.upsert(
            [card("C-1", "AA01"), card("C-2", "AA02", holder="u-2"), key("K-1", "7")], by="t", now=NOW
        ),
        lambda: store.upsert([card("C-1", "AA01", scope="A-01;A-09", valid_until="2027-01-01")], by="t", now=NOW),
        lambda: store.set_status("C-2", "lost", by="t", now=NOW),
        lambda: store.replace("C-2", "BB02", by="t", now=NOW),
        lambda: store.replace("K-1", "", by="t", now=NOW),
        lambda: store.remove("C-2", by="t", now=NOW),
        lambda: store.replace_all([card("C-1", "CC01"), card("C-9", "AA01", holder="u-9")], by="t", now=NOW),
    ]
    for step in steps:
        step()
        assert store.version_and_digest()[1] == _expected_digest(_records(store))


def test_a_schema_1_store_is_migrated_with_its_credentials(tmp_path: Path) -> None:
    from gateway.credential_rows import MIGRATIONS

    db = sqlite3.connect(tmp_path / "credentials.db")
    for statement in MIGRATIONS[0]:
        assert isinstance(statement, str)
        db.execute(statement)
    db.execute(
        "INSERT INTO credentials (id, uid, holder, role, scope, status, kind, issue_no, rev) "
        "VALUES ('C-1', 'AA01', 'u-1', 'user', '[\"A-01\"]', 'active', 'card', 1, 1)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        assert store.get("C-1") is not None
        assert store.version_and_digest()[1] == _expected_digest(_records(store)) != "0" * 64
        store.upsert([card("C-2", "AA02", holder="u-2")], by="t", now=NOW)
        assert store.version_and_digest()[1] == _expected_digest(_records(store))


def _as_schema_3(path: Path, dropped: str) -> None:
    """Turn a current store into a schema-3 store of one kind: without `single_use` (migration 3 was
    `uid_form`) or without `uid_form` (a build that numbered `single_use` 3)."""
    db = sqlite3.connect(path / "credentials.db")
    db.execute(f"ALTER TABLE credentials DROP COLUMN {dropped}")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()


@pytest.mark.parametrize("dropped", ["single_use", "uid_form"])
def test_a_schema_3_store_of_either_kind_is_migrated_to_4(tmp_path: Path, dropped: str) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card("C-1", "AA01"), card("C-2", "5A0144", holder="u-2")], by="t", now=NOW)
        if dropped == "uid_form":  # that build had visitor codes but no printed forms
            visitor = card("V-1", "123456789012", holder="v-1", kind="mobile", single_use=True)
            store.upsert([visitor], by="t", now=NOW)
        else:  # that build had printed forms but no visitor codes
            store.upsert([card("P-1", "dec:0013530444", holder="u-3")], by="t", now=NOW)
        digest = store.version_and_digest()
    _as_schema_3(tmp_path, dropped)
    with Store.open(tmp_path) as store:
        assert store.version_and_digest() == digest
        if dropped == "uid_form":
            visitor_after = store.get("V-1")
            assert visitor_after is not None and visitor_after.single_use and visitor_after.uid_form == ""
        else:
            printed = store.get("P-1")
            assert printed is not None and printed.uid_form == "dec" and not printed.single_use
        store.upsert([card("C-3", "AA03", holder="u-4")], by="t", now=NOW)
        assert store.version_and_digest()[1] != digest[1]
    db = sqlite3.connect(tmp_path / "credentials.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert {"uid_form", "single_use"} <= {row[1] for row in db.execute("PRAGMA table_info(credentials)")}
    db.close()


# ---- files and processes ---------------------------------------------------------------------------


def test_two_connections_see_each_others_changes(tmp_path: Path) -> None:
    with Store.open(tmp_path) as daemon, Store.open(tmp_path) as cli:
        cli.upsert([card("C-1", "AA01")], by="cli", now=NOW)
        assert daemon.rev == 1 and daemon.get("C-1") is not None
        with pytest.raises(StoreError, match="C-1"):
            daemon.upsert([card("C-2", "AA02")], by="mqtt", now=NOW)  # the duplicate check sees the CLI's C-1


def test_the_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "credentials.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer than this lockergw knows"):
        Store.open(tmp_path)


def test_a_state_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(blocker / "state")


# ---- site key --------------------------------------------------------------------------------------


def test_the_site_key_is_created_once_private_and_stable(tmp_path: Path) -> None:
    first = load_or_create_site_key(tmp_path)
    assert len(first) == 32
    assert (tmp_path / "site.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_site_key(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["site.key"]  # no temporary left behind
    digest = uid_hash(first, "3C00CE754C")
    assert len(digest) == 64 and digest == uid_hash(first, "3C00CE754C") != uid_hash(first, "3C00CE754D")
    assert uid_hash(load_or_create_site_key(tmp_path / "other"), "3C00CE754C") != digest


# ---- properties --------------------------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=20).filter(
    lambda text: text.strip() == text and ";" not in text
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ident=_names,
    holder=_names,
    uid=st.binary(min_size=4, max_size=10).map(bytes.hex),
    scope=st.lists(_names, max_size=4, unique=True),
    role=st.sampled_from(["user", "site_master", "emergency"]),
    status=st.sampled_from([s.value for s in Status]),
    start=st.none() | st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)),
)
def test_what_is_stored_is_what_is_read_back(
    tmp_path_factory: pytest.TempPathFactory,
    ident: str,
    holder: str,
    uid: str,
    scope: list[str],
    role: str,
    status: str,
    start: date | None,
) -> None:
    item = {"id": ident, "uid": uid, "holder": holder, "role": role, "scope": scope, "status": status}
    if start is not None:
        item |= {"valid_from": start.isoformat(), "valid_until": (start + timedelta(days=30)).isoformat()}
    with Store.open(tmp_path_factory.mktemp("s"), zone=LONDON) as fresh:
        (stored,) = fresh.upsert([item], by="t", now=NOW)
        assert fresh.get(ident) == stored == next(fresh.all())
        # (a 10-character all-digit uid is read as a printed fob number: gateway.uid's rule)
        assert (stored.id, stored.holder, stored.uid, stored.scope) == (ident, holder, normalise_uid(uid), tuple(scope))
        assert changes_since(fresh, 0).upserted == (stored,)


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 31)),
    zone=st.sampled_from(["Europe/London", "America/Santiago", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]),
)
def test_a_date_only_validity_covers_exactly_that_local_day(day: date, zone: str) -> None:
    tz = ZoneInfo(zone)
    fields = parse_credential_fields(card("C-1", "AA01", valid_from=day.isoformat(), valid_until=day.isoformat()), tz)
    start, end = fields["valid_from"], fields["valid_until"]
    assert start is not None and end is not None
    assert start.astimezone(tz).date() == day
    assert (end - timedelta(microseconds=1)).astimezone(tz).date() == day
    assert end.astimezone(tz).date() == day + timedelta(days=1)
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)


@given(text=st.text(max_size=30))
def test_any_text_as_a_time_either_parses_or_names_the_field(text: str) -> None:
    try:
        parse_credential_fields(card("C-1", "AA01", valid_from=text), UTC)
    except FieldError as exc:
        assert exc.field == "valid_from"


def test_the_same_card_in_another_form_is_a_uid_clash(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card("C-1", "3C00CE754C")], by="cli", now=NOW)
        for index, form in enumerate(("dec:0013530444", "206,30028")):
            with pytest.raises(StoreError, match="same card as credential C-1"):
                store.upsert([card(f"C-{index + 2}", form, holder=f"other-{index}")], by="cli", now=NOW)
    with Store.open(tmp_path / "import") as store:  # the three forms of one fob, imported together
        items = [card(f"F-{n}", text, holder=f"h-{n}") for n, text in enumerate(("3C00CE754C", "dec:0013530444"))]
        with pytest.raises(StoreError, match="uid"):
            store.upsert(items, by="cli", now=NOW)
        store.upsert([card("P-1", "dec:0013530444")], by="cli", now=NOW)
        with pytest.raises(StoreError, match="same card as credential P-1"):
            store.upsert([card("P-2", "206,30028", holder="h-2")], by="cli", now=NOW)
        # a different EM4100 card sharing only its low 24 bits with nothing printed is no clash
        store.upsert(
            [card("E-1", "3D11AABBCC", holder="h-3"), card("E-2", "3D22AABBCC", holder="h-4")], by="cli", now=NOW
        )
        assert store.get("P-1") is not None and store.get("P-1").uid_form == "dec"  # type: ignore[union-attr]
