"""The journal's writer thread: one transaction for what queued up, seq in submission order, and a
bad record failing only its own job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.journal import Group, Journal
from gateway.journal_writer import JournalWriter


async def test_a_bad_record_fails_only_its_own_job_and_the_others_commit_in_order(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, site="s", gateway="g", boot_id="b")
    writer = JournalWriter(journal)
    try:
        now = datetime.now(UTC)
        outcomes: list[Any] = [None, None, None]
        all_done = asyncio.Event()

        def done(index: int) -> Any:
            def record(outcome: Any) -> None:
                outcomes[index] = outcome
                if all(o is not None for o in outcomes):
                    all_done.set()

            return record

        # Queued together behind a held commit, so the three go to the thread as one batch.
        with writer._ready:
            writer.submit([Group([{"kind": "reader.online", "reader": "r1"}], now)], done(0))
            writer.submit([Group([{"kind": "no.such.kind"}], now)], done(1))
            writer.submit([Group([{"kind": "reader.online", "reader": "r2"}], now)], done(2))
        async with asyncio.timeout(10):
            await all_done.wait()
        assert isinstance(outcomes[1], ValueError)
        assert [e["reader"] for e in journal.read(1)] == ["r1", "r2"]
        assert [outcomes[0][0][0]["seq"], outcomes[2][0][0]["seq"]] == [1, 2]
        assert journal.verify() is None
    finally:
        writer.close()
        journal.close()
