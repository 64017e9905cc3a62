"""An in-process gateway for the tap-path benchmarks: the real `Gateway` (decide, journal, group
commit) with 20 readers and boards that only note when each unlock was started."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from twenty_readers import READERS, reader_id, settings, uid

from drivers.base import CardRead, Emit, LockBoard
from gateway.daemon import Gateway
from gateway.store import Store


class TimingBoard(LockBoard):
    """Notes the perf_counter at which each unlock is started, by lock."""

    def __init__(self, device_id: str) -> None:
        super().__init__(device_id, 16)
        self.online = True
        self.unlocked_at: dict[int, float] = {}

    async def run(self, emit: Emit) -> None:
        await asyncio.Event().wait()

    async def unlock(self, lock: int) -> bool:
        self.unlocked_at[lock] = time.perf_counter()
        return True


def open_gateway(root: Path) -> tuple[Gateway, dict[str, TimingBoard]]:
    gateway = Gateway(settings(root, "gw-bench"))
    gateway._open_state()
    with Store.open(root / "state") as store:
        store.upsert(
            [
                {"id": f"C-{n}", "uid": uid(n), "holder": f"h{n}", "role": "user", "scope": [f"L-{n:02}"]}
                for n in range(READERS)
            ],
            by="bench",
            now=datetime.now(UTC),
        )
    gateway.credentials.refresh(gateway.store)
    boards = {"b1": TimingBoard("b1"), "b2": TimingBoard("b2")}
    gateway.boards = dict(boards)
    return gateway, boards


def close_gateway(gateway: Gateway) -> None:
    if gateway._writer is not None:
        gateway._writer.close()
    gateway.journal.close()
    gateway.store.close()
    if gateway._follow_store_db is not None:
        gateway._follow_store_db.close()


def read_of(n: int) -> CardRead:
    return CardRead(reader_id(n), uid(n), datetime.now(UTC))
