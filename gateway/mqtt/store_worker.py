"""The credential store on a thread of its own, for credential changes that arrive over MQTT.

A 100,000-credential snapshot takes seconds to check and write; done on the event loop it would hold
up every tap meanwhile. Requests therefore write through a private connection to the same SQLite
file (WAL mode lets the daemon keep reading its own), used by exactly one worker thread. The
daemon learns of the change through `ops.credentials_changed()`, called after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import tzinfo
from pathlib import Path
from typing import TypeVar

from gateway.store import Store

T = TypeVar("T")


class StoreWorker:
    def __init__(self, state_dir: Path, zone: tzinfo) -> None:
        self._state_dir = state_dir
        self._zone = zone
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-store")
        self._store: Store | None = None

    async def run(self, job: Callable[[Store], T]) -> T:
        """Run `job(store)` on the worker thread; one job at a time, in submission order."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, job)

    def _call(self, job: Callable[[Store], T]) -> T:
        if self._store is None:
            self._store = Store.open(self._state_dir, zone=self._zone)
        return job(self._store)

    def close(self) -> None:
        """Finish the job in hand (a store transaction is never cut short), then close the connection."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
