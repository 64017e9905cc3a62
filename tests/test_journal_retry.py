"""When the journal cannot commit (a full SD card, a locked file), taps fail secure and nothing that
already happened is lost: door and device reports wait and go in, in order, once it can."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
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


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


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
    announced: list[str] = []
    gateway.listeners.append(lambda envelope: announced.append(envelope["kind"]))
    consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
    t0 = datetime.now(UTC)
    gateway.emit(BoardStatus("b", t0, (True,) * 16, (False,) * 16))  # learn: closed
    # Another process holds the journal's write lock, as a full disk or an I/O error would stop commits.
    blocker = sqlite3.connect(tmp_path / "state" / "journal.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    gateway.journal.set_busy_timeout(50)
    assert gateway._writer is not None
    writer = gateway._writer
    try:
        gateway.emit(BoardStatus("b", t0 + timedelta(seconds=1), (False,) + (True,) * 15, (False,) * 16))
        gateway.emit(CardRead("r", "3C00CE754C", t0 + timedelta(seconds=2)))
        # The tap is refused (nothing journaled, nothing energised) and the fault is shown; the door
        # report waits on the writer thread (not announced: it is not on disk).
        await until(lambda: gateway.metrics.refused_taps._value.get() == 1)
        assert gateway.health()["journal"]["status"] == "failing"
        assert gateway.health()["status"] == "degraded"
        assert not gateway._unlocks, "an unlock was started without a journaled decision"
        assert writer.waiting == 1
        assert "door.opened" not in announced
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    gateway._periodic_checks(t0 + timedelta(seconds=3))
    await until(lambda: gateway.health()["journal"]["status"] == "ok")
    events = gateway.journal.read(1)
    kinds = [e["kind"] for e in events]
    # First the record of the outage (from when to when, one tap refused), then what waited, in order.
    assert kinds[-3:] == ["journal.unavailable", "door.opened", "door.forced_open"]
    assert events[-3]["refused_taps"] == 1 and events[-3]["cause"]
    await until(lambda: "door.forced_open" in announced)
    assert writer.waiting == 0
    assert gateway.journal.verify() is None
    consumer.cancel()
    writer.close()
    gateway.journal.close()
    gateway.store.close()
    assert gateway._follow_store_db is not None
    gateway._follow_store_db.close()
