"""Group commit on the tap path: a burst of taps is decided in order, journaled together, and every
lock is energised only once its decision is on disk — read back through a connection of its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twenty_readers import READERS, reader_id, settings, uid

from drivers.base import BoardStatus, CardRead, Emit, LockBoard
from gateway.daemon import Gateway
from gateway.journal import Group
from gateway.store import Store


class DurabilityCheckingBoard(LockBoard):
    """Records each unlock together with what the journal file held, on disk, at that moment."""

    def __init__(self, device_id: str, journal_path: Path, lockers: dict[int, str]) -> None:
        super().__init__(device_id, 16)
        self.online = True
        self.journal_path = journal_path
        self.lockers = lockers
        self.unlocked: list[tuple[str, bool]] = []

    async def run(self, emit: Emit) -> None:
        await asyncio.Event().wait()

    async def unlock(self, lock: int) -> bool:
        locker = self.lockers[lock]
        reader = sqlite3.connect(self.journal_path)  # a fresh connection sees only committed rows
        try:
            rows = reader.execute(
                "SELECT count(*) FROM events WHERE kind = 'access.granted' AND json_extract(envelope, '$.locker') = ?",
                (locker,),
            ).fetchone()
        finally:
            reader.close()
        self.unlocked.append((locker, rows[0] == 1))
        return True


def started_gateway(tmp_path: Path) -> tuple[Gateway, list[DurabilityCheckingBoard]]:
    config = settings(tmp_path)
    gateway = Gateway(config)
    gateway._open_state()
    with Store.open(tmp_path / "state") as store:
        store.upsert(
            [
                {"id": f"C-{n}", "uid": uid(n), "holder": f"h{n}", "role": "user", "scope": [f"L-{n:02}"]}
                for n in range(READERS)
            ],
            by="t",
            now=datetime.now(UTC),
        )
    gateway.credentials.refresh(gateway.store)
    boards = []
    for board_id in ("b1", "b2"):
        lockers = {s.lock: s.id for s in config.lockers if s.board == board_id and s.lock is not None}
        boards.append(DurabilityCheckingBoard(board_id, gateway.journal.path, lockers))
    gateway.boards = {board.id: board for board in boards}
    return gateway, boards


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def close(gateway: Gateway) -> None:
    assert gateway._writer is not None
    gateway._writer.close()
    gateway.journal.close()
    gateway.store.close()
    assert gateway._follow_store_db is not None
    gateway._follow_store_db.close()


class HeldCommits:
    """Wraps the journal's group commit: the first commit waits until released; records each group."""

    def __init__(self, gateway: Gateway) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.transactions: list[list[str]] = []
        journal = gateway.journal
        original = journal.append_groups

        def held(groups: Sequence[Group]) -> list[list[dict[str, Any]]]:
            self.started.set()
            self.release.wait(timeout=30)
            self.transactions.append([str(g.records[0].get("kind")) for g in groups if g.records])
            return original(groups)

        journal.append_groups = held  # type: ignore[method-assign]


async def test_a_burst_of_taps_commits_every_decision_before_its_unlock(tmp_path: Path) -> None:
    gateway, boards = started_gateway(tmp_path)
    try:
        held = HeldCommits(gateway)
        consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
        now = datetime.now(UTC)
        gateway.emit(CardRead(reader_id(0), uid(0), now))
        await asyncio.to_thread(held.started.wait, 10)  # the first tap's commit is running
        for n in range(1, READERS):  # a school bell: every other reader while it runs
            gateway.emit(CardRead(reader_id(n), uid(n), now))
        held.release.set()
        await until(lambda: sum(len(b.unlocked) for b in boards) == READERS)
        consumer.cancel()
        unlocked = [entry for board in boards for entry in board.unlocked]
        assert sorted(locker for locker, _ in unlocked) == [f"L-{n:02}" for n in range(READERS)]
        assert all(durable for _, durable in unlocked), "a lock was energised before its decision was on disk"
        # The 19 taps read during the first commit went to the journal together, in the next one.
        assert [len(t) for t in held.transactions] == [1, READERS - 1]
    finally:
        close(gateway)


async def test_every_lock_of_a_group_is_energised_before_its_events_are_announced(tmp_path: Path) -> None:
    """Listeners (the log, the publisher's wake-up, the console) hear of a grant only once every unlock of
    its group commit has been started: nothing is done before a door that could already be popping."""
    gateway, boards = started_gateway(tmp_path)
    try:
        unlocks_started_when_heard: list[int] = []
        gateway.listeners.append(
            lambda envelope: (
                unlocks_started_when_heard.append(sum(len(b.unlocked) for b in boards))
                if envelope["kind"] == "access.granted"
                else None
            )
        )
        held = HeldCommits(gateway)
        consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
        now = datetime.now(UTC)
        gateway.emit(CardRead(reader_id(0), uid(0), now))
        await asyncio.to_thread(held.started.wait, 10)
        for n in range(1, READERS):
            gateway.emit(CardRead(reader_id(n), uid(n), now))
        held.release.set()
        await until(lambda: len(unlocks_started_when_heard) == READERS)
        consumer.cancel()
        assert unlocks_started_when_heard == [1] + [READERS] * (READERS - 1)
    finally:
        close(gateway)


async def test_group_commit_never_reorders_seq_against_decision_order(tmp_path: Path) -> None:
    gateway, _ = started_gateway(tmp_path)
    try:
        held = HeldCommits(gateway)
        consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
        now = datetime.now(UTC)
        gateway.emit(CardRead(reader_id(0), uid(0), now))
        await asyncio.to_thread(held.started.wait, 10)
        order = [7, 3, 19, 1, 12, 5, 8]
        for n in order:
            gateway.emit(CardRead(reader_id(n), uid(n), now))
        gateway.emit(CardRead(reader_id(4), uid(5), now))  # someone else's card: denied, in its place
        held.release.set()
        await until(lambda: len(gateway.journal.read(1, 100)) == 1 + len(order) + 1)
        consumer.cancel()
        events = [e for e in gateway.journal.read(1, 100) if e["kind"].startswith("access.")]
        assert [e["reader"] for e in events] == [reader_id(0), *(reader_id(n) for n in order), reader_id(4)]
        assert [e["kind"] for e in events][-1] == "access.denied"
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert gateway.journal.verify() is None
    finally:
        close(gateway)


async def test_door_reports_and_taps_interleaved_keep_their_order_in_the_journal(tmp_path: Path) -> None:
    gateway, boards = started_gateway(tmp_path)
    try:
        consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
        now = datetime.now(UTC)
        gateway.emit(BoardStatus("b2", now, (True,) * 16, (False,) * 16))  # learn: every door closed
        await until(lambda: "b2" in gateway.devices_seen)
        held = HeldCommits(gateway)
        gateway.emit(CardRead(reader_id(0), uid(0), now))
        await asyncio.to_thread(held.started.wait, 10)  # the first tap's commit is running
        # While it runs: a door on b2 is forced open, a tap, the door closes again, another tap.
        gateway.emit(BoardStatus("b2", now, (False,) + (True,) * 15, (False,) * 16))
        gateway.emit(CardRead(reader_id(1), uid(1), now))
        gateway.emit(BoardStatus("b2", now, (True,) * 16, (False,) * 16))
        gateway.emit(CardRead(reader_id(2), uid(2), now))
        held.release.set()
        await until(lambda: sum(len(b.unlocked) for b in boards) == 3)
        await until(lambda: any(e["kind"] == "door.closed" for e in gateway.journal.read(1, 100)))
        consumer.cancel()
        events = [(e["kind"], e.get("reader") or e.get("locker")) for e in gateway.journal.read(1, 100)]
        assert [event for event in events if event[0] != "door.forced_open"] == [
            ("access.granted", reader_id(0)),
            ("door.opened", "L-10"),
            ("access.granted", reader_id(1)),
            ("door.closed", "L-10"),
            ("access.granted", reader_id(2)),
        ]
        unlocked = [entry for board in boards for entry in board.unlocked]
        assert all(durable for _, durable in unlocked), "a lock was energised before its decision was on disk"
        assert gateway.journal.verify() is None
    finally:
        close(gateway)


async def test_a_commit_failing_on_the_writer_thread_refuses_the_tap_and_is_journaled_once_it_works(
    tmp_path: Path,
) -> None:
    gateway, boards = started_gateway(tmp_path)
    try:
        journal = gateway.journal
        original = journal.append_groups
        failing = threading.Event()
        failing.set()

        def flaky(groups: Sequence[Group]) -> list[list[dict[str, Any]]]:
            if failing.is_set():
                raise sqlite3.OperationalError("disk I/O error")
            return original(groups)

        journal.append_groups = flaky  # type: ignore[method-assign]
        consumer = asyncio.get_running_loop().create_task(gateway._consume_device_events())
        now = datetime.now(UTC)
        gateway.emit(CardRead(reader_id(0), uid(0), now))
        await until(lambda: gateway.metrics.refused_taps._value.get() == 1)
        assert gateway.health()["journal"]["status"] == "failing"
        assert "disk I/O error" in gateway.health()["journal"]["cause"]
        assert not any(b.unlocked for b in boards), "a lock was energised without a journaled decision"
        failing.clear()
        gateway.emit(CardRead(reader_id(1), uid(1), now))
        await until(lambda: sum(len(b.unlocked) for b in boards) == 1)
        consumer.cancel()
        kinds = [(e["kind"], e.get("reader")) for e in gateway.journal.read(1, 100)]
        assert kinds == [("journal.unavailable", None), ("access.granted", reader_id(1))]
        assert gateway.journal.read(1, 1)[0]["refused_taps"] == 1
        assert gateway.health()["journal"]["status"] == "ok"
        assert all(durable for b in boards for _, durable in b.unlocked)
    finally:
        close(gateway)
