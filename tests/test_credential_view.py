"""The daemon's credential view: cards are found in the store as committed; its change log is followed once."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from gateway.credential_view import CredentialView
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
        view = CredentialView()
        view.load(store)
        assert view.by_uid.get("3C00CE754C") is not None
        store.upsert([card("C-2", "14008EC793", "A-02")], by="cli", now=NOW)
        store.set_status("C-1", Status.RETURNED, by="cli", now=NOW)
        entries = view.refresh(store)
        assert [e.action for e in entries] == ["upsert", "set_status"]
        assert view.by_uid["3C00CE754C"].status == Status.RETURNED
        assert view.by_uid["14008EC793"].holder == "h-C-2"
        store.remove("C-1", by="cli", now=NOW)
        view.refresh(store)
        assert view.by_uid.get("3C00CE754C") is None and "C-1" not in view.by_id
        assert view.refresh(store) == []


def test_a_replaced_card_number_no_longer_opens(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        view = CredentialView()
        view.load(store)
        store.replace("C-1", "62E3086CED", by="desk", now=NOW)
        view.refresh(store)
        assert view.by_uid["3C00CE754C"].status == Status.REPLACED
        assert view.by_uid["62E3086CED"].id == "C-1-2"


def test_a_change_committed_elsewhere_is_in_force_at_the_next_look_up(tmp_path: Path) -> None:
    """The CLI writes through its own connection; the daemon's view finds the new card at once, and the
    old number of a moved card no longer finds anyone — before the follower has journaled anything."""
    with Store.open(tmp_path) as daemon_store, Store.open(tmp_path) as cli:
        cli.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        view = CredentialView()
        view.load(daemon_store)
        assert view.count() == 1 and list(view.by_uid) == ["3C00CE754C"]
        cli.upsert([card("C-1", "14008EC793"), card("C-2", "62E3086CED", "A-02")], by="cli", now=NOW)
        assert view.by_uid.get("3C00CE754C") is None
        assert view.by_uid["14008EC793"].id == "C-1" and "C-2" in view.by_id
        assert view.count() == 2 and sorted(view.by_id) == ["C-1", "C-2"]
        assert [entry.action for entry in view.refresh(daemon_store)] == ["upsert"]


def test_changes_read_before_a_newer_refresh_are_not_applied(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        view = CredentialView()
        view.load(store)
        from_rev = view.rev
        store.upsert([card("C-1", "3C00CE754C")], by="t", now=NOW)
        early = store.change_log(from_rev)  # read on the worker thread...
        store.set_status("C-1", Status.LOST, by="mqtt", now=NOW)
        view.refresh(store)  # ...while an MQTT change was applied directly
        assert view.apply(early, from_rev) is None
        assert view.by_uid["3C00CE754C"].status == Status.LOST


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
        view = CredentialView()
        view.load(store)  # what the daemon does at start-up: nothing is read but the revision
        found = partial(find_credential, view.by_uid)
        assert found(em4100_tap("3C00CE754C")).id == "EXACT"  # type: ignore[union-attr]
        assert found(em4100_tap("AB00010000")).id == "FOB-DEC"  # type: ignore[union-attr]
        assert found(em4100_tap("FFFF07000C")).id == "FOB-FC"  # type: ignore[union-attr]
        assert found(em4100_tap("00115A0144")) is None  # a hex-typed short uid never matches low bits
        assert found(Tap(reader="R-1", uid="00010000", at=NOW)).id == "FOB-DEC"  # type: ignore[union-attr]
        assert len(view.by_id) == 4 and "WIEGAND" in view.by_id
        # A change after the load: the printed fob replaced by a card read in full, then removed.
        store.replace("FOB-DEC", "AB00010000", by="desk", now=NOW)
        view.refresh(store)
        assert found(em4100_tap("AB00010000")).id == "FOB-DEC-2"  # type: ignore[union-attr]
        assert found(em4100_tap("CD00010000")).status == Status.REPLACED  # type: ignore[union-attr]
        store.remove("FOB-DEC", by="desk", now=NOW)
        view.refresh(store)
        assert found(em4100_tap("CD00010000")) is None and "FOB-DEC" not in view.by_id


def test_the_follower_reads_a_large_change_as_its_first_ids_and_their_count(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.upsert([card(f"C-{n:03d}", f"3C00CE7{n:03X}") for n in range(120)], by="cli", now=NOW)
        (entry,) = store.change_log(0).log
        assert entry.count == 120 and entry.ids == tuple(f"C-{n:03d}" for n in range(50))
        (whole,) = store.changed_rows(0).log
        assert whole.count == 120 and len(whole.ids) == 120
