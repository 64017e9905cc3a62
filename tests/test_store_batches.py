"""A large upsert checked and written batch by batch in one transaction (the streaming CSV import):
the same outcome as one batch — the same refusals, or the same stored rows, counts and digest — and
nothing written when any batch is refused."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import MAX_PROBLEMS, BadItem, Store, UpsertRefused, _Stored

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def pupil(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"S-{n:05d}", "uid": f"{0x3C00000000 + n:010X}", "holder": f"p-{n}", "role": "user", **extra}


def streamed(items: Sequence[dict[str, Any] | BadItem]) -> Iterator[dict[str, Any] | BadItem]:
    """The items as a generator: the store cannot know how many there are (as for a CSV file)."""
    yield from items


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path, zone=LONDON) as opened:
        opened.upsert([pupil(99_999, scope="L-1")], by="office", now=NOW)
        yield opened


def test_a_duplicate_id_in_the_last_batch_refuses_everything_and_names_the_item(store: Store) -> None:
    items: list[dict[str, Any] | BadItem] = [pupil(n) for n in range(2_000)]
    items.append({**pupil(7), "uid": "AABBCCDD01"})  # S-00007 again, 1,993 items later
    before = store.version_and_digest()
    with pytest.raises(UpsertRefused) as refused:
        store.merge(streamed(items), by="t", now=NOW, batch_items=300)
    (problem,) = refused.value.problems
    assert (problem.index, problem.field) == (2_000, "id") and "S-00007 is given twice" in problem.message
    assert str(refused.value).startswith("S-00007: id:")
    assert store.version_and_digest() == before and store.count() == 1
    assert store.get("S-00000") is None


def test_a_uid_clash_between_batches_is_caught(store: Store) -> None:
    items = [pupil(n) for n in range(1_000)]
    items[950] = {**items[950], "uid": items[10]["uid"]}
    with pytest.raises(UpsertRefused) as refused:
        store.merge(streamed(items), by="t", now=NOW, batch_items=100)
    (problem,) = refused.value.problems
    assert problem.index == 950 and problem.field == "uid" and "already on credential S-00010" in problem.message
    assert store.count() == 1


def test_a_second_key_in_a_later_batch_is_a_duplicate_and_numbered_in_the_lineage(store: Store) -> None:
    first = pupil(1, holder="amira", scope="L-9")
    again = pupil(2, holder="amira", scope="L-9")
    filler = [pupil(n) for n in range(10, 30)]
    with pytest.raises(UpsertRefused) as refused:
        store.merge(streamed([first, *filler, again]), by="t", now=NOW, batch_items=5)
    assert [p.index for p in refused.value.problems] == [21] and "approved_by" in str(refused.value)
    result = store.merge(
        streamed([first, *filler, {**again, "approved_by": "head"}]), by="t", now=NOW, batch_items=5, keep=False
    )
    assert (result.added, result.credentials) == (22, ())
    second = store.get("S-00002")
    assert second is not None and second.issue_no == 2


def test_a_clean_multi_batch_upsert_lands_as_one_revision_with_every_id_in_the_change_log(store: Store) -> None:
    rev = store.rev
    result = store.merge(streamed([pupil(n) for n in range(1_050)]), by="t", now=NOW, batch_items=100, keep=False)
    assert (result.added, result.updated, result.unchanged, result.rev) == (1_050, 0, 0, rev + 1)
    changes = store.changed_rows(rev)
    assert len(changes.rows) == 1_050
    (entry,) = changes.log
    assert entry.ids == tuple(f"S-{n:05d}" for n in range(1_050)) and entry.action == "upsert"
    again = store.merge(streamed([pupil(n) for n in range(1_050)]), by="t", now=NOW, batch_items=100)
    assert (again.added, again.unchanged, again.rev) == (0, 1_050, rev + 1)


def test_a_dry_run_over_many_batches_writes_nothing(store: Store) -> None:
    before = store.version_and_digest()
    result = store.merge(streamed([pupil(n) for n in range(500)]), by="t", now=NOW, batch_items=64, dry_run=True)
    assert result.added == 500 and store.version_and_digest() == before and store.count() == 1


def test_every_bad_item_is_counted_and_the_first_hundred_kept(store: Store) -> None:
    items: list[dict[str, Any] | BadItem] = [pupil(n, role="usr") for n in range(250)]
    items.insert(3, BadItem("row", "6 cells but the header names 5"))
    with pytest.raises(UpsertRefused) as refused:
        store.merge(streamed(items), by="t", now=NOW, batch_items=40)
    assert refused.value.count == 251 and len(refused.value.problems) == MAX_PROBLEMS
    assert [p.index for p in refused.value.problems] == list(range(MAX_PROBLEMS))
    assert refused.value.problems[3].field == "row"
    assert "(and 250 more bad items)" in str(refused.value)


def test_an_item_giving_a_stored_credential_to_another_holder_updates_it_in_any_batch(store: Store) -> None:
    items = [pupil(n) for n in range(5)]
    items.insert(3, {**pupil(99_999), "holder": "someone-else", "uid": "AABBCCDD01"})
    result = store.merge(streamed(items), by="t", now=NOW, batch_items=2)
    assert (result.added, result.updated) == (5, 1)
    moved = store.get("S-99999")
    assert moved is not None and (moved.holder, moved.issued_by, moved.issue_no) == ("someone-else", "office", 1)


# ---- a card enrolled from what is printed on its fob is the same card as its EM4100 uid -------------


def test_a_printed_form_in_an_earlier_batch_is_the_same_card_as_a_later_batchs_uid(tmp_path: Path) -> None:
    with Store.open(tmp_path, zone=LONDON) as empty:
        items = [pupil(n) for n in range(300)]
        items[10] = {**items[10], "uid": "dec:0013530444"}  # 3C00CE754C's low 32 bits, as printed
        items[250] = {**items[250], "uid": "3C00CE754C"}
        with pytest.raises(UpsertRefused) as refused:
            empty.merge(streamed(items), by="t", now=NOW, batch_items=100)
        (problem,) = refused.value.problems
        assert problem.index == 250 and "same card as credential S-00010" in problem.message
        assert empty.count() == 0


@pytest.mark.parametrize("stored_rows", [5, 400])
def test_a_stored_printed_form_is_the_same_card_in_a_large_or_a_small_upsert(tmp_path: Path, stored_rows: int) -> None:
    """Whether the store is looked through for printed forms first (a small store, a large batch) or
    each card is looked up under them (a large store, a small batch), the clash is found."""
    with Store.open(tmp_path, zone=LONDON) as store:
        store.upsert([pupil(n) for n in range(stored_rows)], by="office", now=NOW)
        store.upsert([{**pupil(90_000), "uid": "206,30028"}], by="office", now=NOW)  # 3C00CE754C's low 24 bits
        for size in (1, 300):
            items = [pupil(n) for n in range(100_000, 100_000 + size)]
            items[-1] = {**items[-1], "uid": "3C00CE754C"}
            with pytest.raises(UpsertRefused) as refused:
                store.merge(streamed(items), by="t", now=NOW, batch_items=100)
            (problem,) = refused.value.problems
            assert problem.index == size - 1 and "same card as credential S-90000" in problem.message


# ---- batches change nothing about the outcome --------------------------------------------------

_IDS = [f"C-{n}" for n in range(8)]
#: dec:0000043521, 0,43521 and 3C0000AA01 are one EM4100 card (printed as a number, as facility,card, read).
_UIDS = ["AA01", "AA02", "AA03", "AA04", "dec:0000043521", "0,43521", "3C0000AA01", "AA00AA01", ""]
_HOLDERS = ["u-1", "u-2", "u-3"]
_SCOPES = ["A-01", "A-02", "A-01;A-02", "K-1", ""]


@st.composite
def upsert_items(draw: st.DrawFn) -> dict[str, Any]:
    physical = draw(st.booleans())
    item: dict[str, Any] = {
        "id": draw(st.sampled_from(_IDS)),
        "holder": draw(st.sampled_from(_HOLDERS)),
        "role": draw(st.sampled_from(["user", "user", "site_master", "usr"])),
        "scope": draw(st.sampled_from(_SCOPES)),
        "status": draw(st.sampled_from(["active", "active", "suspended", "returned"])),
    }
    if physical:
        item.update(kind="physical_key", key_code=draw(st.sampled_from(["9A", "9B"])))
    else:
        item["uid"] = draw(st.sampled_from(_UIDS))
    if draw(st.integers(0, 3)) == 0:
        item["approved_by"] = "head"
    return item


def outcome(store: Store, items: list[dict[str, Any]], batch_items: int) -> object:
    try:
        result = store.merge(streamed(items), by="t", now=NOW, batch_items=batch_items)
    except UpsertRefused as refused:
        return ("refused", refused.count, [(p.index, p.field, p.message) for p in refused.problems], str(refused))
    return (
        (result.added, result.updated, result.unchanged, result.rev),
        result.credentials,
        list(store.all()),
        store.version_and_digest(),
        [(entry.ids, entry.action) for entry in store.changed_rows(0).log],
    )


def outcome_after(stored: list[dict[str, Any]], items: list[dict[str, Any]], batch_items: int) -> object:
    """`outcome` in a store that already holds what it accepted of `stored`, upserted one by one."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder), zone=LONDON) as store:
        for item in stored:
            with contextlib.suppress(UpsertRefused):
                store.upsert([item], by="office", now=NOW)
        return outcome(store, items, batch_items)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stored=st.lists(upsert_items(), max_size=4),
    items=st.lists(upsert_items(), min_size=1, max_size=12),
    batch_items=st.integers(1, 3),
)
def test_batches_give_the_same_outcome_as_one_batch(
    stored: list[dict[str, Any]], items: list[dict[str, Any]], batch_items: int
) -> None:
    assert outcome_after(stored, items, len(items)) == outcome_after(stored, items, batch_items)


@contextlib.contextmanager
def every_check_the_long_way() -> Iterator[None]:
    """The import's shortcuts off: each item's fields checked one by one, each id looked up in the store
    even when it held nothing at the start, each card looked up under its printed-form keys, each item's
    lineage and duplicates looked for even when it is a holder's first."""
    with (
        mock.patch("gateway.credential_input._row_fields", return_value=None),
        mock.patch("gateway.store._holds_nothing", return_value=False),
        mock.patch.object(_Stored, "printed_forms", return_value=True),
        mock.patch("gateway.issuance._first_key", return_value=False),
    ):
        yield


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stored=st.lists(upsert_items(), max_size=4),
    items=st.lists(upsert_items(), min_size=1, max_size=12),
    batch_items=st.integers(1, 3),
)
def test_the_shortcuts_refuse_and_store_exactly_what_checking_everything_does(
    stored: list[dict[str, Any]], items: list[dict[str, Any]], batch_items: int
) -> None:
    shortcuts = outcome_after(stored, items, batch_items)
    with every_check_the_long_way():
        assert shortcuts == outcome_after(stored, items, batch_items)
