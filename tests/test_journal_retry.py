"""When the journal cannot commit (a full SD card, a locked file), taps fail secure and nothing that
already happened is lost: door and device reports wait and go in, in order, once it can."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.base import BoardStatus, CardRead
from gateway.config import Settings
from gateway.daemon import Gateway
from gateway.store import Store


def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "gateway": {"id": "gw-t", "site": "t", "state_dir": str(tmp_path / "state")},
            "boards": [{"id": "b", "driver": "kerong-cu16", "port": "/dev/null"}],
            "lockers": [{"id": "A-01", "board": "b", "lock": 1}],
            "readers": [{"id": "r", "driver": "rdm6300", "port": "/dev/null", "lockers": ["A-01"]}],
        }
    )


async def test_a_locked_journal_fails_taps_secure_and_keeps_door_reports(tmp_path: Path) -> None:
    gateway = Gateway(settings(tmp_path))
    gateway._open_state()
    with Store.open(tmp_path / "state") as store:
        store.upsert(
            [{"id": "C-1", "uid": "3C00CE754C", "holder": "h", "role": "user", "scope": ["A-01"]}],
            by="t",
            now=datetime.now(UTC),
        )
    gateway.credentials.refresh(gateway.store)
    t0 = datetime.now(UTC)
    gateway.handle_device_event(BoardStatus("b", t0, (True,) * 16, (False,) * 16))  # learn: closed
    # Another process holds the journal's write lock, as a full disk or an I/O error would stop commits.
    blocker = sqlite3.connect(tmp_path / "state" / "journal.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    gateway.journal.set_busy_timeout(50)
    try:
        gateway.handle_device_event(BoardStatus("b", t0 + timedelta(seconds=1), (False,) + (True,) * 15, (False,) * 16))
        # The tap is refused (nothing journaled, nothing energised) and the fault is shown.
        assert gateway.handle_tap(CardRead("r", "3C00CE754C", t0 + timedelta(seconds=2))) == []
        assert gateway.health()["journal"]["status"] == "failing"
        assert gateway.health()["status"] == "degraded"
        assert not gateway._unlocks, "an unlock was started without a journaled decision"
        assert [r[0][0]["kind"] for r in gateway._retries] == ["door.opened"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    gateway._periodic_checks(t0 + timedelta(seconds=3))
    events = gateway.journal.read(1)
    kinds = [e["kind"] for e in events]
    # First the record of the outage (from when to when, one tap refused), then what waited, in order.
    assert kinds[-3:] == ["journal.unavailable", "door.opened", "door.forced_open"]
    assert events[-3]["refused_taps"] == 1 and events[-3]["cause"]
    assert gateway.health()["journal"] == {**gateway.health()["journal"], "status": "ok"}
    assert gateway._retries == []
    assert gateway.journal.verify() is None
    gateway.journal.close()
    gateway.store.close()
    assert gateway._follow_store_db is not None
    gateway._follow_store_db.close()
