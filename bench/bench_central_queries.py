"""Central's event query and reports over a large store: do they answer in under 200 ms (SPEC §11)?

    .venv/bin/python bench/bench_central_queries.py [--events 1000000] [--runs 15] [--postgres URL] [--no-write]

Creates a scratch PostgreSQL database (dropped at the end), opens it with central's own schema and
loads N events with COPY — 100 gateways on 10 sites, 20 lockers each, 5,000 card holders; taps, door
events, denials (some `expired`), shared allocations and releases, rare lost cards and overrides, spread
over the last 60 days, chained and hashed as gateways publish them — plus their `event_chain` rows, the
gateways' and lockers' rows and ANALYZE. Then every query is made through the HTTP API in-process
(`create_app` with an httpx ASGI client; token check, SQL and JSON included) `--runs` times; the table
gives the median and the worst. Rewrites the "Central queries" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from central_tests.api_kit import context_for  # noqa: E402
from perf_doc import replace_section  # noqa: E402  (bench/ is on sys.path when a bench runs)

from central.api.app import create_app  # noqa: E402
from central.database import open_database  # noqa: E402
from central.tokens import Role, create_token  # noqa: E402
from gateway.events import GENESIS_HASH, SCHEMA, canonical_json, format_ts  # noqa: E402

SECTION = "## Central queries"
SITES, GATEWAYS_PER_SITE, LOCKERS_PER_GATEWAY, HOLDERS = 10, 10, 20, 5000
DAYS = 60
TARGET_MS = 200.0
EVENT_COLUMNS = (
    "site", "gateway", "seq", "ts", "kind", "reader", "locker", "credential_id", "holder", "reason", "override",
    "boot_id", "event_id", "hash", "envelope", "received_at",
)  # fmt: skip


def site_name(n: int) -> str:
    return f"site-{n:02d}"


def records(rng: random.Random, lockers: list[str]) -> dict[str, Any]:
    """One plausible event's fields (SPEC §7 kinds), with rough real-world proportions."""
    roll = rng.random()
    locker = rng.choice(lockers)
    person = rng.randrange(HOLDERS)
    credential = {"id": f"C-{person}", "holder": f"u-{person}", "role": "user", "uid_hash": f"{person:064x}"}
    if roll < 0.33:
        return {"kind": "access.granted", "reader": "bank-a", "locker": locker, "credential": credential,
                "reason": "assigned_locker", "unlock": "sent"}  # fmt: skip
    if roll < 0.58:
        return {"kind": "door.opened", "locker": locker}
    if roll < 0.83:
        return {"kind": "door.closed", "locker": locker}
    if roll < 0.91:
        reason = "expired" if rng.random() < 0.1 else "unknown_credential"
        return {"kind": "access.denied", "reader": "bank-a", "credential": credential, "reason": reason}
    if roll < 0.945:
        return {"kind": "locker.allocated", "locker": locker, "credential": credential, "reason": "shared_allocated"}
    if roll < 0.98:
        return {"kind": "locker.released", "locker": locker, "credential": credential, "reason": "shared_reopen"}
    if roll < 0.982:
        return {"kind": "credential.lost_presented", "reader": "bank-a", "credential": credential}
    if roll < 0.984:
        return {"kind": "access.granted", "locker": locker, "reason": "remote_open", "override": True,
                "unlock": "sent", "operator": "desk", "authorizers": []}  # fmt: skip
    return {"kind": "board.online", "board": "board-a"}


def event_rows(gateways: list[tuple[str, str]], per_gateway: int, start: datetime, rng: random.Random) -> Any:
    """Each event as its `events` row: indexed columns and the envelope, chained and hashed per gateway."""
    step = timedelta(days=DAYS) / per_gateway
    for site, gateway in gateways:
        lockers = [f"{gateway[-2:]}-{n:02d}" for n in range(LOCKERS_PER_GATEWAY)]
        prev = GENESIS_HASH
        for seq in range(1, per_gateway + 1):
            at = start + step * seq + timedelta(milliseconds=rng.randrange(1000))
            envelope = {
                "schema": SCHEMA, "event_id": secrets.token_hex(16), "site": site, "gateway": gateway, "seq": seq,
                "boot_id": "boot-1", "ts": format_ts(at), "reader": None, "locker": None, "credential": None,
                "reason": None, "override": False, **records(rng, lockers), "prev_hash": prev,
            }  # fmt: skip
            envelope["hash"] = prev = hashlib.sha256(canonical_json(envelope)).hexdigest()
            credential = envelope["credential"] or {}
            yield (
                site, gateway, seq, at, envelope["kind"], envelope["reader"], envelope["locker"], credential.get("id"),
                credential.get("holder"), envelope["reason"], envelope["override"], "boot-1", envelope["event_id"],
                envelope["hash"], json.dumps(envelope), at,
            )  # fmt: skip


def load(url: str, total: int, seed: int = 11) -> dict[str, Any]:
    """COPY `total` events (and their chain rows) into the database at `url`; return what was loaded."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    gateways = [(site_name(s), f"gw-{g:02d}") for s in range(SITES) for g in range(GATEWAYS_PER_SITE)]
    per_gateway = total // len(gateways)
    started = time.perf_counter()
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in event_rows(gateways, per_gateway, start, random.Random(seed)):
                copy.write_row(row)
        cursor.execute(
            "INSERT INTO event_chain (site, gateway, seq, hash, prev_hash, hash_ok, ts, stored_at) "
            "SELECT site, gateway, seq, hash, envelope::json->>'prev_hash', true, ts, received_at FROM events"
        )
        for site, gateway in gateways:
            cursor.execute(
                "INSERT INTO gateways (site, gateway, state, last_seen, anchor_seq, verified_seq, received_seq, chain)"
                " VALUES (%s, %s, 'online', %s, 1, %s, %s, 'ok')",
                (site, gateway, now, per_gateway, per_gateway),
            )
            cursor.executemany(
                "INSERT INTO lockers (site, gateway, locker, door, service, occupied, ts, updated_at)"
                " VALUES (%s, %s, %s, 'closed', 'in_service', false, %s, %s)",
                [(site, gateway, f"{gateway[-2:]}-{n:02d}", now, now) for n in range(LOCKERS_PER_GATEWAY)],
            )
        connection.commit()
        cursor.execute("ANALYZE")
    return {"events": per_gateway * len(gateways), "load_s": time.perf_counter() - started, "start": start, "now": now}


async def measure(client: httpx.AsyncClient, headers: dict[str, str], path: str, runs: int) -> tuple[float, float, int]:
    """Median and max milliseconds of `runs` GETs of `path`, and the size of the answer."""
    times: list[float] = []
    size = 0
    for _ in range(runs):
        began = time.perf_counter()
        answer = await client.get(path, headers=headers)
        times.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: HTTP {answer.status_code} {answer.text[:200]}")
        body = answer.json()
        listed = next(body[key] for key in ("events", "rows", "gateways", "lockers") if key in body)
        size = len(listed)
    return statistics.median(times), max(times), size


async def cursor_walk(client: httpx.AsyncClient, headers: dict[str, str], pages: int) -> tuple[float, float, int]:
    """Ten pages of 100 in a row through the cursor (estate-wide), each page timed."""
    times: list[float] = []
    cursor = None
    for _ in range(pages):
        began = time.perf_counter()
        answer = await client.get("/api/events", params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                                  headers=headers)  # fmt: skip
        times.append((time.perf_counter() - began) * 1000)
        cursor = answer.json()["cursor"]
    return statistics.median(times), max(times), 100


async def run_queries(url: str, loaded: dict[str, Any], runs: int) -> list[tuple[str, float, float, int]]:
    engine = open_database(url)
    with engine.begin() as connection:
        _, token = create_token(connection, "bench", Role.admin, datetime.now(UTC))
    headers = {"Authorization": f"Bearer {token}"}
    middle = (loaded["start"] + (loaded["now"] - loaded["start"]) / 2).strftime("%Y-%m-%dT%H:%M:%SZ")
    day_after = (loaded["start"] + (loaded["now"] - loaded["start"]) / 2 + timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    queries = [
        ("events: first page, estate-wide (limit 100)", "/api/events?limit=100"),
        ("events: from a date in the middle (limit 100)", f"/api/events?since={middle}"),
        ("events: one site", "/api/events?site=site-03"),
        ("events: one gateway", "/api/events?site=site-03&gateway=gw-07"),
        ("events: one kind (credential.lost_presented)", "/api/events?kind=credential.lost_presented"),
        ("events: one locker of a site", "/api/events?site=site-03&locker=07-05"),
        ("events: one holder", "/api/events?holder=u-4242"),
        ("events: one gateway, one day", f"/api/events?site=site-03&gateway=gw-07&since={middle}&until={day_after}"),
        ("events: 1000 in one page", "/api/events?limit=1000"),
        ("gateways (100, every chain complete)", "/api/gateways"),
        ("lockers of a site (200, with holders)", "/api/lockers?site=site-03"),
        ("report holders (a site)", "/api/reports/holders?site=site-03"),
        ("report unreturned (estate)", "/api/reports/unreturned"),
        ("report lost (estate)", "/api/reports/lost"),
        ("report overrides (a site)", "/api/reports/overrides?site=site-03"),
        ("report overrides (estate, CSV)", "/api/reports/overrides?format=csv"),
        ("report lockers (estate, 2000)", "/api/reports/lockers"),
        ("report deposits", "/api/reports/deposits"),
    ]
    results: list[tuple[str, float, float, int]] = []
    app = create_app(context_for(engine))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://central") as client:
        for label, path in queries:
            if "format=csv" in path:
                median, worst, _ = await measure_csv(client, headers, path, runs)
                rows = -1
            else:
                median, worst, rows = await measure(client, headers, path, runs)
            results.append((label, median, worst, rows))
            print(f"{label:<55} {median:8.1f} ms  max {worst:8.1f} ms  rows {rows}", flush=True)
        median, worst, rows = await cursor_walk(client, headers, 10)
        results.append(("events: 10 pages in a row through the cursor", median, worst, rows))
    engine.dispose()
    return results


async def measure_csv(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, runs: int
) -> tuple[float, float, int]:
    times: list[float] = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = await client.get(path, headers=headers)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200
    return statistics.median(times), max(times), 0


def write(loaded: dict[str, Any], results: list[tuple[str, float, float, int]], runs: int, server: str) -> None:
    slow = [label for label, median, _, _ in results if median >= TARGET_MS]
    lines = [
        SECTION,
        "",
        "How long central's event query, lists and reports take over a large store (SPEC §11: under 200 ms, "
        "indexes, not scans). Measured by `bench/bench_central_queries.py`; re-run it to replace this section.",
        "",
        f"- {loaded['events']:,} events in PostgreSQL ({server}), loaded with COPY in {loaded['load_s']:.0f} s "
        f"(hashing included): {SITES * GATEWAYS_PER_SITE} gateways on {SITES} sites, "
        f"{LOCKERS_PER_GATEWAY} lockers each, {HOLDERS:,} card holders, over {DAYS} days",
        f"- each query made {runs} times through the API in-process (token check, SQL, JSON); median and worst",
        f"- Python {platform.python_version()} on {platform.machine()}, {platform.system()} "
        f"({datetime.now(UTC):%Y-%m-%d}); 2 cores shared with other work",
        "",
        "| query | median ms | max ms | rows |",
        "|---|---:|---:|---:|",
        *[
            f"| {label} | {median:.1f} | {worst:.1f} | {rows if rows >= 0 else 'CSV'} |"
            for label, median, worst, rows in results
        ],
        "",
        ("Every query's median is under 200 ms." if not slow else f"Over 200 ms (median): {', '.join(slow)}."),
    ]
    replace_section(SECTION, "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres", help="an admin URL")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    args = parser.parse_args(argv)
    name = f"lockergw_bench_{secrets.token_hex(4)}"
    base = args.postgres.rsplit("/", 1)[0]
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        server = str(admin.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
    url = f"{base}/{name}"
    try:
        open_database(url).dispose()
        loaded = load(url, args.events)
        print(f"loaded {loaded['events']:,} events in {loaded['load_s']:.1f} s", flush=True)
        results = asyncio.run(run_queries(url, loaded, args.runs))
        if not args.no_write:
            write(loaded, results, args.runs, f"PostgreSQL {server}")
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
