"""Central beside the real gateway: `lockergw run` on the project's simulators, a private Mosquitto, and a
central worker storing what the gateway publishes (issue 11's must-shows with the real daemon)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker.mosquitto import Mosquitto
from gateway_world import devices_online_all, running, write_site
from sqlalchemy import Engine, delete, select, update

from central import metrics
from central.config import SigningSection, load_central_config
from central.database import open_database
from central.schema import event_chain, events, gateways, lockers
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


def locker_door(engine: Engine, locker: str) -> str | None:
    with engine.connect() as connection:
        query = select(lockers.c.door).where(lockers.c.gateway == GATEWAY, lockers.c.locker == locker)
        return connection.execute(query).scalar()  # type: ignore[no-any-return]


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
        await async_wait_until(lambda: locker_door(engine, "A-01") == "open", what="the locker's state: open")
        await site.close("A-01")
        await gw.wait_for("door.closed", locker="A-01")
        await async_wait_until(lambda: locker_door(engine, "A-01") == "closed", what="the locker's state: closed")
        await async_wait_until(lambda: alert_rows(engine, "door.left_open")[0].state == "resolved", what="resolved")
        await async_wait_until(lambda: alert_rows(engine, "door.left_open")[0].published, what="published")


async def test_signed_requests_reach_the_real_gateway_and_a_lost_range_is_replayed(
    tmp_path: Path, broker: Mosquitto, sqlite_url: str
) -> None:
    key_file = tmp_path / "request.key"
    key_file.write_text("k" * 40 + "\n")
    key_file.chmod(0o600)
    engine = open_database(sqlite_url)
    settings = load_central_config(write_central_config(tmp_path, sqlite_url, broker.url))
    settings = settings.model_copy(update={"signing": SigningSection(hmac_key_file=str(key_file))})
    config, gateway_settings = write_site(tmp_path / "gw", broker.url)
    env = {"LOCKERGW_MQTT__HMAC_KEY_FILE": str(key_file)}
    async with Worker(settings, engine) as worker, SimulatedSite(gateway_settings) as site, running(config, env) as gw:
        await devices_online_all(gw)
        await worker.requests.wait_connected(10)
        # the gateway publishes `online` only after subscribing to its requests
        await async_wait_until(lambda: state_of(engine) == "online", what="the gateway online")
        opened = await worker.request(
            SITE, GATEWAY, "lockers/open", {"locker": "A-03", "operator": "ops", "reason": "t"}
        )
        assert opened["status"] == "ok", opened
        await site.wait_until(lambda: any(f[2] == 0x31 for f in site.frames_received("board-a")))
        last = (await gw.wait_for("access.granted", reason="remote_open"))["seq"]
        await async_wait_until(lambda: len(stored_seqs(engine, SITE, GATEWAY)) >= last, what="events stored")
        replays_before = metrics.REPLAYS_SENT._value.get()
        forget(engine, [2, 3])  # as if central had lost them
        await async_wait_until(lambda: stored_seqs(engine, SITE, GATEWAY)[:4] == [1, 2, 3, 4], what="replayed")
        await async_wait_until(lambda: gateway_row(engine, SITE, GATEWAY).chain == "ok", what="chain ok")
        assert metrics.REPLAYS_SENT._value.get() > replays_before  # signed; the gateway answered it
    engine.dispose()


def forget(engine: Engine, seqs: list[int]) -> None:
    """Delete stored events and rewind verification to just below them: a gap central must repair."""
    with engine.begin() as connection:
        for table in (events, event_chain):
            connection.execute(delete(table).where(table.c.gateway == GATEWAY, table.c.seq.in_(seqs)))
        below = connection.execute(
            select(event_chain.c.hash).where(event_chain.c.gateway == GATEWAY, event_chain.c.seq == min(seqs) - 1)
        ).scalar_one()
        connection.execute(
            update(gateways)
            .where(gateways.c.gateway == GATEWAY)
            .values(verified_seq=min(seqs) - 1, verified_hash=below, chain="gap")
        )
