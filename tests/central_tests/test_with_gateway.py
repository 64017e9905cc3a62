"""Central beside the real gateway: `lockergw run` on the project's simulators, a private Mosquitto, and a
central worker storing what the gateway publishes (issue 11's must-shows with the real daemon)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker.mosquitto import Mosquitto
from gateway_world import devices_online_all, running, write_site
from sqlalchemy import Engine, select

from central.config import load_central_config
from central.database import open_database
from central.schema import events
from central.worker import Worker
from central_tests.kit import alert_rows, async_wait_until, gateway_row, stored_seqs, write_central_config
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)
SITE, GATEWAY = "test-site", "gw-e2e"


@pytest.fixture
async def central(tmp_path: Path, sqlite_url: str, broker: Mosquitto) -> AsyncIterator[tuple[Worker, Engine]]:
    engine = open_database(sqlite_url)
    settings = load_central_config(write_central_config(tmp_path, sqlite_url, broker.url, gateway_offline_s=1))
    async with Worker(settings, engine) as worker:
        await worker.session.wait_connected()
        yield worker, engine
    engine.dispose()


def state_of(engine: Engine) -> str | None:
    row = gateway_row(engine, SITE, GATEWAY)
    return None if row is None else str(row.state)


async def test_the_gateways_events_land_and_a_stopped_gateway_is_alerted_until_it_returns(
    tmp_path: Path, broker: Mosquitto, central: tuple[Worker, Engine]
) -> None:
    _worker, engine = central
    config, settings = write_site(tmp_path / "gw", broker.url)
    async with SimulatedSite(settings), running(config) as gw:
        await devices_online_all(gw)
        await async_wait_until(lambda: state_of(engine) == "online", what="the gateway online")
        last = gw.events[-1]["seq"]
        await async_wait_until(lambda: len(stored_seqs(engine, SITE, GATEWAY)) >= last, what="its events stored")
        assert stored_seqs(engine, SITE, GATEWAY)[:last] == list(range(1, last + 1))
        row = gateway_row(engine, SITE, GATEWAY)
        assert row.chain == "ok" and json.loads(row.info)["gateway"] == GATEWAY
        assert await gw.stop() == 0
    await async_wait_until(lambda: alert_rows(engine, "gateway.offline"), what="gateway.offline")
    async with SimulatedSite(settings), running(config):
        await async_wait_until(lambda: alert_rows(engine, "gateway.offline")[0].state == "resolved", what="resolved")
    with engine.connect() as connection:
        kinds = set(connection.execute(select(events.c.kind)).scalars())
    assert {"gateway.started", "gateway.stopped"} <= kinds


async def test_a_door_left_open_on_the_simulator_is_alerted_and_closing_it_resolves_the_alert(
    tmp_path: Path, broker: Mosquitto, central: tuple[Worker, Engine]
) -> None:
    _worker, engine = central
    config, settings = write_site(tmp_path / "gw", broker.url)
    async with SimulatedSite(settings) as site, running(config) as gw:
        await devices_online_all(gw)
        await site.open("A-01")  # forced: nobody unlocked it
        await gw.wait_for("door.left_open", locker="A-01")
        await async_wait_until(lambda: alert_rows(engine, "door.left_open"), what="door.left_open")
        assert alert_rows(engine, "door.forced_open")[0].state == "open"
        await site.close("A-01")
        await gw.wait_for("door.closed", locker="A-01")
        await async_wait_until(lambda: alert_rows(engine, "door.left_open")[0].state == "resolved", what="resolved")
        await async_wait_until(lambda: alert_rows(engine, "door.left_open")[0].published, what="published")
