"""Memory and start-up against the size of the credential set, and the peak RSS of an import.

For 0, 100,000 and 1,000,000 credentials (bench_import's school-like CSV): `lockergw credentials
import` into an empty store, timed, with its peak RSS (the child's `ru_maxrss` from wait4); then
`lockergw run` on that state directory (no devices), timed from spawn to its `gateway.started` line
(the daemon reads no credential at start-up: cards are looked up in the store), and its resident set
size (VmRSS) a second later; and, in this process, how long finding a card takes in the daemon's
credential view (`find_credential` over `CredentialView.by_uid`, an EM4100 tap: a known card, and an
unknown one, which also tries its two printed forms), the median of 2,000 of each. The 0-credential
daemon is the same-run baseline.

    .venv/bin/python bench/bench_memory.py [--sizes 0,100000,1000000]

While iterating on start-up, `--reuse DIR` imports each size once into DIR/<size>/ and reuses that
state on later runs (no import figures then), and `--starts N` starts each daemon N times and reports
the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from bench_import import write_config, write_csv  # noqa: E402
from gateway_world import Daemon  # noqa: E402

from gateway.credential_view import CredentialView  # noqa: E402
from gateway.model import Tap  # noqa: E402
from gateway.policy import find_credential  # noqa: E402
from gateway.store import Store  # noqa: E402
from gateway.uid import EM4100  # noqa: E402

LOOKUPS = 2000


def lockergw_command() -> list[str]:
    script = Path(sys.executable).with_name("lockergw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def timed_import(config: Path, csv: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `lockergw credentials import`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*lockergw_command(), "credentials", "import", str(csv), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None
        raise SystemExit(f"import failed: {process.stderr.read().decode().strip()}")
    return elapsed, usage.ru_maxrss / 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def daemon_figures(config: Path) -> tuple[float, float]:
    """(seconds from spawn to gateway.started, RSS in MB a second later)."""
    started = time.perf_counter()
    daemon = await Daemon(config).start()
    try:
        await daemon.wait_for("gateway.started", timeout=60)
        ready = time.perf_counter() - started
        await asyncio.sleep(1.0)
        assert daemon.process is not None
        return ready, rss_mb(daemon.process.pid)
    finally:
        await daemon.stop()


def prepared(root: Path, size: int, result: dict[str, Any]) -> Path:
    """The config of a state directory under `root` holding `size` credentials, imported now unless
    `root` has them already (an import that did not finish leaves no `ready` mark and is done again)."""
    mark = root / "ready"
    if mark.exists():
        return root / "gateway.toml"
    config = write_config(root)
    if size:
        csv = root / "credentials.csv"
        write_csv(csv, size)
        result["import_s"], result["import_peak_mb"] = timed_import(config, csv)
        csv.unlink()
    mark.touch()
    return config


def lookup_us(state_dir: Path, size: int) -> tuple[float, float]:
    """Median µs to find (a known card, an unknown card) through the daemon's credential view."""
    rng = random.Random(size)
    now = datetime.now(UTC)

    def timed(view: CredentialView, uids: list[str]) -> float:
        samples = []
        for uid in uids:
            tap = Tap(reader="r", uid=uid, at=now, family=EM4100)
            started = time.perf_counter_ns()
            find_credential(view.by_uid, tap)
            samples.append((time.perf_counter_ns() - started) / 1000)
        return statistics.median(samples)

    with Store.open(state_dir) as store:
        view = CredentialView()
        view.load(store)
        known = [f"{0x3C00000000 + rng.randrange(max(size, 1)):010X}" for _ in range(LOOKUPS)] if size else []
        unknown = [f"{0x7700000000 + rng.randrange(1 << 24):010X}" for _ in range(LOOKUPS)]
        return (timed(view, known) if known else 0.0), timed(view, unknown)


def starts(config: Path, count: int) -> tuple[float, float]:
    """Median (start-up seconds, RSS MB) of `count` daemon starts on one state directory."""
    figures = [asyncio.run(daemon_figures(config)) for _ in range(count)]
    return statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)


def measure(size: int, reuse: Path | None = None, count: int = 1) -> dict[str, Any]:
    result: dict[str, Any] = {"credentials": size}
    if reuse is not None:
        root = reuse / str(size)
        root.mkdir(parents=True, exist_ok=True)
        result["startup_s"], result["rss_mb"] = starts(prepared(root, size, result), count)
        result["known_us"], result["unknown_us"] = lookup_us(root / "state", size)
        return result
    with tempfile.TemporaryDirectory() as folder:
        result["startup_s"], result["rss_mb"] = starts(prepared(Path(folder), size, result), count)
        result["known_us"], result["unknown_us"] = lookup_us(Path(folder) / "state", size)
        return result


def run_all(sizes: list[int], reuse: Path | None = None, count: int = 1) -> list[dict[str, Any]]:
    return [measure(size, reuse, count) for size in sizes]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--reuse", type=Path, help="keep imported state directories here and reuse them")
    parser.add_argument("--starts", type=int, default=1, help="daemon starts per size (median reported)")
    args = parser.parse_args()
    for row in run_all([int(size) for size in args.sizes.split(",")], args.reuse, args.starts):
        print(row)


if __name__ == "__main__":
    main()
