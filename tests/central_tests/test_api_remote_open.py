"""The remote open end to end: `POST /api/sites/{site}/lockers/{locker}/open` → central's request link →
a private Mosquitto → the real gateway daemon (`lockergw run` on the simulators, signed requests required
by its `[mqtt] hmac_key_file`) → the lock opens on the simulated board, and the gateway's answer comes
back as the HTTP response. The gateway's retained state and locker topics are put in central's tables as
the ingest worker would store them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from broker.kit import Capture, running_gateway, write_signing_key
from broker.mosquitto import Mosquitto
from gateway_world import running, write_site
from sqlalchemy import Engine, insert, select

from central.api.app import create_app
from central.config import CentralSettings
from central.context import CentralContext, GatewayTimeout, GatewayUnavailable
from central.database import open_database
from central.requests import GatewayRequestLink
from central.schema import audit_log, gateways, lockers
from central_tests.api_kit import FakeStatus, bearer, tokens
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(90)

SITE, GATEWAY = "test-site", "gw-e2e"
BASE = f"lockers/{SITE}/{GATEWAY}"


def central_settings(database: str, broker: Mosquitto, key_file: Path | str) -> CentralSettings:
    return CentralSettings(
        central={"id": "central-t", "database": database},  # type: ignore[arg-type]
        mqtt={"url": broker.url},  # type: ignore[arg-type]
        signing={"hmac_key_file": str(key_file)},  # type: ignore[arg-type]
    )


async def store_what_the_gateway_published(engine: Engine, capture: Capture, locker: str) -> None:
    """The retained `state` and `lockers/{locker}` rows, as ingest stores them."""
    state = await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "online")
    door = await capture.wait_for(lambda m: m.topic == f"{BASE}/lockers/{locker}")
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(gateways).values(
                site=SITE, gateway=GATEWAY, state="online", boot_id=state.json()["boot_id"], last_seen=now
            )
        )
        connection.execute(
            insert(lockers).values(
                site=SITE, gateway=GATEWAY, locker=locker, door=door.json()["door"],
                service=door.json()["service"], occupied=door.json()["occupied"], updated_at=now,
            )
        )  # fmt: skip


@pytest.fixture
async def api(sqlite_url: str, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Engine]]:
    key_file = write_signing_key(tmp_path / "site.key")  # the key write_site gives the gateway
    engine = open_database(sqlite_url)
    settings = central_settings(sqlite_url, broker, key_file)
    async with GatewayRequestLink(settings) as link:
        assert await link.wait_connected(10)
        app = create_app(CentralContext(settings, engine, link, FakeStatus()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://central") as client:
            yield client, engine
    engine.dispose()


async def test_a_remote_open_through_the_api_opens_the_lock_on_the_simulator(
    api: tuple[httpx.AsyncClient, Engine], broker: Mosquitto, tmp_path: Path
) -> None:
    client, engine = api
    operator = bearer(tokens(engine)["operator"])
    config, settings = write_site(tmp_path / "gw", broker.url)  # signed requests required, same key
    async with (
        Capture(broker.url, f"{BASE}/#") as capture,
        SimulatedSite(settings) as site,
        running(config) as gw,
    ):
        await gw.wait_for("board.online", board="board-a")
        await store_what_the_gateway_published(engine, capture, "B-02")
        assert not site.door_open("B-02")

        body = {"operator": "front desk", "reason": "left a phone inside"}
        answer = await client.post(f"/api/sites/{SITE}/lockers/B-02/open", json=body, headers=operator)

        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["gateway"], result["locker"], result["status"]) == (GATEWAY, "B-02", "ok")
        granted = await gw.wait_for("access.granted", locker="B-02")
        assert granted["reason"] == "remote_open" and granted["operator"] == "front desk"
        assert result["data"]["seq"] == granted["seq"]
        await site.wait_until(lambda: site.door_open("B-02"))
        # The request went out signed and under this gateway's request topic; the answer came back on
        # the response topic central asked for, not the default one.
        request = capture.on("/request/lockers/open")[0].json()
        assert {"issued_at", "nonce", "hmac"} <= set(request)
        assert capture.on("/response/central/central-t-requests")
        assert not capture.on(f"{BASE}/response/lockers/open")

        # The gateway refuses an unknown locker: HTTP 409 with its own message, nothing opened.
        with engine.begin() as connection:
            connection.execute(
                insert(lockers).values(site=SITE, gateway=GATEWAY, locker="Z-99", updated_at=datetime.now(UTC))
            )
        refused = await client.post(f"/api/sites/{SITE}/lockers/Z-99/open", json=body, headers=operator)
        assert refused.status_code == 409
        assert refused.json()["error"].startswith(f"gateway {GATEWAY} refused:") and "Z-99" in refused.json()["error"]

    with engine.connect() as connection:
        outcomes = [
            (row.target, '"outcome": "ok"' in row.detail)
            for row in connection.execute(select(audit_log).order_by(audit_log.c.id))
        ]
    assert outcomes == [("B-02", True), ("Z-99", False)]


async def test_a_request_signed_with_the_wrong_key_is_refused_by_the_gateway(
    sqlite_url: str, broker: Mosquitto, tmp_path: Path
) -> None:
    write_signing_key(tmp_path / "central.key", b"some other key, just as long as the real one")
    config, settings = write_site(tmp_path / "gw", broker.url)  # with the tests' own key
    async with (
        GatewayRequestLink(central_settings(sqlite_url, broker, tmp_path / "central.key")) as link,
        Capture(broker.url, f"{BASE}/state") as capture,
        SimulatedSite(settings) as site,
        running(config) as gw,
    ):
        await gw.wait_for("board.online", board="board-a")
        await capture.wait_for(lambda m: m.json()["state"] == "online")
        assert await link.wait_connected(10)
        body = {"locker": "B-02", "operator": "x", "reason": "y"}
        answer = await link.request(SITE, GATEWAY, "lockers/open", body, timeout_s=10)
        assert answer["status"] == "error" and "bad signature" in answer["error"]
        assert gw.find("access.granted", locker="B-02") is None and not site.door_open("B-02")


async def test_no_answer_is_a_timeout_and_no_usable_key_is_refused_before_sending(
    sqlite_url: str, broker: Mosquitto, tmp_path: Path
) -> None:
    (tmp_path / "site.key").write_text("k\n")
    settings = central_settings(sqlite_url, broker, tmp_path / "site.key")
    async with GatewayRequestLink(settings) as link:
        assert await link.wait_connected(10)
        with pytest.raises(GatewayTimeout, match="gateway gw-nobody of site test-site did not answer health_check"):
            await link.request(SITE, "gw-nobody", "health_check", {}, timeout_s=0.5)
    unsigned = central_settings(sqlite_url, broker, "")
    async with GatewayRequestLink(unsigned) as link:
        assert await link.wait_connected(10)
        with pytest.raises(ValueError, match="no signing key for site 'test-site'"):
            await link.request(SITE, GATEWAY, "lockers/open", {}, timeout_s=0.5)
    unreadable = central_settings(sqlite_url, broker, tmp_path / "missing.key")
    async with GatewayRequestLink(unreadable) as link:
        with pytest.raises(ValueError, match=r"cannot read the signing key for site 'test-site' \(.*missing.key\)"):
            await link.request(SITE, GATEWAY, "lockers/open", {}, timeout_s=0.5)


async def test_the_link_comes_back_with_the_broker(sqlite_url: str, broker: Mosquitto, tmp_path: Path) -> None:
    """While the broker is away a request fails at once (502), and the link reconnects by itself."""
    async with (
        running_gateway(tmp_path / "gw", broker.url, gateway=GATEWAY, site=SITE),
        GatewayRequestLink(central_settings(sqlite_url, broker, "")) as link,
    ):
        assert await link.wait_connected(10)
        answer = await link.request(SITE, GATEWAY, "health_check", {}, timeout_s=10)  # read-only: needs no key
        assert answer["status"] == "ok"
        await asyncio.to_thread(broker.stop)
        async with asyncio.timeout(10):
            while link.connected:
                await asyncio.sleep(0.05)
        with pytest.raises(GatewayUnavailable, match="central is not connected to the broker"):
            await link.request(SITE, GATEWAY, "health_check", {}, timeout_s=10)
        await asyncio.to_thread(broker.start)
        assert await link.wait_connected(20)
        async with asyncio.timeout(20):  # the gateway reconnects on its own schedule
            while True:
                with contextlib.suppress(GatewayUnavailable):
                    if (await link.request(SITE, GATEWAY, "health_check", {}, timeout_s=1))["status"] == "ok":
                        break
                await asyncio.sleep(0.1)
