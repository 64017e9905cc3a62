"""Tap-to-unlock latency: from the first reader frame on the wire to the unlock frame on the RS-485 bus.

Runs `lockergw run` as a subprocess against the project's simulators (pseudo-terminals), taps cards
round-robin across lockers, and times each tap with the simulator's own clock. Baseline in the same
run: a bare pty round trip (write 14 bytes on one pty, read them on another process's end) and one
durable journal append (SQLite, synchronous=FULL) — the floor under the gateway's own work.

    .venv/bin/python bench/bench_tap.py [--taps 60]

Rewrites the "Tap to unlock" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from perf_doc import replace_section  # noqa: E402  (bench/ is on sys.path when a bench runs)

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gateway_world import running, write_site  # noqa: E402

from gateway.journal import Journal  # noqa: E402
from gateway.store import Store  # noqa: E402
from simulators.site import SimulatedSite  # noqa: E402

CARDS = [("3C00CE754C", "A-03", bytes.fromhex("0202310338")), ("14008EC793", "A-01", bytes.fromhex("0200310336"))]
#: A card presented again counts as a new tap after this much silence (the default 0.5 s would make
#: the runs wait; what is timed does not depend on it).
REPEAT_GAP_S = 0.1
SECTION = "## Tap to unlock"


def pty_round_trip_ms(samples: int) -> list[float]:
    import tty

    main_fd, follower_fd = os.openpty()
    tty.setraw(follower_fd)
    frame = bytes.fromhex("0233433030434537353443434203")
    out: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        os.write(main_fd, frame)
        got = b""
        while len(got) < len(frame):
            got += os.read(follower_fd, 64)
        out.append((time.perf_counter() - started) * 1000)
    os.close(main_fd)
    os.close(follower_fd)
    return out


def journal_append_ms(samples: int) -> list[float]:
    with (
        tempfile.TemporaryDirectory() as folder,
        Journal.open(Path(folder), site="bench", gateway="gw", boot_id="bench") as journal,
    ):
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            journal.append(
                [{"kind": "access.granted", "locker": "A-01", "reason": "assigned_locker"}], datetime.now(UTC)
            )
            out.append((time.perf_counter() - started) * 1000)
        return out


async def taps_ms(taps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        config, settings = write_site(Path(folder), repeat_gap=REPEAT_GAP_S)
        settings.gateway.state_dir.mkdir(parents=True)
        with Store.open(settings.gateway.state_dir) as store:
            store.upsert(
                [
                    {"id": f"C-{i}", "uid": uid, "holder": f"h{i}", "role": "user", "scope": [locker]}
                    for i, (uid, locker, _) in enumerate(CARDS)
                ],
                by="bench",
                now=datetime.now(UTC),
            )
        out: list[float] = []
        async with SimulatedSite(settings) as site, running(config) as gw:
            await gw.wait_for("board.online", board="board-a")
            await gw.wait_for("reader.online", reader="bank-a")
            for n in range(taps):
                uid, locker, frame = CARDS[n % len(CARDS)]
                unlock = asyncio.ensure_future(site.wait_for_frame("board-a", frame))
                await asyncio.sleep(0)
                started = time.perf_counter()
                held = site.tap("bank-a", uid, hold=0.05)
                await asyncio.wait_for(unlock, 5)
                out.append((time.perf_counter() - started) * 1000)
                await held
                await site.close(locker)
                await asyncio.sleep(
                    2 * REPEAT_GAP_S
                )  # a new presentation of the same card needs repeat_gap_s of silence
        return out


def row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"| {name} | {len(values)} | {statistics.median(values):.2f} | {p95:.2f} | {max(values):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--taps", type=int, default=60)
    args = parser.parse_args()
    tap = asyncio.run(taps_ms(args.taps))
    pty = pty_round_trip_ms(500)
    journal = journal_append_ms(200)
    ratio = statistics.median(tap) / statistics.median(journal)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = f"""{SECTION}

`bench/bench_tap.py` — `lockergw run` in a subprocess against the simulators; each tap timed from the
moment the simulated RDM6300 starts sending its frame to the moment the unlock frame arrives on the
simulated Kerong bus (reader parse → decide → durable journal commit → unlock write). Measured
{datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, {os.cpu_count()} cores (load average {load}),
Python {platform.python_version()}.

| measured | samples | median ms | p95 ms | max ms |
|---|---:|---:|---:|---:|
{row("tap → unlock frame", tap)}
{row("baseline: one durable journal append", journal)}
{row("baseline: pty round trip, 14 bytes", pty)}

The RDM6300 frame itself takes 14.6 ms on the wire at 9600 baud; the simulator writes it at once, so
the figures above are the gateway's own share. Median tap-to-unlock is {ratio:.1f}× one durable journal
append measured in the same run, so the durability rule (commit before unlock) is a small part of it; the
rest is serial I/O through two processes and the shared bus, where an unlock can wait for a status poll
that is in flight (poll_ms = 100 in this configuration).
"""
    replace_section(SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
