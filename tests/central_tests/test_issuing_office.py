"""Central as the estate's issuing office, with the real daemon: `lockergw run` on the simulators, a private
Mosquitto, real PostgreSQL, central's worker pushing what its HTTP API issues (issue 12's must-shows)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from broker.mosquitto import Mosquitto
from gateway_world import Daemon, devices_online_all, running, write_site
from sqlalchemy import Engine, select

from central.api.app import create_app
from central.config import SigningSection, load_central_config
from central.context import CentralContext
from central.database import open_database
from central.schema import audit_log
from central.worker import Worker
from central_tests.api_kit import bearer, tokens
from central_tests.kit import CentralProcess, async_wait_until, gateway_row, write_central_config
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(150)
SITE = "test-site"
UID = "3C00CE754C"
CARD = {"id": "C-1", "uid": UID, "holder": "amira", "role": "user", "scope": ["A-01"]}


@dataclass
class Central:
    worker: Worker
    engine: Engine
    api: httpx.AsyncClient
    operator: dict[str, str]
    key_file: Path

    def env(self, gateway: str) -> dict[str, str]:
        return {"LOCKERGW_MQTT__HMAC_KEY_FILE": str(self.key_file), "LOCKERGW_GATEWAY__ID": gateway}

    async def gateways(self) -> dict[str, dict[str, Any]]:
        answer = await self.api.get("/api/gateways", headers=self.operator)
        assert answer.status_code == 200, answer.text
        return {g["gateway"]: g for g in answer.json()["gateways"]}

    async def wait_credentials(self, gateway: str, state: str, timeout: float = 20.0) -> None:
        """Until `GET /api/gateways` shows this gateway's credentials in `state` (polled; bounded)."""
        async with asyncio.timeout(timeout):
            while (await self.gateways()).get(gateway, {}).get("credentials") != state:
                await asyncio.sleep(0.05)


@pytest.fixture
async def central(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> AsyncIterator[Central]:
    key_file = tmp_path / "request.key"
    key_file.write_text("k" * 40 + "\n")
    key_file.chmod(0o600)
    engine = open_database(postgres_url)
    settings = load_central_config(write_central_config(tmp_path, postgres_url, broker.url))
    settings = settings.model_copy(update={"signing": SigningSection(hmac_key_file=str(key_file))})
    made = tokens(engine)
    async with Worker(settings, engine) as worker:
        await worker.session.wait_connected()
        app = create_app(CentralContext(settings, engine, worker, worker))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://central") as api:
            yield Central(worker, engine, api, bearer(made["operator"]), key_file)
    engine.dispose()


async def online(central: Central, gw: Daemon, gateway: str) -> None:
    await devices_online_all(gw)
    await async_wait_until(
        lambda: (row := gateway_row(central.engine, SITE, gateway)) is not None and row.state == "online",
        what=f"{gateway} online in central",
    )


async def test_a_credential_issued_through_the_api_opens_a_locker_at_the_next_tap_on_both_gateways(
    tmp_path: Path, broker: Mosquitto, central: Central
) -> None:
    config_1, settings_1 = write_site(tmp_path / "gw-1", broker.url)
    config_2, settings_2 = write_site(tmp_path / "gw-2", broker.url)
    async with (
        SimulatedSite(settings_1) as site_1,
        SimulatedSite(settings_2) as site_2,
        running(config_1, central.env("gw-1")) as gw_1,
        running(config_2, central.env("gw-2")) as gw_2,
    ):
        await online(central, gw_1, "gw-1")
        await online(central, gw_2, "gw-2")
        issued = await central.api.post(
            f"/api/sites/{SITE}/credentials", json={"credentials": [CARD]}, headers=central.operator
        )
        assert issued.status_code == 200, issued.text
        assert issued.json()["revision"] == 1 and UID not in issued.text
        await central.wait_credentials("gw-1", "in_sync")
        await central.wait_credentials("gw-2", "in_sync")
        for site, gw in ((site_1, gw_1), (site_2, gw_2)):
            since = len(gw.events)
            await site.tap("bank-a", UID)
            granted = await gw.wait_for("access.granted", since=since, locker="A-01")
            assert granted["credential"]["id"] == "C-1" and granted["credential"]["holder"] == "amira"
        gateways = await central.gateways()
        assert gateways["gw-1"]["credentials"] == gateways["gw-2"]["credentials"] == "in_sync"


async def test_a_key_revoked_while_its_gateway_was_stopped_is_denied_after_the_restart(
    tmp_path: Path, broker: Mosquitto, central: Central
) -> None:
    config, settings = write_site(tmp_path / "gw", broker.url)
    env = central.env("gw-e2e")
    async with SimulatedSite(settings), running(config, env) as gw:
        await online(central, gw, "gw-e2e")
        issued = await central.api.post(
            f"/api/sites/{SITE}/credentials", json={"credentials": [CARD]}, headers=central.operator
        )
        assert issued.status_code == 200, issued.text
        await central.wait_credentials("gw-e2e", "in_sync")
        assert await gw.stop() == 0
    await async_wait_until(lambda: gateway_row(central.engine, SITE, "gw-e2e").state == "offline", what="offline")
    revoked = await central.api.post(
        f"/api/sites/{SITE}/credentials/C-1/status",
        json={"status": "revoked", "reason": "left the school", "by": "office"},
        headers=central.operator,
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked", revoked.text
    assert (await central.gateways())["gw-e2e"]["credentials"] == "pending (1 change)"
    async with SimulatedSite(settings) as site, running(config, env) as gw:
        await online(central, gw, "gw-e2e")
        await central.wait_credentials("gw-e2e", "in_sync")
        changed = await gw.wait_for("credentials.changed", action="snapshot")
        assert "C-1" in changed["ids"]
        since = len(gw.events)
        await site.tap("bank-a", UID)
        denied = await gw.wait_for("access.denied", since=since)
        assert denied["reason"] == "credential_revoked"


async def test_a_local_change_at_the_gateway_is_seen_and_central_puts_its_own_set_back(
    tmp_path: Path, broker: Mosquitto, central: Central
) -> None:
    config, settings = write_site(tmp_path / "gw", broker.url)
    env = central.env("gw-e2e")
    async with SimulatedSite(settings) as site, running(config, env) as gw:
        await online(central, gw, "gw-e2e")
        issued = await central.api.post(
            f"/api/sites/{SITE}/credentials", json={"credentials": [CARD]}, headers=central.operator
        )
        assert issued.status_code == 200, issued.text
        await central.wait_credentials("gw-e2e", "in_sync")
        before = len(gw.events)
        local = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "credentials", "add", "--config", str(config),
            "--id", "L-1", "--uid", "14008EC794", "--holder", "intruder", "--role", "user", "--scope", "A-03",
            env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await local.wait() == 0
        await gw.wait_for("credentials.changed", since=before, action="upsert", by="cli")
        snapshot = await gw.wait_for("credentials.changed", since=before, action="snapshot")
        assert "L-1" in snapshot["ids"]  # removed: central is authoritative for the site it manages
        await central.wait_credentials("gw-e2e", "in_sync")
        with central.engine.connect() as connection:
            drift = connection.execute(select(audit_log).where(audit_log.c.action == "credentials.drift")).one()
        assert drift.target == "gw-e2e" and "changed locally" in drift.detail
        since = len(gw.events)
        await site.tap("bank-a", "14008EC794")
        denied = await gw.wait_for("access.denied", since=since)
        assert denied["reason"] == "unknown_credential"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_real_central_process_pushes_what_it_issues_and_after_a_restart_what_was_issued_meanwhile(
    tmp_path: Path, broker: Mosquitto, postgres_url: str
) -> None:
    key_file = tmp_path / "request.key"
    key_file.write_text("k" * 40 + "\n")
    key_file.chmod(0o600)
    port = free_port()
    config = write_central_config(tmp_path, postgres_url, broker.url)
    text = config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    config.write_text(text + f'[signing]\nhmac_key_file = "{key_file}"\n')
    engine = open_database(postgres_url)
    operator = bearer(tokens(engine)["operator"])
    gw_config, gw_settings = write_site(tmp_path / "gw", broker.url)
    env = {"LOCKERGW_MQTT__HMAC_KEY_FILE": str(key_file)}
    central = CentralProcess(config, tmp_path / "central.log")

    async def credentials_state(api: httpx.AsyncClient) -> str | None:
        """This gateway's `credentials` in `GET /api/gateways`; None while central's server is not up yet."""
        try:
            answer = await api.get("/api/gateways", headers=operator)
        except httpx.TransportError:
            return None
        return next((g["credentials"] for g in answer.json()["gateways"] if g["gateway"] == "gw-e2e"), "absent")

    async def until_in_sync(api: httpx.AsyncClient) -> None:
        async with asyncio.timeout(20):
            while await credentials_state(api) != "in_sync":
                await asyncio.sleep(0.05)

    try:
        async with SimulatedSite(gw_settings) as site, running(gw_config, env) as gw:
            await devices_online_all(gw)
            await asyncio.to_thread(central.start)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
                async with asyncio.timeout(20):
                    while await credentials_state(api) is None:
                        await asyncio.sleep(0.05)
                issued = await api.post(
                    f"/api/sites/{SITE}/credentials", json={"credentials": [CARD]}, headers=operator
                )
                assert issued.status_code == 200, issued.text
                await until_in_sync(api)
                since = len(gw.events)
                await site.tap("bank-a", UID)
                await gw.wait_for("access.granted", since=since, locker="A-01")

                central.signal(signal.SIGTERM)
                assert await asyncio.to_thread(central.wait) == 0
                csv = tmp_path / "more.csv"
                csv.write_text("id,uid,holder,role,scope\nC-2,14008EC793,ben,user,A-03\n")
                imported = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.cli", "central", "credentials", "import", str(csv),
                    "--site", SITE, "--config", str(config), stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                assert await imported.wait() == 0
                central = CentralProcess(config, tmp_path / "central.log")
                await asyncio.to_thread(central.start)
                await until_in_sync(api)
                since = len(gw.events)
                await site.tap("bank-a", "14008EC793")
                await gw.wait_for("access.granted", since=since, locker="A-03")
    finally:
        central.stop()
        engine.dispose()
