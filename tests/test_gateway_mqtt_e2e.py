"""The MQTT contract with the whole gateway: `lockergw run` in a subprocess, simulated devices, and a
private Mosquitto that the tests stop and restart (SPEC §7–§8, issue 4's must-shows)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from broker.kit import Capture, Received, events_of, is_event, signed
from broker.mosquitto import Mosquitto, TlsFiles
from gateway_world import Daemon, running, write_site

from gateway.config import load_config
from gateway.events import verify_chain
from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)

BASE = "lockers/test-site/gw-e2e"
CARDS = [("3C00CE754C", "A-03"), ("14008EC793", "A-01")]
PEOPLE = [
    {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
    {"id": "C-2", "uid": "14008EC793", "holder": "ben", "role": "user", "scope": ["A-01"]},
]


def seed(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(state_dir) as store:
        store.upsert(PEOPLE, by="test", now=datetime.now(UTC))


async def devices_online(gw: Daemon) -> None:
    await gw.wait_for("board.online", board="board-a")
    await gw.wait_for("reader.online", reader="bank-a")


async def tap_and_wait(site: SimulatedSite, gw: Daemon, count: int, since: int) -> None:
    """`count` taps alternating two cards at bank-a, each awaited until the gateway granted it."""
    for n in range(count):
        uid, _ = CARDS[n % 2]
        await site.tap("bank-a", uid, hold=0.05)
        await gw.wait_until(lambda n=n: sum(e["kind"] == "access.granted" for e in gw.events[since:]) > n)
        await asyncio.sleep(0.12)  # the next presentation of a card needs repeat_gap_s (0.1 s) of silence


def unlocks(site: SimulatedSite) -> int:
    return sum(1 for f in site.frames_received("board-a") if f[2] == 0x31)


def has_seqs(seqs: set[int]) -> Callable[[list[Received]], bool]:
    def check(messages: list[Received]) -> bool:
        return seqs <= {e["seq"] for e in events_of(messages)}

    return check


async def wait_all(capture: Capture, seqs: set[int], timeout: float = 20) -> list[dict[str, Any]]:
    try:
        await capture.wait_until(has_seqs(seqs), timeout)
    except TimeoutError:
        missing = sorted(seqs - {e["seq"] for e in events_of(capture.messages)})
        raise AssertionError(f"events never arrived: seq {missing}") from None
    return events_of(capture.messages)


async def test_broker_down_50_taps_all_arrive_historical(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory(persistence=True)  # the consumer's session survives the restart
    config, settings = write_site(tmp_path, broker.url, repeat_gap=0.1)
    seed(settings.gateway.state_dir)
    consumer = "central-outage"
    async with SimulatedSite(settings) as site, running(config) as gw:
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            await devices_online(gw)
            await capture.wait_for(lambda m: is_event(m) and m.json()["kind"] == "board.online")
        broker.stop()
        mark, unlocks_before = len(gw.events), unlocks(site)
        await tap_and_wait(site, gw, 50, mark)
        # The doors opened as normal while the broker was away.
        async with asyncio.timeout(5):
            while unlocks(site) - unlocks_before < 50:
                await asyncio.sleep(0.05)
        outage = {e["seq"] for e in gw.events[mark:]}
        granted = {e["seq"] for e in gw.events[mark:] if e["kind"] == "access.granted"}
        assert len(granted) == 50
        broker.start()
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            received = await wait_all(capture, outage)
        during = [e for e in received if e["seq"] in outage]
        assert all(e["historical"] is True for e in during)
        assert {e["seq"] for e in during if e["kind"] == "access.granted"} == granted
        unique = {e["seq"]: e for e in received}
        ordered = [unique[s] for s in sorted(unique)]
        assert [e["seq"] for e in ordered] == list(range(ordered[0]["seq"], ordered[-1]["seq"] + 1))
        assert verify_chain(ordered, prev_hash=ordered[0]["prev_hash"]) is None


async def test_sigkill_with_backlog_in_flight_loses_nothing_and_the_will_fires(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory(persistence=True)
    config, settings = write_site(tmp_path, broker.url, repeat_gap=0.1)
    seed(settings.gateway.state_dir)
    consumer = "central-kill"
    async with SimulatedSite(settings) as site:
        async with Capture(broker.url, f"{BASE}/#", identifier=consumer, persistent=True) as capture:
            gw = await Daemon(config).start()
            online = await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "online")
            first_boot = online.json()["boot_id"]
            await devices_online(gw)
            delivered_before = {e["seq"] for e in events_of(capture.messages)}
        broker.stop()
        await tap_and_wait(site, gw, 30, len(gw.events))
        journaled = {e["seq"] for e in gw.events}
        broker.start()
        async with Capture(broker.url, f"{BASE}/#", identifier=consumer, persistent=True) as capture:
            # Kill the gateway as soon as the backlog starts to flow.
            await capture.wait_for(lambda m: is_event(m) and m.json()["historical"] is True)
            await gw.stop(signal.SIGKILL)
            will = await capture.wait_for(
                lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "offline", timeout=15
            )
            assert will.json()["boot_id"] == first_boot
            async with running(config) as gw2:
                back = await capture.wait_for(
                    lambda m: (
                        m.topic == f"{BASE}/state"
                        and m.json()["state"] == "online"
                        and m.json()["boot_id"] != first_boot
                    )
                )
                assert back.json()["boot_id"] == gw2.events[0]["boot_id"]
                received = await wait_all(capture, journaled - delivered_before)
                # Duplicates allowed, none missing.
                assert journaled <= delivered_before | {e["seq"] for e in received}


async def test_bad_requests_are_answered_and_the_gateway_keeps_granting(broker: Mosquitto, tmp_path: Path) -> None:
    config, settings = write_site(tmp_path, broker.url)
    seed(settings.gateway.state_dir)
    async with SimulatedSite(settings) as site, running(config) as gw, Capture(broker.url, f"{BASE}/#") as capture:
        await devices_online(gw)
        await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "online")
        bad: list[tuple[str, bytes, str]] = [
            ("health_check", b"{not json", "JSON"),
            ("no/such_command", json.dumps({"transaction": 1}).encode(), "unknown command"),
            ("lockers/open", json.dumps({"transaction": 2, "operator": "x", "reason": "y"}).encode(), "locker"),
            (
                "lockers/open",
                json.dumps({"transaction": 3, "locker": "Z-99", "operator": "x", "reason": "y"}).encode(),
                "Z-99",
            ),
            (
                "credentials/set_status",
                json.dumps({"transaction": 4, "id": "C-1", "status": "melted"}).encode(),
                "status",
            ),
            ("credentials/upsert", json.dumps({"transaction": 5, "credentials": [{"id": "C-7"}]}).encode(), "missing"),
            ("health_check", b"x" * (4_194_304 + 10), ""),
        ]
        answered: list[Received] = []
        for command, body, fragment in bad:
            if command.startswith(("lockers/", "credentials/")):  # well-signed, so the fault shown is the field's
                body = json.dumps(signed(f"{BASE}/request/{command}", json.loads(body))).encode()
            await capture.publish(f"{BASE}/request/{command}", body)
            response = await capture.wait_for(
                lambda m, c=command: (
                    m.topic == f"{BASE}/response/{c}"
                    and m.json()["status"] == "error"
                    and all(m is not seen for seen in answered)
                )
            )
            answered.append(response)
            error = response.json()["error"]
            assert fragment.lower() in error.lower(), error
        # Nothing changed, and taps still work.
        ok = await capture.request(BASE, "credentials/get", {"id": "C-1"})
        assert ok["status"] == "ok" and ok["data"]["status"] == "active" and "uid" not in ok["data"]
        await site.tap("bank-a", "3C00CE754C")
        await gw.wait_for("access.granted", locker="A-03")
        # An `ok` upsert is in force for the very next tap.
        upsert = await capture.request(
            BASE,
            "credentials/upsert",
            {
                "credentials": [{"id": "C-8", "uid": "62E3086CED", "holder": "cy", "role": "user", "scope": ["A-01"]}],
                "by": "central",
            },
        )
        assert upsert["status"] == "ok", upsert
        await site.tap("bank-a", "62E3086CED")
        granted = await gw.wait_for("access.granted", locker="A-01")
        assert granted["credential"]["id"] == "C-8"
        # A remote open is journaled as an override and reaches the board.
        opened = await capture.request(BASE, "lockers/open", {"locker": "B-02", "operator": "desk", "reason": "test"})
        assert opened["status"] == "ok", opened
        remote = await gw.wait_for("access.granted", locker="B-02")
        assert remote["reason"] == "remote_open" and remote["override"] is True


async def test_the_daemon_over_tls_with_password_under_the_documented_acl(
    mosquitto_factory: Callable[..., Mosquitto], test_pki: TlsFiles, tmp_path: Path
) -> None:
    acl = (Path(__file__).parents[1] / "docs" / "mosquitto" / "lockergw.acl").read_text()
    passwords = {"gw-01": "pw-gw-01", "gw-02": "pw-gw-02", "central": "pw-central"}
    broker = mosquitto_factory(tls=test_pki, passwords=passwords, acl=acl, require_certificate=True, debug_log=True)
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("pw-gw-01\n")
    config, _ = write_site(tmp_path, broker.url)
    text = (
        config.read_text()
        .replace('id = "gw-e2e"', 'id = "gw-01"')
        .replace('site = "test-site"', 'site = "north-school"')
        .replace(
            "keepalive = 5",
            f'keepalive = 5\nusername = "gw-01"\npassword_file = "{password_file}"\nca_file = "{test_pki.ca_cert}"\n'
            f'cert_file = "{test_pki.client_cert}"\nkey_file = "{test_pki.client_key}"',
        )
    )
    config.write_text(text)
    settings = load_config(config)
    seed(settings.gateway.state_dir)
    base = "lockers/north-school/gw-01"
    async with (
        SimulatedSite(settings) as site,
        Capture(broker.url, "lockers/#", username="central", password="pw-central", tls=test_pki) as central,
        Capture(broker.url, username="gw-02", password="pw-gw-02", tls=test_pki) as intruder,
        running(config) as gw,
    ):
        online = await central.wait_for(lambda m: m.topic == f"{base}/state" and m.json()["state"] == "online")
        assert online.json()["boot_id"] == gw.events[0]["boot_id"]
        await devices_online(gw)
        await site.tap("bank-a", "3C00CE754C")
        await central.wait_for(lambda m: is_event(m) and m.json()["kind"] == "access.granted")
        # Another gateway's identity cannot command this one: the broker drops its request.
        await intruder.publish(
            f"{base}/request/lockers/open", {"transaction": "x", "locker": "A-01", "operator": "x", "reason": "x"}
        )
        health = await central.request(base, "health_check", {})  # central's own request goes through
        assert health["status"] == "ok" and health["data"]["boot_id"] == gw.events[0]["boot_id"]
        assert central.on("/response/lockers/open") == []
        assert gw.find("access.granted", locker="A-01") is None
        assert "Denied PUBLISH" in broker.log_text()
