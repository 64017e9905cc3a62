"""Several `lockergw central` processes on one PostgreSQL: the stream split between them, and nothing lost
or doubled when one is stopped, killed and restarted, or killed for good (SPEC §11 "No event lost when a
worker dies"). The simulated gateways here do not answer replays unless said: delivery alone keeps the
promise."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker.mosquitto import Mosquitto
from databases.plugin import ADMIN_URL
from sqlalchemy import Engine, func, select

from central.config import load_central_config
from central.database import open_database
from central.schema import events, workers
from central.worker import Worker
from central_tests.kit import (
    CentralProcess,
    ChainedGateway,
    async_wait_until,
    gateway_row,
    wait_until,
    write_central_config,
)

#: What docs/central.md asks of the broker: room for every worker's Receive Maximum, long queues.
BROKER_SETTINGS = ("max_inflight_messages 1000", "max_queued_messages 100000")
SITE = "north-school"


@pytest.fixture
def central_broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory(persistence=True, extra=BROKER_SETTINGS)


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = open_database(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def start_worker(
    tmp_path: Path, postgres_url: str, central_broker: Mosquitto
) -> Iterator[Callable[..., CentralProcess]]:
    started: list[CentralProcess] = []

    def start(name: str, **central: object) -> CentralProcess:
        config = write_central_config(tmp_path, postgres_url, central_broker.url, name, **central)
        process = CentralProcess(config, tmp_path / f"{name}.log").start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def gateways(central_broker: Mosquitto) -> Iterator[list[ChainedGateway]]:
    made = [ChainedGateway(central_broker.url, SITE, f"gw-0{n}", answers_replays=False) for n in (1, 2, 3)]
    yield made
    for gateway in made:
        gateway.close()


def stored_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(select(events.c.gateway, func.count()).group_by(events.c.gateway)).all()
    return {gateway: int(count) for gateway, count in rows}


def all_stored_once(engine: Engine, gateways: list[ChainedGateway]) -> bool:
    """Every event of every gateway stored, none twice (events has no unique key of its own on seq)."""
    expected = {g.gateway: len(g.journal) for g in gateways}
    if stored_counts(engine) != expected:
        return False
    rows = [gateway_row(engine, SITE, g.gateway) for g in gateways]
    return all(row.chain == "ok" and row.verified_seq == len(g.journal) for row, g in zip(rows, gateways, strict=True))


def publish_round(gateways: list[ChainedGateway], per_gateway: int) -> None:
    for gateway in gateways:
        gateway.publish_all(gateway.events(per_gateway))


def test_three_gateways_and_two_workers_store_every_event_exactly_once_despite_drops_dups_and_reordering(
    engine: Engine, start_worker: Callable[..., CentralProcess], central_broker: Mosquitto
) -> None:
    first, second = start_worker("central-1"), start_worker("central-2")
    gateways = [ChainedGateway(central_broker.url, SITE, f"gw-0{n}") for n in (1, 2, 3)]  # these answer replays
    faults = random.Random(3)
    for gateway in gateways:
        envelopes = gateway.events(200)
        # Dropped, then repaired by replay. Not seq 1: the lowest seq central holds is its anchor (SPEC §11),
        # as a gateway may have pruned what came before, so a lost first event is not a gap.
        sent = [e for e in envelopes if e["seq"] == 1 or faults.random() > 0.03]
        sent += faults.sample(envelopes, 20)  # duplicated
        faults.shuffle(sent)  # reordered
        gateway.publish_all(sent)
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once, chains ok")
    assert any(gateway.replays for gateway in gateways)
    for gateway in gateways:
        gateway.close()
    with engine.connect() as connection:
        beats = connection.execute(select(func.count()).select_from(workers)).scalar_one()
    assert beats == 2
    assert all(p.process is not None and p.process.poll() is None for p in (first, second))


def test_a_worker_stopped_with_sigterm_loses_nothing_and_exits_0(
    engine: Engine, start_worker: Callable[..., CentralProcess], gateways: list[ChainedGateway]
) -> None:
    stopping, staying = start_worker("central-1"), start_worker("central-2")
    publish_round(gateways, 100)
    stopping.signal(signal.SIGTERM)
    publish_round(gateways, 100)
    assert stopping.wait(30) == 0, stopping.log()
    publish_round(gateways, 20)
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once")
    with engine.connect() as connection:
        stopped = connection.execute(select(workers.c.stopped_at).where(workers.c.id == "central-1")).scalar_one()
    assert stopped is not None
    assert staying.process is not None and staying.process.poll() is None


def test_the_last_worker_stopped_with_sigterm_keeps_the_stream_queued_for_whoever_comes_next(
    engine: Engine, start_worker: Callable[..., CentralProcess], gateways: list[ChainedGateway]
) -> None:
    first = start_worker("central-1")
    publish_round(gateways, 50)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()
    publish_round(gateways, 50)  # nobody running: queued in central-1's session
    again = start_worker("central-1")
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once after the restart")
    again.signal(signal.SIGTERM)
    assert again.wait(30) == 0, again.log()
    publish_round(gateways, 50)  # queued again; this time another worker comes instead
    other = start_worker("central-2")
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once by the take-over")
    wait_until(lambda: "took over worker central-1" in other.log(), 30, "the take-over to finish")


def test_a_worker_killed_mid_batch_and_restarted_loses_and_doubles_nothing(
    engine: Engine, start_worker: Callable[..., CentralProcess], gateways: list[ChainedGateway]
) -> None:
    worker = start_worker("central-1", batch_ms=10_000)  # a long batch: the kill lands before its commit
    publish_round(gateways, 100)
    worker.signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    assert stored_counts(engine) == {}  # killed holding an uncommitted (and unacknowledged) batch
    publish_round(gateways, 50)  # queued in the dead worker's session meanwhile
    start_worker("central-1")
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once")


def test_a_worker_killed_for_good_has_its_session_taken_over_by_a_survivor(
    engine: Engine, start_worker: Callable[..., CentralProcess], gateways: list[ChainedGateway]
) -> None:
    doomed = start_worker("central-1", batch_ms=2000)
    survivor = start_worker("central-2")
    publish_round(gateways, 100)
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    publish_round(gateways, 100)  # half of these are assigned to the dead member's session

    def taken_over_by() -> str | None:
        with engine.connect() as connection:
            query = select(workers.c.taken_over_by).where(workers.c.id == "central-1")
            return connection.execute(query).scalar_one()  # type: ignore[no-any-return]

    assert wait_until(taken_over_by, 60, "the take-over") == "central-2"
    wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once")
    wait_until(lambda: "took over worker central-1" in survivor.log(), 30, "the take-over's log line")
    publish_round(gateways, 30)  # after the take-over the dead session gets no share of new events
    wait_until(lambda: all_stored_once(engine, gateways), 30, "later events stored once")


def test_a_second_worker_on_one_sqlite_database_exits_2(tmp_path: Path, sqlite_url: str, broker: Mosquitto) -> None:
    first = CentralProcess(write_central_config(tmp_path, sqlite_url, broker.url, "central-1"), tmp_path / "1.log")
    first.start()
    try:
        second = CentralProcess(write_central_config(tmp_path, sqlite_url, broker.url, "central-2"), tmp_path / "2.log")
        with pytest.raises(AssertionError):
            second.start()
        assert second.wait(10) == 2
        (line,) = second.log().strip().splitlines()
        assert "SQLite allows one worker" in line and str(first.process.pid if first.process else "") in line
    finally:
        first.stop()


async def test_while_the_database_is_unreachable_nothing_is_acknowledged_and_nothing_lost(
    tmp_path: Path,
    postgres_url: str,
    engine: Engine,
    central_broker: Mosquitto,
    gateways: list[ChainedGateway],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_central_config(write_central_config(tmp_path, postgres_url, central_broker.url))
    name = postgres_url.rsplit("/", 1)[1]
    async with Worker(settings, engine) as worker:
        await worker.session.wait_connected()
        publish_round(gateways, 20)
        await async_wait_until(lambda: all_stored_once(engine, gateways), what="the first events")
        with admin_connection() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        publish_round(gateways, 30)
        await async_wait_until(lambda: "database unavailable" in caplog.text, what="the batch held")
        with admin_connection() as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await async_wait_until(lambda: all_stored_once(engine, gateways), 60, "every event stored once")


def admin_connection() -> Any:
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True)
