"""`kill -9` at any moment loses no committed event and corrupts nothing (SPEC §8).

A child process appends events as fast as it can, printing each seq once `append` has returned; the
test kills it with SIGKILL part-way through, reopens the journal and checks that every reported seq
is there, the chain verifies, the state written with the events agrees, and seq carries on.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.journal import Journal

CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from gateway.journal import Journal, StateWrite

journal = Journal.open(Path(sys.argv[1]), site="north-school", gateway="gw-01", boot_id=sys.argv[2])
print("ready", journal.last_seq, flush=True)
while True:
    last = journal.last_seq + 2
    records = [
        {"kind": "access.granted", "reader": "bank-a", "locker": "A-01", "reason": "assigned_locker", "n": last},
        {"kind": "locker.allocated", "locker": "S-01", "note": "x" * 3000},
    ]
    envelopes = journal.append(records, datetime.now(UTC), [StateWrite("meta:last", last)])
    assert envelopes[-1]["seq"] == last
    print(last, flush=True)
"""


def open_journal(state_dir: Path) -> Journal:
    return Journal.open(state_dir, site="north-school", gateway="gw-01", boot_id="checker")


def run_and_kill(state_dir: Path, boot_id: str, reports: int) -> list[int]:
    """Start the appender, let it report `reports` commits, SIGKILL it; return every seq it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state_dir), boot_id], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert child.stdout is not None
    try:
        ready = child.stdout.readline().split()
        assert ready[0] == "ready", ready
        reported: list[int] = []
        while len(reported) < reports:
            line = child.stdout.readline()
            assert line, "the appender stopped by itself"
            reported.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        # Lines already in the pipe were printed after their append had returned: committed too.
        reported += [int(line) for line in child.stdout.read().split()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return reported


def test_kill_9_loses_nothing_committed_and_seq_carries_on(tmp_path: Path) -> None:
    chooser = random.Random(8)
    for round_no in range(5):
        with open_journal(tmp_path) as journal:
            before = journal.last_seq
        reported = run_and_kill(tmp_path, f"boot-{round_no}", reports=chooser.randint(5, 60))
        assert reported[0] == before + 2 and reported == list(range(before + 2, reported[-1] + 1, 2))
        with open_journal(tmp_path) as journal:
            assert journal.verify() is None
            last = journal.last_seq
            assert last >= reported[-1]  # it may have committed one more than it managed to print
            kept = [envelope["seq"] for envelope in journal.read(1, limit=100_000)]
            assert kept == list(range(1, last + 1))  # every reported seq, no gap, no duplicate
            assert journal.get_state("meta:last") == {"meta:last": last}  # state committed with its events
            (after,) = journal.append([{"kind": "gateway.started"}], datetime.now(UTC))
            assert after["seq"] == last + 1
            assert journal.verify() is None
