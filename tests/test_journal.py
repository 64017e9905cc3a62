"""The event journal against real SQLite files: envelopes, the hash chain, runtime state, delivery
bookkeeping, pruning and tamper detection (SPEC §7, §8)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.events import GENESIS_HASH, SCHEMA, event_hash, verify_chain
from gateway.journal import STANDARD_FIELDS, Journal, StateWrite

AT = datetime(2026, 11, 28, 10, 11, 12, 345678, tzinfo=UTC)
GRANT = {"kind": "access.granted", "reader": "bank-a", "locker": "A-01", "reason": "assigned_locker", "unlock": "sent"}


def open_journal(state_dir: Path, boot_id: str = "boot-1") -> Journal:
    return Journal.open(state_dir, site="north-school", gateway="gw-01", boot_id=boot_id)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    with open_journal(tmp_path) as opened:
        yield opened


def test_an_append_returns_complete_chained_envelopes(journal: Journal) -> None:
    credential = {"id": "C-1", "holder": "u-42", "role": "user", "uid_hash": "9f2c"}
    first, second = journal.append(
        [{**GRANT, "credential": credential, "override": False}, {"kind": "locker.allocated", "locker": "A-01"}], AT
    )
    assert first["schema"] == SCHEMA and first["site"] == "north-school" and first["gateway"] == "gw-01"
    assert first["boot_id"] == "boot-1" and first["ts"] == "2026-11-28T10:11:12.345Z"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first["event_id"])
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["prev_hash"] == GENESIS_HASH and second["prev_hash"] == first["hash"]
    assert first["hash"] == event_hash(first) and second["hash"] == event_hash(second)
    assert first["credential"] == credential and first["reason"] == "assigned_locker"
    assert all(second[name] is None for name in ("reader", "credential", "reason", "override", "unlock"))
    assert set(STANDARD_FIELDS) <= set(second)
    assert "historical" not in first
    assert journal.last_seq == 2
    assert journal.read(1) == [first, second]


def test_kind_specific_extras_are_kept(journal: Journal) -> None:
    authorizers = [{"id": "E-1", "holder": "h-1"}, {"id": "S-1", "holder": "h-2"}]
    (env,) = journal.append([{**GRANT, "reason": "emergency_override", "authorizers": authorizers}], AT)
    assert env["authorizers"] == authorizers
    assert journal.read(1)[0]["authorizers"] == authorizers


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**GRANT, "latency": 0.4}, "floating-point"),
        ({**GRANT, "credential": {"id": "C-1", "score": 1.5}}, "floating-point"),
        ({**GRANT, "items": [1, 2, float("nan")]}, "floating-point"),
        ({**GRANT, "at": AT}, "not a JSON value"),
        ({**GRANT, "seq": 7}, "the journal sets seq"),
        ({**GRANT, "hash": "x"}, "the journal sets hash"),
        ({**GRANT, "historical": True}, "the journal sets historical"),
        ({"kind": "door.exploded"}, "unknown event kind"),
        ({"reader": "bank-a"}, "unknown event kind"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_journaled(
    journal: Journal, record: dict[str, Any], message: str
) -> None:
    journal.append([GRANT], AT)
    with pytest.raises(ValueError, match=message):
        journal.append([GRANT, record], AT, [StateWrite("meta:x", 1)])
    assert journal.last_seq == 1 and len(journal.read(0)) == 1 and journal.get_state("meta:") == {}
    assert journal.append([GRANT], AT)[0]["seq"] == 2


def test_state_is_written_with_the_events_and_read_by_prefix(journal: Journal) -> None:
    journal.append(
        [{"kind": "locker.allocated", "locker": "S-01"}],
        AT,
        [StateWrite("locker:S-01", {"service": "in_service", "occupant": "C-1"}), StateWrite("reader:bank-a", {})],
    )
    journal.put_state([StateWrite("locker:S-02", {"service": "out_of_service", "occupant": None})])
    assert journal.get_state("locker:") == {
        "locker:S-01": {"service": "in_service", "occupant": "C-1"},
        "locker:S-02": {"service": "out_of_service", "occupant": None},
    }
    journal.append([{"kind": "locker.released", "locker": "S-01"}], AT, [StateWrite("locker:S-01", None)])
    assert list(journal.get_state("locker:")) == ["locker:S-02"]
    assert journal.get_state("reader:") == {"reader:bank-a": {}}
    assert set(journal.get_state("")) == {"locker:S-02", "reader:bank-a"}


def test_seq_and_chain_continue_after_reopening(tmp_path: Path) -> None:
    with open_journal(tmp_path, "boot-1") as journal:
        journal.append([GRANT, GRANT], AT)
    with open_journal(tmp_path, "boot-2") as journal:
        assert journal.last_seq == 2
        (env,) = journal.append([{"kind": "gateway.started"}], AT)
        assert env["seq"] == 3 and env["boot_id"] == "boot-2"
        assert verify_chain(journal.read(1)) is None
        assert journal.verify() is None


def test_unsent_events_wait_until_marked_sent(journal: Journal) -> None:
    journal.append([GRANT] * 5, AT)
    assert journal.backlog() == 5
    assert [e["seq"] for e in journal.unsent()] == [1, 2, 3, 4, 5]
    journal.mark_sent([1, 2, 4])
    assert journal.backlog() == 2
    assert [e["seq"] for e in journal.unsent()] == [3, 5]
    assert [e["seq"] for e in journal.unsent(after_seq=3, limit=10)] == [5]
    assert [e["seq"] for e in journal.read(2, limit=2)] == [2, 3]
    journal.mark_sent([])
    db = sqlite3.connect(journal.path)
    assert db.execute("SELECT count(*) FROM events WHERE sent = 1 AND sent_at IS NOT NULL").fetchone()[0] == 3


def test_prune_removes_old_sent_events_and_the_rest_still_verifies(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        for day in range(10):
            journal.append([GRANT, GRANT], AT + timedelta(days=day))
        journal.mark_sent(range(1, 15))  # 15..20 still unsent
        deleted = journal.prune(AT + timedelta(days=10), retention_days=5, max_bytes=10**9)
        # days 0-4 (seqs 1-10) are older than 5 days; seqs 11+ are newer.
        assert deleted == 10
        assert journal.read(0)[0]["seq"] == 11
        assert journal.verify() is None
        assert journal.prune(AT + timedelta(days=100), retention_days=5, max_bytes=10**9) == 4
        assert journal.read(0)[0]["seq"] == 15  # the first unsent event stays, and all after it
        assert journal.backlog() == 6
        assert journal.verify() is None
    with open_journal(tmp_path) as journal:
        assert journal.append([GRANT], AT)[0]["seq"] == 21
        assert journal.verify() is None


def test_prune_keeps_the_newest_event_so_seq_never_restarts(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        journal.append([GRANT] * 3, AT)
        journal.mark_sent([1, 2, 3])
        assert journal.prune(AT + timedelta(days=365), retention_days=1, max_bytes=10**9) == 2
    with open_journal(tmp_path) as journal:
        assert journal.append([GRANT], AT)[0]["seq"] == 4
        assert journal.verify() is None


def test_prune_bounds_the_size_by_dropping_the_oldest_sent_events(journal: Journal) -> None:
    padding = "x" * 2000
    for _ in range(200):
        journal.append([{**GRANT, "note": padding}], AT)
    journal.mark_sent(range(1, 151))
    deleted = journal.prune(AT, retention_days=30, max_bytes=150_000)
    assert 0 < deleted <= 150
    assert journal.read(0)[0]["seq"] == deleted + 1
    assert journal.backlog() == 50
    assert journal.verify() is None


def _tamper(path: Path, sql: str, *params: Any) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, params)
    db.commit()
    db.close()


def test_verify_finds_an_altered_event(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        journal.append([GRANT] * 3, AT)
        envelope = journal.read(2, 1)[0]
    envelope["locker"] = "A-99"
    _tamper(tmp_path / "journal.db", "UPDATE events SET envelope = ? WHERE seq = 2", json.dumps(envelope))
    with open_journal(tmp_path) as journal:
        assert journal.verify() == "seq 2: hash does not match its content"


def test_verify_finds_a_removed_event(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        journal.append([GRANT] * 3, AT)
    _tamper(tmp_path / "journal.db", "DELETE FROM events WHERE seq = 2")
    with open_journal(tmp_path) as journal:
        assert journal.verify() == "seq 3 follows 1: events are missing"


def test_verify_finds_a_rehashed_forgery(tmp_path: Path) -> None:
    with open_journal(tmp_path) as journal:
        journal.append([GRANT] * 3, AT)
        envelope = journal.read(2, 1)[0]
    envelope["locker"] = "A-99"
    envelope["hash"] = event_hash(envelope)  # consistent in itself, but seq 3 no longer links to it
    _tamper(
        tmp_path / "journal.db",
        "UPDATE events SET envelope = ?, hash = ? WHERE seq = 2",
        json.dumps(envelope),
        envelope["hash"],
    )
    with open_journal(tmp_path) as journal:
        assert journal.verify() == "seq 3: prev_hash does not link to the previous event"


def test_the_journal_file_is_wal_and_versioned(tmp_path: Path) -> None:
    open_journal(tmp_path).close()
    db = sqlite3.connect(tmp_path / "journal.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1


_json_leaf = st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=10)
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.lists(
            st.fixed_dictionaries(
                {"kind": st.sampled_from(["access.denied", "door.opened", "reader.fault"])},
                optional={"reader": st.text(max_size=8), "reason": st.text(max_size=8), "extra": _json},
            ),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_records_come_back_exactly_and_chain(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[dict[str, Any]]]
) -> None:
    with open_journal(tmp_path_factory.mktemp("j")) as journal:
        written = [env for batch in batches for env in journal.append(batch, AT)]
        assert journal.read(1, limit=100) == written
        assert [env["seq"] for env in written] == list(range(1, len(written) + 1))
        assert verify_chain(written) is None and journal.verify() is None


def test_the_publisher_adds_historical_to_stored_text_exactly_as_encoding_would(journal: Journal) -> None:
    from gateway.mqtt.publisher import encode, with_historical

    journal.append(
        [
            {"kind": "access.granted", "locker": "A-01", "reason": "assigned_locker", "unlock": "sent"},
            {"kind": "door.opened", "locker": "A-01"},
            {"kind": "gateway.started", "version": "1.0 ✓"},
        ],
        datetime.now(UTC),
    )
    stored = journal.unsent_text()
    decoded = journal.unsent()
    assert [event.seq for event in stored] == [envelope["seq"] for envelope in decoded]
    for event, envelope in zip(stored, decoded, strict=True):
        for historical in (True, False):
            assert with_historical(event, historical) == encode({**envelope, "historical": historical})
