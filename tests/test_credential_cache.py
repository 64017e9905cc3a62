"""The daemon's credential view follows the store incrementally, and never applies stale changes."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from gateway.credential_cache import CredentialCache
from gateway.model import Status, Tap
from gateway.policy import find_credential
from gateway.store import Store
from gateway.uid import EM4100

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def card(ident: str, uid: str, locker: str = "A-01") -> dict[str, object]:
    return {"id": ident, "uid": uid, "holder": f"h-{ident}", "role": "user", "scope": [locker]}


def test_follows_adds_changes_and_removals(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        cache = CredentialCache()
        cache.load(store)
        assert cache.by_uid.get("3C00CE754C") is not None
        store.upsert([card("C-2", "14008EC793", "A-02")], by="cli", now=NOW)
        store.set_status("C-1", Status.RETURNED, by="cli", now=NOW)
        entries = cache.refresh(store)
        assert [e.action for e in entries] == ["upsert", "set_status"]
        assert cache.by_uid["3C00CE754C"].status == Status.RETURNED
        assert cache.by_uid["14008EC793"].holder == "h-C-2"
        store.remove("C-1", by="cli", now=NOW)
        cache.refresh(store)
        assert cache.by_uid.get("3C00CE754C") is None and "C-1" not in cache.by_id
        assert cache.refresh(store) == []


def test_a_replaced_card_number_no_longer_opens(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        cache = CredentialCache()
        cache.load(store)
        store.replace("C-1", "62E3086CED", by="desk", now=NOW)
        cache.refresh(store)
        assert cache.by_uid["3C00CE754C"].status == Status.REPLACED
        assert cache.by_uid["62E3086CED"].id == "C-1-2"


def test_changes_read_before_a_newer_refresh_are_not_applied(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        cache = CredentialCache()
        cache.load(store)
        from_rev = cache.rev
        store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        early = store.changed_rows(from_rev)  # read on the worker thread...
        store.set_status("C-1", Status.LOST, by="mqtt", now=NOW)
        cache.refresh(store)  # ...while an MQTT change was applied directly
        assert cache.apply(early, from_rev) is None
        assert cache.by_uid["3C00CE754C"].status == Status.LOST


def em4100_tap(uid: str) -> Tap:
    return Tap(reader="R-1", uid=uid, at=NOW, family=EM4100)


def test_loaded_at_start_up_cards_are_found_as_enrolled_printed_forms_by_their_low_bits(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert(
            [
                card("EXACT", "3C00CE754C"),
                card("FOB-DEC", "dec:0000065536"),  # printed on an EM4100 fob: low 32 bits 00010000
                card("FOB-FC", "7,12"),  # facility 7, card 12: low 24 bits 07000C
                card("WIEGAND", "5A0144"),  # typed in hex: exact only
            ],
            by="t",
            now=NOW,
        )
        cache = CredentialCache()
        cache.load(store)  # what the daemon does at start-up, in one read
        found = partial(find_credential, cache.by_uid)
        assert found(em4100_tap("3C00CE754C")).id == "EXACT"  # type: ignore[union-attr]
        assert found(em4100_tap("AB00010000")).id == "FOB-DEC"  # type: ignore[union-attr]
        assert found(em4100_tap("FFFF07000C")).id == "FOB-FC"  # type: ignore[union-attr]
        assert found(em4100_tap("00115A0144")) is None  # a hex-typed short uid never matches low bits
        assert found(Tap(reader="R-1", uid="00010000", at=NOW)).id == "FOB-DEC"  # type: ignore[union-attr]
        assert len(cache.by_id) == 4 and "WIEGAND" in cache.by_id
        # A change after the load: the printed fob replaced by a card read in full, then removed.
        store.replace("FOB-DEC", "AB00010000", by="desk", now=NOW)
        cache.refresh(store)
        assert found(em4100_tap("AB00010000")).id == "FOB-DEC-2"  # type: ignore[union-attr]
        assert found(em4100_tap("CD00010000")).status == Status.REPLACED  # type: ignore[union-attr]
        store.remove("FOB-DEC", by="desk", now=NOW)
        cache.refresh(store)
        assert found(em4100_tap("CD00010000")) is None and "FOB-DEC" not in cache.by_id
