"""The figures of docs/performance.md (matplotlib, written as PNG next to it, in docs/performance/)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "performance"


def _save(figure: Any, name: str) -> str:
    FIGURES.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(FIGURES / name, dpi=90)
    plt.close(figure)
    return f"performance/{name}"


def burst_per_reader(results: dict[str, dict[str, Any]], goals: dict[str, float]) -> str:
    """Per-reader latency in a burst (median over the bursts), before and now, with the goal line."""
    scenarios = sorted({key.split("/")[0] for key in results})
    figure, axes = plt.subplots(1, len(scenarios), figsize=(11, 4), sharey=False)
    for axis, scenario in zip(axes, scenarios, strict=True):
        for variant, style in (("before", "o--"), ("now", "s-")):
            bursts = results[f"{scenario}/{variant}"]["burst"]
            readers = len(bursts[0])
            medians = [sorted(b[n] for b in bursts)[len(bursts) // 2] for n in range(readers)]
            label = "before: 50 ms after each unlock" if variant == "before" else "now"
            axis.plot(range(1, readers + 1), medians, style, label=label)
        axis.axhline(goals[scenario], color="green", linestyle=":", label=f"goal p99 ≤ {goals[scenario]:.0f} ms")
        single = results[f"{scenario}/now"]["single"]
        axis.axhline(sorted(single)[len(single) // 2], color="grey", linestyle="-.", label="single tap, median")
        axis.set_yscale("log")
        axis.set_xlabel("reader (order tapped)")
        axis.set_ylabel("tap → unlock frame, ms (log)")
        axis.set_title(f"20 taps at once, {scenario}")
        axis.legend(fontsize=8)
    return _save(figure, "burst.png")


def slow_fsync(results: dict[str, dict[str, Any]]) -> str:
    """Latency distributions of burst taps and of event-loop lateness, per device and commit path."""
    figure, (taps, stall) = plt.subplots(1, 2, figsize=(11, 4))
    labels = []
    tap_data = []
    stall_data = []
    for key, data in results.items():
        device, mode = key.split("/")
        labels.append(f"{'10 ms fsync' if device == 'slow' else 'local disk'}\n{mode}")
        tap_data.append(data["burst"])
        stall_data.append(data["stall"] or [0.0])
    taps.boxplot(tap_data, showfliers=True)
    taps.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    taps.set_yscale("log")
    taps.set_ylabel("tap → unlock started, ms (log)")
    taps.set_title("20 taps at once: tap latency")
    stall.boxplot(stall_data, showfliers=True)
    stall.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    stall.set_yscale("log")
    stall.set_ylabel("lateness of a 1 ms timer, ms (log)")
    stall.set_title("event-loop stall meanwhile")
    return _save(figure, "slow_fsync.png")


def rss(rows: list[dict[str, Any]], goals: dict[int, float]) -> str:
    """Daemon RSS and import peak RSS against the number of credentials, with the goals."""
    figure, axis = plt.subplots(figsize=(7, 4))
    sizes = [row["credentials"] for row in rows]
    axis.plot(sizes, [row["rss_mb"] for row in rows], "o-", label="daemon RSS")
    imported = [row for row in rows if "import_peak_mb" in row]
    axis.plot(
        [row["credentials"] for row in imported],
        [row["import_peak_mb"] for row in imported],
        "s--",
        label="import peak RSS",
    )
    axis.plot(list(goals), list(goals.values()), "g^:", label="goal (daemon)")
    axis.axhline(500, color="red", linestyle=":", label="goal: import peak ≤ 500 MB")
    axis.set_xscale("symlog", linthresh=100_000)
    axis.set_xlabel("credentials")
    axis.set_ylabel("MB")
    axis.set_title("Memory against the credential set")
    axis.legend(fontsize=8)
    return _save(figure, "rss.png")


def drain_sweep(
    windows: Sequence[int], gateway: Sequence[float], paho: Sequence[float], default: int, goal_ratio: float
) -> str:
    """Journal → broker drain rate against the in-flight window: the gateway and bare paho, with the goal."""
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(windows, paho, "o--", label="bare paho")
    axis.plot(windows, gateway, "s-", label="gateway (mqtt.inflight)")
    best = max(paho)
    axis.axhline(goal_ratio * best, color="green", linestyle=":", label=f"goal: {goal_ratio}× paho's best")
    axis.axvline(default, color="grey", linestyle="-.", label=f"default window ({default})")
    axis.set_xscale("log")
    axis.set_xticks(list(windows), [str(w) for w in windows])
    axis.set_ylim(bottom=0)
    axis.set_xlabel("events in flight (awaiting PUBACK)")
    axis.set_ylabel("events per second")
    axis.set_title("Journal → broker drain, same payloads, same run")
    axis.legend(fontsize=8)
    return _save(figure, "drain.png")
