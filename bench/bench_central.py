"""Central ingest: events/s landed in PostgreSQL by 1 and 2 `lockergw central` workers, against a bare
subscriber counting the same messages in the same run; lag; time to repair a gap (SPEC §11).

    .venv/bin/python bench/bench_central.py [--gateways 100] [--events 20000] [--workers 1,2] [--no-write]

For each worker count, on a fresh private Mosquitto (persistence on, `max_queued_messages` and
`max_inflight_messages` raised as docs/central.md asks) and a fresh PostgreSQL database on the local
server (`LOCKERGW_BENCH_POSTGRES`, default postgresql://postgres@127.0.0.1:5432/postgres; dropped after):

1. W `lockergw central --config central-N.toml` processes (distinct `[central] id`, one database) and,
   in a process of its own, a bare aiomqtt subscriber on `$share/bench-baseline/{prefix}/+/+/events/#`
   (a group of its own, so it receives every event: the baseline receive rate).
2. `simulators.fleet.Fleet` with 100 gateways publishes `--events` events as fast as its window allows.
   The clock runs from the first publish to (a) the subscriber's last message, (b) the moment the
   events table holds all of them (polled every 50 ms).
3. Steady lag: `--steady-events` more at `--steady-rate` per second (below capacity), `received_at - ts`
   from the events table (`ts` has millisecond precision).
4. Gap repair: three gateways each lose one event (`inject_gap`) and publish the next; measured from the
   next event's `received_at` to the replayed one's, and the `gateways` table must say `chain = ok`.
5. Exactly once: rows = distinct (site, gateway, seq) = every seq the fleet journaled; workers stopped
   with SIGTERM must exit 0.

Rewrites the "Central ingest" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
from perf_doc import replace_section  # noqa: E402  (bench/ is on sys.path when a bench runs)

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from broker.mosquitto import Mosquitto  # noqa: E402
from sqlalchemy import Engine, distinct, func, select, tuple_  # noqa: E402

from central.database import make_engine  # noqa: E402
from central.schema import events as events_table  # noqa: E402
from central.schema import gateways as gateways_table  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402
from simulators.fleet_gateway import SimulatedGateway  # noqa: E402

SECTION = "## Central ingest"
ADMIN_URL = os.environ.get("LOCKERGW_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "lockers"
SHARE_GROUP = "lockergw-central"
BASELINE_GROUP = "bench-baseline"
MAX_QUEUED = 200_000
MAX_INFLIGHT = 1000
GAP_GATEWAYS = 3
#: The steady lag is measured at this share of the rate the burst landed at (well below capacity).
STEADY_SHARE = 0.5
POLL_S = 0.05
READY_TIMEOUT_S = 60.0
LAND_TIMEOUT_S = 240.0
REPAIR_TIMEOUT_S = 60.0
KEY = "bench-central-signing-key-0123456789abcdef"


# ---- the baseline subscriber (a separate process) --------------------------------------------------


async def consume(url: str, topic_filter: str, count: int) -> None:
    """Print `ready` once subscribed, then `done {first} {last}` (perf_counter) at the `count`-th message."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    identifier = f"bench-baseline-{os.getpid()}"
    async with aiomqtt.Client(host, int(port), identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topic_filter, qos=1)
        print("ready", flush=True)
        received, first = 0, 0.0
        async for _ in client.messages:
            at = time.perf_counter()
            received += 1
            if received == 1:
                first = at
            if received >= count:
                print(f"done {first:.9f} {at:.9f}", flush=True)
                return


class Baseline:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, count: int) -> Baseline:
        topic_filter = f"$share/{BASELINE_GROUP}/{PREFIX}/+/+/events/#"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--consume",
            url,
            topic_filter,
            str(count),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        baseline = cls(process)
        if await baseline.line(20) != "ready":
            raise RuntimeError("the baseline subscriber did not start")
        return baseline

    async def line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError("the baseline subscriber exited early")
        return raw.decode().strip()

    async def done_at(self) -> float:
        line = await self.line(LAND_TIMEOUT_S)
        return float(line.split()[2])

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


# ---- central workers and their database ------------------------------------------------------------


def lockergw() -> list[str]:
    script = Path(sys.executable).with_name("lockergw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def create_database() -> str:
    import psycopg

    name = f"lockergw_bench_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, folder: Path, name: str, database: str, broker_url: str, key_file: Path) -> Worker:
        config = folder / f"{name}.toml"
        config.write_text(
            "\n".join(
                [
                    "[central]",
                    f'id = "{name}"',
                    f'database = "{database}"',
                    "[mqtt]",
                    f'url = "{broker_url}"',
                    f'topic_prefix = "{PREFIX}"',
                    f'share_group = "{SHARE_GROUP}"',
                    "[signing]",
                    f'hmac_key_file = "{key_file}"',
                    "[http]",
                    'listen = "127.0.0.1:0"',
                ]
            )
            + "\n"
        )
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*lockergw(), "central", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return cls(name, process, log)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"worker {self.name} exited with status {self.process.returncode}:\n{tail}")

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, workers: list[Worker]) -> float:
    """Poll `condition` every POLL_S; return perf_counter when it first held."""
    deadline = time.perf_counter() + timeout
    while True:
        if await asyncio.to_thread(condition):
            return time.perf_counter()
        for worker in workers:
            worker.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def stored(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(events_table)).scalar_one())


def lags(engine: Engine, since: datetime | None = None) -> list[float]:
    query = select(events_table.c.ts, events_table.c.received_at)
    if since is not None:
        query = query.where(events_table.c.ts >= since)
    with engine.connect() as connection:
        return [(received - ts).total_seconds() for ts, received in connection.execute(query)]


def received_at(engine: Engine, gateway: SimulatedGateway, seq: int) -> datetime | None:
    query = select(events_table.c.received_at).where(
        events_table.c.site == gateway.site, events_table.c.gateway == gateway.gateway, events_table.c.seq == seq
    )
    with engine.connect() as connection:
        value: datetime | None = connection.execute(query).scalar_one_or_none()
        return value


def chains(engine: Engine) -> dict[tuple[str, str], str]:
    query = select(gateways_table.c.site, gateways_table.c.gateway, gateways_table.c.chain)
    with engine.connect() as connection:
        return {(site, gateway): chain for site, gateway, chain in connection.execute(query)}


def exactly_once(engine: Engine, fleet: Fleet) -> tuple[int, int]:
    """(lost, stored twice) over every seq the fleet journaled."""
    key = tuple_(events_table.c.site, events_table.c.gateway, events_table.c.seq)
    with engine.connect() as connection:
        rows, unique = connection.execute(select(func.count(), func.count(distinct(key)))).one()
    return fleet.events - int(unique), int(rows) - int(unique)


def share_members(broker: Mosquitto) -> int:
    """Distinct clients the broker logged subscribing to central's shared subscription."""
    marker = f" $share/{SHARE_GROUP}/"
    clients = {line.split()[1] for line in broker.log_text().splitlines() if marker in line and len(line.split()) > 2}
    return len(clients)


# ---- one run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    events: int
    published_s: float
    baseline_s: float
    landed_s: float
    lag_burst: list[float]
    lag_steady: list[float]
    steady_rate: float
    repairs: list[float]
    lost: int
    twice: int
    exit_codes: list[int]
    chains_ok: bool
    notes: list[str] = field(default_factory=list)

    @property
    def published_rate(self) -> float:
        return self.events / self.published_s

    @property
    def baseline_rate(self) -> float:
        return self.events / self.baseline_s

    @property
    def landed_rate(self) -> float:
        return self.events / self.landed_s


async def measure(folder: Path, workers: int, gateways: int, count: int, steady_events: int, steady_rate: float) -> Run:
    folder.mkdir(parents=True)
    broker = Mosquitto(folder / "broker", persistence=True)
    with broker.conf.open("a", encoding="utf-8") as conf:
        conf.write(f"max_queued_messages {MAX_QUEUED}\nmax_inflight_messages {MAX_INFLIGHT}\n")
    broker.start()
    database = create_database()
    engine = make_engine(database)
    key_file = folder / "signing.key"
    key_file.write_text(KEY)
    running: list[Worker] = []
    baseline: Baseline | None = None
    try:
        # One at a time, each until the broker counts it as a member of the shared subscription (the
        # schema itself may be created by several at once: central.database holds an advisory lock).
        for n in range(1, workers + 1):
            running.append(Worker.start(folder, f"central-{n}", database, broker.url, key_file))
            subscribed = functools.partial(lambda members: share_members(broker) >= members, len(running))
            await wait_until(subscribed, READY_TIMEOUT_S, "a worker to subscribe", running)
        baseline = await Baseline.start(broker.url, count)
        async with Fleet(broker.url, gateways=gateways, sites=10, seed=1, hmac_key=KEY.encode()) as fleet:
            print(f"  {workers} worker(s): publishing {count:,} events from {gateways} gateways", flush=True)
            began = time.perf_counter()
            await fleet.publish(count)
            await fleet.drain()
            published = time.perf_counter() - began
            baseline_done = await baseline.done_at() - began
            landed = await wait_until(lambda: stored(engine) >= count, LAND_TIMEOUT_S, "every event stored", running)
            landed -= began
            lag_burst = await asyncio.to_thread(lags, engine)
            print(
                f"  published {count / published:,.0f}/s, baseline {count / baseline_done:,.0f}/s, "
                f"landed {count / landed:,.0f}/s",
                flush=True,
            )

            steady_since = datetime.now(UTC)
            steady_began = time.perf_counter()
            await fleet.publish(steady_events, rate=steady_rate or STEADY_SHARE * count / landed)
            await fleet.drain()
            steady_actual = steady_events / (time.perf_counter() - steady_began)
            target = count + steady_events
            await wait_until(lambda: stored(engine) >= target, LAND_TIMEOUT_S, "the steady events stored", running)
            lag_steady = await asyncio.to_thread(lags, engine, steady_since)

            print("  gap repair", flush=True)
            gaps: list[tuple[SimulatedGateway, int]] = []
            for gateway in fleet.gateways[:GAP_GATEWAYS]:
                fleet.inject_gap(gateway)
                await fleet.publish(2, gateways=[gateway])
                gaps.append((gateway, gateway.seq - 1))
            await fleet.drain()

            def repaired() -> bool:
                return all(received_at(engine, gateway, seq) is not None for gateway, seq in gaps)

            await wait_until(repaired, REPAIR_TIMEOUT_S, "the gaps repaired", running)
            repairs: list[float] = []
            for gateway, seq in gaps:
                hole, after = received_at(engine, gateway, seq), received_at(engine, gateway, seq + 1)
                assert hole is not None and after is not None
                repairs.append((hole - after).total_seconds())

            def all_ok() -> bool:
                found = chains(engine)
                return all(found.get((g.site, g.gateway)) == "ok" for g in fleet.gateways)

            try:
                await wait_until(all_ok, 15, "chain ok everywhere", running)
                chains_ok = True
            except RuntimeError:
                chains_ok = False
            lost, twice = await asyncio.to_thread(exactly_once, engine, fleet)
            exit_codes = [worker.stop() for worker in running]
        return Run(
            workers=workers,
            events=count,
            published_s=published,
            baseline_s=baseline_done,
            landed_s=landed,
            lag_burst=lag_burst,
            lag_steady=lag_steady,
            steady_rate=steady_actual,
            repairs=repairs,
            lost=lost,
            twice=twice,
            exit_codes=exit_codes,
            chains_ok=chains_ok,
        )
    finally:
        for worker in running:
            worker.stop()
        if baseline is not None:
            await baseline.close()
        engine.dispose()
        drop_database(database)
        broker.stop()


# ---- the report ------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction + 0.5) - 1))]


def mosquitto_version() -> str:
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return ""
    first = out.splitlines()[0] if out else ""
    return first.split(" version ")[-1].split()[0] if " version " in first else ""


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else ""


def render(runs: list[Run], gateways: int, seconds: float, pg_version: str) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    def ms(values: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) * 1000:,.0f}" if values else "–"

    rows = [
        f"| {r.workers} | {r.published_rate:,.0f} | {r.baseline_rate:,.0f} | **{r.landed_rate:,.0f}** "
        f"| **{r.landed_rate / r.baseline_rate:.2f}×** | {r.lost} | {r.twice} "
        f"| {ms(r.lag_burst, 0.5)} / {ms(r.lag_burst, 0.99)} | {ms(r.lag_steady, 0.5)} / {ms(r.lag_steady, 0.99)} "
        f"| {max(r.repairs):.1f} | {'ok' if r.chains_ok else 'NOT ok'} | {', '.join(map(str, r.exit_codes))} |"
        for r in runs
    ]
    best = max(runs, key=lambda r: r.workers)
    rates = " and ".join(f"{r.steady_rate:,.0f}" for r in runs)
    producer_bound = all(r.baseline_rate >= 0.95 * r.published_rate for r in runs)
    verdict = (
        "meets" if best.landed_rate / best.baseline_rate >= 0.7 and best.lost == 0 and best.twice == 0 else "misses"
    )
    lines = [
        SECTION,
        "",
        "`bench/bench_central.py` — `lockergw central` workers (subprocesses, distinct `[central] id`, one "
        f"PostgreSQL {pg_version} database) fed by `simulators.fleet.Fleet` with {gateways} gateways over 10 sites, "
        f"through a private Mosquitto {mosquitto_version()} (persistence on, `max_queued_messages {MAX_QUEUED}`, "
        f"`max_inflight_messages {MAX_INFLIGHT}`), each worker count on a fresh broker and a fresh database. In the "
        "same run a bare aiomqtt subscriber in a process of its own, on a shared subscription of its own "
        f"(`$share/{BASELINE_GROUP}/…`, so it gets every event), counts the same messages: its receive rate is the "
        f"baseline. Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, {os.cpu_count()} cores shared "
        f"with the broker, PostgreSQL, the fleet and the subscriber (load average {load} after the run), Python "
        f"{platform.python_version()}, the whole benchmark {seconds:.0f} s.",
        "",
        f"The fleet publishes {runs[0].events:,} events (plausible taps and doors, no faults) as fast as its window "
        "of 200 unacknowledged publishes allows; the clock runs from the first publish until the subscriber has the "
        "last one (baseline) and until the events table holds all of them (landed, polled every 50 ms). "
        f"Steady lag: then {len(runs[0].lag_steady):,} more at half the rate landed ({rates}/s). Lag is "
        "`received_at − ts` from the events table (`ts` has millisecond precision); under the burst it is mostly "
        f"the queue in front of the workers. Gap repair: {GAP_GATEWAYS} gateways each lose one event "
        "(`inject_gap`) and publish the next; the time from the next event's `received_at` to the replayed one's "
        "(`gap_grace_s` = 5, the default).",
        "",
        "| workers | published /s | baseline received /s | landed in PostgreSQL /s | landed ÷ baseline "
        "| lost | stored twice | lag p50 / p99 ms, burst | lag p50 / p99 ms, steady | gap repaired in s (max) "
        "| chain | exit on SIGTERM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *rows,
        "",
        f"With {best.workers} worker{'s' if best.workers > 1 else ''} central lands "
        f"**{best.landed_rate / best.baseline_rate:.2f}×** the bare "
        f"subscriber's receive rate — it {verdict} the target of issue 11 (≥ 0.7× with 2 workers, 0 lost, 0 stored "
        "twice). "
        + (
            "The bare subscriber kept up with the fleet in every run, so the baseline is the rate the fleet "
            "published at (one Python process); central's ratio is against that. "
            if producer_bound
            else ""
        )
        + "A gap is repaired within `gap_grace_s` + 2 s when the last column stays under 7 s. Everything runs "
        "on the same two cores, so the workers compete with PostgreSQL, the broker and the fleet itself; on an "
        "estate's server the database has cores of its own.",
        "",
        "Re-run with `.venv/bin/python bench/bench_central.py`; it rewrites this section only.",
        "",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Run]:
    import tempfile

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-central-") as scratch:
        for workers in args.workers:
            run = await measure(
                Path(scratch) / f"w{workers}", workers, args.gateways, args.events, args.steady_events, args.steady_rate
            )
            runs.append(run)
            print(
                f"  {workers} worker(s): landed {run.landed_rate:,.0f}/s = {run.landed_rate / run.baseline_rate:.2f}× "
                f"baseline; lost {run.lost}, twice {run.twice}; repair max {max(run.repairs):.1f} s; "
                f"chain ok: {run.chains_ok}; exit {run.exit_codes}",
                flush=True,
            )
    return runs


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        asyncio.run(consume(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--steady-events", type=int, default=2_000)
    parser.add_argument(
        "--steady-rate", type=float, default=0.0, help="events/s for the lag (default: half the rate landed)"
    )
    parser.add_argument(
        "--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2], help="e.g. 1,2"
    )
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args()
    began = time.perf_counter()
    runs = asyncio.run(main_async(args))
    section = render(runs, args.gateways, time.perf_counter() - began, postgres_version(ADMIN_URL))
    if args.no_write:
        print(section)
    else:
        replace_section(SECTION, section)
        print(f"wrote the {SECTION[3:]!r} section of docs/performance.md")


if __name__ == "__main__":
    main()
