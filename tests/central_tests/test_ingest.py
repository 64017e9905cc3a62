"""Ingest, verification and gap repair with a real worker, a real Mosquitto and each database."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from broker.mosquitto import Mosquitto
from central import metrics
from central.config import load_central_config
from central.database import open_database
from central.schema import event_conflicts, events
from central.worker import Worker
from central_tests.kit import (
    ChainedGateway,
    alert_rows,
    async_wait_until,
    gateway_row,
    stored_seqs,
    write_central_config,
)
from gateway.events import event_hash
from gateway.mqtt.topics import Topics


@pytest.fixture
def engine(central_database: str) -> Engine:
    engine = open_database(central_database)
    yield engine  # type: ignore[misc]
    engine.dispose()


@pytest.fixture
async def worker(tmp_path: Path, central_database: str, engine: Engine, broker: Mosquitto) -> AsyncIterator[Worker]:
    settings = load_central_config(write_central_config(tmp_path, central_database, broker.url))
    async with Worker(settings, engine) as worker:
        await worker.session.wait_connected()
        yield worker


@pytest.fixture
def gateway_factory(broker: Mosquitto) -> Callable[..., ChainedGateway]:
    made: list[ChainedGateway] = []

    def make(site: str = "north-school", gateway: str = "gw-01", **options: object) -> ChainedGateway:
        simulated = ChainedGateway(broker.url, site, gateway, **options)  # type: ignore[arg-type]
        made.append(simulated)
        return simulated

    yield make  # type: ignore[misc]
    for simulated in made:
        simulated.close()


def chain_of(engine: Engine, site: str, gateway: str) -> tuple[str, int | None, int | None]:
    row = gateway_row(engine, site, gateway)
    return (row.chain, row.verified_seq, row.received_seq) if row else ("none", None, None)


async def test_duplicates_reordering_and_drops_end_with_chain_ok_after_repair(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    envelopes = gateway.events(60)
    shuffled = [e for e in envelopes if e["seq"] not in (7, 8, 30)]  # dropped: the gateway will replay them
    shuffled += random.Random(11).sample(envelopes, 15)  # duplicates
    random.Random(12).shuffle(shuffled)
    gateway.publish_all(shuffled)
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-01") == ("ok", 60, 60), what="chain ok")
    assert stored_seqs(engine, "north-school", "gw-01") == list(range(1, 61))
    assert gateway.replays and gateway.replays[0] == 7
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(events)).scalar_one() == 60
    assert alert_rows(engine, "chain.conflict") == []
