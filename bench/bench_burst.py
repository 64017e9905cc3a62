"""A school bell of taps: 20 readers tapped at once, each timed until its unlock frame is on the bus.

`lockergw run` in a subprocess against the simulators (pseudo-terminals): 20 RDM6300 readers, each
with its own card and locker, and either two KR-CU16 boards on two RS-485 buses (10 lockers each) or
one KR-CU48 on one bus (20 lockers). Each reader's latency runs from the moment every card is
presented to the moment its unlock frame reaches the simulated bus. Same run, same daemon code:

- a single tap (the floor under a burst);
- **before**: the old fixed 50 ms quiet window after every unlock, reproduced by configuration
  (`answers_unlock = true`, `unlock_quiet_ms = 50`);
- **now**: the default — boards that do not answer an unlock get no quiet window after it.

The simulators answer at once: a pseudo-terminal has no baud rate, so the wire time of the frames
(which the goal allows for) comes on top on a real bus.

    .venv/bin/python bench/bench_burst.py [--bursts 10] [--singles 10] [--before-bursts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gateway_world import running  # noqa: E402

from drivers.kerong import CU16, CU48, wire_time_s  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.store import Store  # noqa: E402
from simulators.site import SimulatedSite  # noqa: E402

READERS = 20
#: A card presented again counts as a new tap after this much silence (the default 0.5 s would make
#: the runs wait; what is timed does not depend on it).
REPEAT_GAP_S = 0.1
BAUD = 19200
#: An RDM6300 frame: 14 bytes at 9600 baud.
TAP_WIRE_S = 14 * 10 / 9600

SCENARIOS = {
    "2×CU16, two buses": [("board-a", "kerong-cu16", "rs485-a"), ("board-b", "kerong-cu16", "rs485-b")],
    "1×CU48, one bus": [("board-a", "kerong-cu48", "rs485-a")],
}


def uid(n: int) -> str:
    return f"3C00CE75{n:02X}"


def placement(scenario: str, n: int) -> tuple[str, int]:
    """(board id, lock) of locker n."""
    boards = SCENARIOS[scenario]
    per_board = READERS // len(boards)
    return boards[n // per_board][0], n % per_board + 1


def site_toml(root: Path, scenario: str, before: bool) -> str:
    quiet = "answers_unlock = true\nunlock_quiet_ms = 50\n" if before else ""
    parts = [f'[gateway]\nid = "gw-burst"\nsite = "bench"\nstate_dir = "{root}/state"\ntimezone = "Europe/London"\n']
    for n in range(READERS):
        parts.append(
            f'[[readers]]\nid = "r{n:02}"\ndriver = "rdm6300"\nport = "{root}/dev/r{n:02}"\nlockers = ["L-{n:02}"]\n'
            f"repeat_gap_s = {REPEAT_GAP_S}\n"
        )
    for board_id, driver, port in SCENARIOS[scenario]:
        parts.append(
            f'[[boards]]\nid = "{board_id}"\ndriver = "{driver}"\nport = "{root}/dev/{port}"\n'
            f"address = 0\npoll_ms = 250\n{quiet}"
        )
    for n in range(READERS):
        board_id, lock = placement(scenario, n)
        parts.append(f'[[lockers]]\nid = "L-{n:02}"\nboard = "{board_id}"\nlock = {lock}\n')
    return "\n".join(parts)


def unlock_frame(scenario: str, n: int) -> tuple[str, bytes]:
    board_id, lock = placement(scenario, n)
    driver = next(d for b, d, _ in SCENARIOS[scenario] if b == board_id)
    codec = CU16 if driver == "kerong-cu16" else CU48
    return board_id, codec.unlock_request(0, lock)


def wire_goal_ms(scenario: str) -> float:
    """1.5 × the bus's own wire time for 20 unlock frames (on its busiest bus) + one tap; ≥ 20 ms on two buses."""
    buses = len(SCENARIOS[scenario])
    frame = len(unlock_frame(scenario, 0)[1])
    wire = (READERS / buses) * wire_time_s(frame, BAUD) + TAP_WIRE_S
    return 20.0 if buses > 1 else 1.5 * wire * 1000


async def run_daemon(scenario: str, before: bool, bursts: int, singles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "dev").mkdir()
        config = root / "gateway.toml"
        config.write_text(site_toml(root, scenario, before), encoding="utf-8")
        settings = load_config(config)
        settings.gateway.state_dir.mkdir(parents=True)
        with Store.open(settings.gateway.state_dir) as store:
            from datetime import UTC, datetime

            store.upsert(
                [
                    {"id": f"C-{n}", "uid": uid(n), "holder": f"h{n}", "role": "user", "scope": [f"L-{n:02}"]}
                    for n in range(READERS)
                ],
                by="bench",
                now=datetime.now(UTC),
            )
        async with SimulatedSite(settings) as site, running(config) as gw:
            for board_id, _, _ in SCENARIOS[scenario]:
                await gw.wait_for("board.online", board=board_id, timeout=20)
            await gw.wait_until(lambda: all(gw.find("reader.online", reader=f"r{n:02}") for n in range(READERS)), 20)

            async def arrival(n: int) -> float:
                board_id, frame = unlock_frame(scenario, n)
                await site.wait_for_frame(board_id, frame)
                return time.perf_counter()

            async def taps(numbers: list[int]) -> list[float]:
                waits = [asyncio.ensure_future(arrival(n)) for n in numbers]
                await asyncio.sleep(0)
                started = time.perf_counter()
                held = [site.tap(f"r{n:02}", uid(n), hold=0.05) for n in numbers]
                async with asyncio.timeout(10):
                    arrived = await asyncio.gather(*waits)
                    await asyncio.gather(*held)
                for n in numbers:
                    await site.close(f"L-{n:02}")
                await asyncio.sleep(2 * REPEAT_GAP_S)  # the same card again needs repeat_gap_s of silence
                return [(at - started) * 1000 for at in arrived]

            single: list[float] = []
            for i in range(singles):
                single += await taps([i % READERS])
            burst: list[list[float]] = []
            for _ in range(bursts):
                burst.append(await taps(list(range(READERS))))
        return {"single": single, "burst": burst}


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def run_all(bursts: int = 10, singles: int = 10, before_bursts: int = 3) -> dict[str, dict[str, Any]]:
    """Every scenario before and now. The p99 of `bursts` × 20 taps is their second-slowest from 10
    bursts on (with fewer it is the slowest); the old variant, a second a burst, gets `before_bursts`."""
    results: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS:
        for before in (True, False):
            count = before_bursts if before else bursts
            results[f"{scenario}/{'before' if before else 'now'}"] = await run_daemon(scenario, before, count, singles)
    return results


def summary(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, data in results.items():
        scenario, variant = key.split("/")
        flat = [v for burst in data["burst"] for v in burst]
        rows.append(
            {
                "scenario": scenario,
                "variant": variant,
                "single_p50": statistics.median(data["single"]),
                "single_p99": p99(data["single"]),
                "burst_p50": statistics.median(flat),
                "burst_p99": p99(flat),
                # medians over the bursts of each burst's slowest reader
                "burst_max_median": statistics.median(max(burst) for burst in data["burst"]),
                "goal": wire_goal_ms(scenario),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--singles", type=int, default=10)
    parser.add_argument("--before-bursts", type=int, default=3)
    args = parser.parse_args()
    for row in summary(asyncio.run(run_all(args.bursts, args.singles, args.before_bursts))):
        print(row)


if __name__ == "__main__":
    main()
