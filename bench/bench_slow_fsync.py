"""Journal commits off the event loop, on a slow disk: tap latency and event-loop stall.

The real `Gateway` in process (tap_world: 20 readers, boards that note when each unlock starts), its
journal on a "device" whose every fsync takes 10 ms — bench/slow_fsync, an LD_PRELOAD shim, as an SD
card or a dm-delay target would (dm-delay needs root and a kernel module; the shim needs neither).
Three ways of committing, same run, same device:

- **before**: each tap decided and committed on the event loop, one transaction per tap (the old path,
  still `Gateway.handle_tap`);
- **now**: the daemon's consumer — taps queued while a commit runs are decided in order and journaled
  together in one transaction (`Gateway.handle_taps`): on the writer thread, or on the loop itself
  while recent commits were fast and the writer is idle (the adaptive path);
- **thread**: the same, always handed to the writer thread (what the hand-over costs).

Each is run as a child process (the shim must be loaded at start) with and without the slow device.
The event-loop stall is how late a 1 ms timer fires while the taps are handled.

    .venv/bin/python bench/bench_slow_fsync.py [--bursts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from tap_world import READERS, close_gateway, open_gateway, read_of  # noqa: E402

FSYNC_MS = 10
MODES = ("before", "now", "thread")
MODE_NAMES = {
    "before": "on the loop, one commit per tap",
    "now": "group commit, adaptive: loop while commits are fast, else writer thread",
    "thread": "group commit, always on the writer thread",
}


async def measure(mode: str, bursts: int, singles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        gateway, boards = open_gateway(Path(folder))
        lateness: list[float] = []
        measuring = False

        async def ticker() -> None:
            while True:
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                if measuring:
                    lateness.append((time.perf_counter() - started - 0.001) * 1000)

        async def one_by_one() -> None:  # the old consumer: one tap, one commit, on the loop
            while True:
                gateway.handle_device_event(await gateway.device_events.get())

        if mode == "thread":
            assert gateway._writer is not None
            gateway._writer.inline_is_cheap = lambda: False  # type: ignore[method-assign]
        consumer = gateway._consume_device_events() if mode != "before" else one_by_one()
        commits: list[float] = []  # how long each single tap's commit took, whichever thread ran it
        timing = False
        append_groups = gateway.journal.append_groups

        def timed(groups: Any) -> Any:
            started = time.perf_counter()
            try:
                return append_groups(groups)
            finally:
                if timing:
                    commits.append((time.perf_counter() - started) * 1000)

        gateway.journal.append_groups = timed  # type: ignore[method-assign]
        tasks = [asyncio.create_task(consumer), asyncio.create_task(ticker())]

        def unlocked(n: int) -> float | None:
            board = boards["b1" if n < 10 else "b2"]
            return board.unlocked_at.get(n % 10 + 1)

        async def taps(numbers: list[int]) -> list[float]:
            for board in boards.values():
                board.unlocked_at.clear()
            started = time.perf_counter()
            for n in numbers:
                gateway.emit(read_of(n))
            async with asyncio.timeout(30):
                while any(unlocked(n) is None for n in numbers):
                    await asyncio.sleep(0.0005)
            return [((unlocked(n) or 0.0) - started) * 1000 for n in numbers]

        try:
            single: list[float] = []
            timing = True
            for i in range(singles):
                single += await taps([i % READERS])
                await asyncio.sleep(0.02)
            timing = False
            burst: list[float] = []
            measuring = True
            for _ in range(bursts):
                burst += await taps(list(range(READERS)))
                await asyncio.sleep(0.05)
            measuring = False
            verified = gateway.journal.verify() is None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            close_gateway(gateway)
        return {"single": single, "burst": burst, "stall": lateness, "commit": commits, "verified": verified}


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.child, args.bursts, args.singles))
    print(json.dumps(result))


def run_child(mode: str, slow: bool, bursts: int, singles: int) -> dict[str, Any]:
    env = dict(os.environ)
    if slow:
        library = subprocess.run([str(HERE / "slow_fsync" / "build")], check=True, capture_output=True, text=True)
        env["LD_PRELOAD"] = library.stdout.strip()
        env["SLOW_FSYNC_MS"] = str(FSYNC_MS)
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--bursts", str(bursts), "--singles", str(singles)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def run_all(bursts: int = 5, singles: int = 10) -> dict[str, dict[str, Any]]:
    """Every (device, mode) pair: {"fast/before": {...}, "slow/now": {...}, …}."""
    results = {}
    for slow in (False, True):
        for mode in MODES:
            results[f"{'slow' if slow else 'fast'}/{mode}"] = run_child(mode, slow, bursts, singles)
    return results


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, data in results.items():
        device, mode = key.split("/")
        rows.append(
            {
                "device": "10 ms fsync (shim)" if device == "slow" else "this machine's disk",
                "mode": MODE_NAMES[mode],
                "key": key,
                "single_p50": statistics.median(data["single"]),
                "commit_p50": statistics.median(data["commit"]) if data.get("commit") else 0.0,
                "burst_p50": statistics.median(data["burst"]),
                "burst_p99": p99(data["burst"]),
                "stall_max": max(data["stall"]) if data["stall"] else 0.0,
                "stall_p99": p99(data["stall"]) if data["stall"] else 0.0,
                "verified": data["verified"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    for row in summary(run_all(args.bursts, args.singles)):
        print(row)


if __name__ == "__main__":
    main()
