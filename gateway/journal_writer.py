"""Journal commits off the event loop: one dedicated writer thread, one commit at a time.

A `synchronous=FULL` commit is 0.5–0.75 ms on a good disk but 5–30 ms on an SD card; run on the event
loop, every reader, door and the broker link would wait for it. The daemon hands each group commit to
this thread and awaits it; taps read meanwhile queue up and go into the next transaction together
(gateway.daemon). A commit once handed over always finishes — a cancelled caller still waits for it,
so that a decision that is on disk is never left half carried out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.journal import Group, Journal


class JournalWriter:
    """`await writer.append_groups(groups)` commits on the writer thread; `close()` when done."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-writer")

    async def append_groups(self, groups: Sequence[Group]) -> list[list[dict[str, Any]]]:
        """The envelopes of each group once the transaction is durable; raises what the commit raised.
        If the caller is cancelled meanwhile, the commit is still awaited and the cancellation is
        raised afterwards (the caller then finishes what the commit decided, in a `finally`)."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, self.journal.append_groups, groups)
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(future)
                break
            except asyncio.CancelledError:
                if future.cancelled():  # the thread was shut down before the commit began
                    raise
                cancelled = True
        if cancelled:
            task = asyncio.current_task()
            if task is not None:  # the cancellation is delivered at the caller's next await
                task.cancel()
        return result

    def close(self) -> None:
        self._thread.shutdown(wait=True)
