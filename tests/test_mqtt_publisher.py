"""The publisher against a real Mosquitto: retained state, live and historical events, outages, kills."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from broker.kit import Capture, Received, events_of, is_event, running_gateway
from broker.mosquitto import Mosquitto

from gateway.events import verify_chain

GATEWAY_PROCESS = Path(__file__).parent / "broker" / "gateway_process.py"
BASE = "lockers/test-site/gw-01"


def seqs(messages: list[Received]) -> list[int]:
    return [e["seq"] for e in events_of(messages)]


def state_is(state: str, boot_id: str | None = None) -> Callable[[Received], bool]:
    def check(m: Received) -> bool:
        if m.topic != f"{BASE}/state":
            return False
        payload = m.json()
        return bool(payload["state"] == state and (boot_id is None or payload["boot_id"] == boot_id))

    return check


async def test_retained_state_info_and_lockers_then_live_events(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig:
        await rig.service.flush(5)  # nothing journaled yet: returns at once
        async with Capture(broker.url, f"{BASE}/#") as capture:
            online = await capture.wait_for(state_is("online", rig.bank.boot_id))
            assert online.retain
            info = await capture.wait_for(lambda m: m.topic == f"{BASE}/info")
            assert info.retain and [x["id"] for x in info.json()["lockers"]] == ["A-01", "A-02", "S-01"]
            lockers = await capture.wait_count(lambda m: "/lockers/" in m.topic, 3)
            assert {m.topic.rsplit("/", 1)[1] for m in lockers} == {"A-01", "A-02", "S-01"}
            assert all(m.retain and m.json()["door"] == "closed" for m in lockers)

            rig.journal_events(5)
            received = await capture.wait_count(is_event, 5)
            envelopes = events_of(received)
            assert [e["seq"] for e in envelopes] == [1, 2, 3, 4, 5]
            assert all(e["historical"] is False for e in envelopes)
            assert all(m.topic == f"{BASE}/events/door.opened" for m in received)
            assert verify_chain(envelopes) is None
            assert await rig.service.flush(5)
            assert rig.journal.backlog() == 0

            rig.service.locker_changed("A-02", {**rig.bank.locker_payload("A-02"), "door": "open"})
            update = await capture.wait_for(lambda m: m.topic == f"{BASE}/lockers/A-02" and m.json()["door"] == "open")
            assert update.json()["service"] == "in_service"
    # leaving the service publishes state offline (retained), seen by a later subscriber
    async with Capture(broker.url, f"{BASE}/state") as later:
        offline = await later.wait_for(state_is("offline", rig.bank.boot_id))
        assert offline.retain


async def test_state_stays_offline_until_the_gateway_is_ready(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, broker.url, ready=False) as rig,
        Capture(broker.url, f"{BASE}/#") as capture,
    ):
        await capture.wait_for(lambda m: m.topic == f"{BASE}/info")
        assert not capture.on("/state")
        rig.service.set_ready()
        await capture.wait_for(state_is("online", rig.bank.boot_id))


async def test_broker_outage_backlog_arrives_complete_and_historical(
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(persistence=True)  # the consumer's session survives the restart
    consumer = "consumer-outage"
    async with running_gateway(tmp_path, broker.url) as rig:
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            rig.journal_events(1)
            await capture.wait_for(is_event)
        broker.stop()
        rig.journal_events(50)  # the gateway keeps deciding with the broker down
        assert not await rig.service.flush(0.3)
        assert rig.journal.backlog() == 50
        broker.start()
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            received = await capture.wait_count(is_event, 50, timeout=15)
            envelopes = events_of(received)
            assert [e["seq"] for e in envelopes] == list(range(2, 52))
            assert all(e["historical"] is True for e in envelopes)
            assert await rig.service.flush(5)
            assert rig.journal.backlog() == 0
            # caught up again: the next event goes out live
            rig.journal_events(1)
            live = await capture.wait_for(lambda m: is_event(m) and m.json()["seq"] == 52)
            assert live.json()["historical"] is False


@pytest.mark.parametrize("broker_inflight", [None, 1000])
async def test_a_backlog_drains_in_order_within_the_brokers_receive_maximum(
    broker_inflight: int | None,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A window of 100 against Mosquitto's default Receive Maximum (20, its max_inflight_messages) is cut
    to what the broker allows, with a log line that says which setting to raise; against a broker set as
    docs/mosquitto/lockergw.conf is, the window is used as configured. Either way every event arrives,
    in seq order, and is marked sent."""
    extra = () if broker_inflight is None else (f"max_inflight_messages {broker_inflight}",)
    broker = mosquitto_factory(extra=extra)
    caplog.set_level(logging.INFO, logger="lockergw.mqtt")
    async with (
        Capture(broker.url, f"{BASE}/events/#") as capture,
        running_gateway(tmp_path, broker.url, ready=False, connect=False, inflight=100) as rig,
    ):
        rig.journal_events(300)
        rig.service.set_ready()
        received = await capture.wait_count(is_event, 300, timeout=30)
        assert seqs(received) == list(range(1, 301))
        assert await rig.service.flush(10)
        assert rig.journal.backlog() == 0
    warnings = [r.getMessage() for r in caplog.records if "Receive Maximum" in r.getMessage()]
    if broker_inflight is None:
        assert len(warnings) == 1 and "accepts 20 unacknowledged" in warnings[0]
        assert "max_inflight_messages" in warnings[0]
    else:
        assert warnings == []


async def test_a_broker_that_stops_answering_gets_the_unacknowledged_events_in_the_next_session(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """Events published to a broker that then freezes (SIGSTOP: the connection stays open, no PUBACK
    comes) are not marked sent; the publisher drops the session and, once the broker answers again,
    sends them in the next one."""
    broker = mosquitto_factory(persistence=True)
    consumer = "consumer-frozen"
    async with running_gateway(tmp_path, broker.url) as rig:
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            rig.journal_events(1)
            await capture.wait_for(is_event)
        assert await rig.service.flush(5)
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            rig.journal_events(5)
            async with asyncio.timeout(30):  # keepalive (5 s) or the PUBACK timeout ends the session
                while rig.service.publisher.connected:
                    await asyncio.sleep(0.1)
            assert rig.journal.backlog() == 5  # none of them was acknowledged, none is marked sent
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert await rig.service.publisher.wait_connected(30)
        assert await rig.service.flush(30)
        async with Capture(broker.url, f"{BASE}/events/#", identifier=consumer, persistent=True) as capture:
            received = await capture.wait_count(lambda m: is_event(m) and m.json()["seq"] == 6, 1, timeout=15)
            assert received
        assert rig.journal.backlog() == 0


async def test_flush_gives_up_after_its_timeout_without_a_broker(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig:
        broker.stop()
        rig.journal_events(3)
        started = asyncio.get_running_loop().time()
        assert await rig.service.flush(0.5) is False
        assert asyncio.get_running_loop().time() - started < 2
        assert rig.journal.backlog() == 3


async def test_gateway_starts_with_no_broker_and_delivers_once_it_appears(
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lockergw.mqtt")
    broker = mosquitto_factory()
    broker.stop()

    def attempts() -> int:
        return sum("unreachable" in r.getMessage() for r in caplog.records)

    async with running_gateway(tmp_path, broker.url, connect=False) as rig:
        rig.journal_events(3)
        async with asyncio.timeout(10):
            while attempts() < 3:  # a few failed attempts (the back-off is what is under test)
                await asyncio.sleep(0.05)
        outage_lines = [r for r in caplog.records if r.levelno >= logging.WARNING and "unreachable" in r.getMessage()]
        assert len(outage_lines) == 1, "one line per outage, not one per attempt"
        assert not rig.service.connected
        broker.start()
        assert await rig.service.publisher.wait_connected(10)
        assert await rig.service.flush(10)
        assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_replay_republishes_from_a_seq_as_historical(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/events/#") as capture:
        rig.journal_events(6)
        await capture.wait_count(is_event, 6)
        data = rig.service.publisher.replay(3)
        assert data == {"from_seq": 3, "to_seq": 6, "count": 4}
        replayed = await capture.wait_count(is_event, 10)
        again = events_of(replayed[6:])
        assert [e["seq"] for e in again] == [3, 4, 5, 6]
        assert all(e["historical"] is True for e in again)
        first = {e["seq"]: e["event_id"] for e in events_of(replayed[:6])}
        assert all(first[e["seq"]] == e["event_id"] for e in again)  # same events: de-duplicable


async def test_prune_applies_the_retention_settings(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig:
        rig.journal_events(4)
        assert await rig.service.flush(5)
        assert rig.service.prune(datetime.now(UTC)) == 0  # sent, but recent
        broker.stop()
        rig.journal_events(2)  # unsent: never pruned, however old
        later = datetime.now(UTC) + timedelta(days=rig.settings.gateway.journal_retention_days + 1)
        assert rig.service.prune(later) >= 3
        assert [e["seq"] for e in rig.journal.unsent()] == [5, 6]
        assert rig.journal.verify() is None


def start_gateway_process(
    state_dir: Path, url: str, append: int = 0, inflight: int = 20
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(GATEWAY_PROCESS),
            str(state_dir),
            url,
            "gw-01",
            *("--append", str(append)),
            *("--inflight", str(inflight)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("connected "), f"gateway process did not connect: {line!r}"
    return process, line.split()[1]


def kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


async def test_will_publishes_offline_when_the_gateway_is_killed(broker: Mosquitto, tmp_path: Path) -> None:
    async with Capture(broker.url, f"{BASE}/state") as capture:
        process, boot_id = await asyncio.to_thread(start_gateway_process, tmp_path, broker.url)
        try:
            await capture.wait_for(state_is("online", boot_id))
        finally:
            kill(process)
        will = await capture.wait_for(state_is("offline", boot_id), timeout=15)
        assert will.json()["version"]


async def test_killed_with_a_backlog_every_event_arrives_after_restart(broker: Mosquitto, tmp_path: Path) -> None:
    total = 1000
    async with Capture(broker.url, f"{BASE}/events/#") as capture:
        process, _ = await asyncio.to_thread(start_gateway_process, tmp_path, broker.url, total, 2)
        try:
            await capture.wait_count(is_event, 20)
        finally:
            kill(process)  # mid-drain: some events published, some in flight, most waiting
        before = set(seqs(capture.messages))
        assert len(before) < total, "the drain finished before the kill; the test proves nothing"
        process, _ = await asyncio.to_thread(start_gateway_process, tmp_path, broker.url)
        try:
            await capture.wait_for(lambda m: is_event(m) and m.json()["seq"] == total, timeout=20)
            await asyncio.sleep(0)  # messages already read are in capture.messages
        finally:
            kill(process)
    received = seqs(capture.messages)
    assert set(received) == set(range(1, total + 1))  # none lost; duplicates are allowed
    by_seq = {e["seq"]: e for e in events_of(capture.messages)}
    assert verify_chain([by_seq[s] for s in range(1, total + 1)]) is None


async def test_system_broker_works_too(tmp_path: Path) -> None:
    url = "mqtt://127.0.0.1:1883"
    gateway = f"gw-{os.getpid()}"
    base = f"lockers/test-site/{gateway}"
    async with Capture(url, f"{base}/#") as capture:
        async with running_gateway(tmp_path, url, gateway=gateway) as rig:
            rig.journal_events(2)
            assert seqs(await capture.wait_count(is_event, 2)) == [1, 2]
        # leave the shared broker as we found it: clear this test gateway's retained topics
        for topic in {m.topic for m in capture.messages if not is_event(m)}:
            await capture.publish(topic, b"", retain=True)


REFUSING_ACL = """user gw-01
topic readwrite lockers/test-site/gw-01/#
topic deny lockers/test-site/gw-01/events/#

user central
topic read lockers/#
"""


async def test_events_the_broker_refuses_stay_in_the_journal_until_it_accepts_them(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL that denies this gateway's events makes Mosquitto answer each PUBACK with 0x87 (Not
    authorized). Those events are not delivered, so they are not marked sent: the publisher says the
    broker refuses them (the daemon's health_check and metrics read it), one ERROR line names the fault,
    and once the ACL is fixed (and reloaded) every one arrives, in order."""
    broker = mosquitto_factory(passwords={"gw-01": "pw-gw", "central": "pw-central"}, acl=REFUSING_ACL)
    password_file = tmp_path / "mqtt.password"
    password_file.write_text("pw-gw\n")
    caplog.set_level(logging.INFO, logger="lockergw.mqtt")
    async with (
        Capture(broker.url, f"{BASE}/events/#", username="central", password="pw-central") as capture,
        running_gateway(tmp_path / "state", broker.url, username="gw-01", password_file=str(password_file)) as rig,
    ):
        rig.journal_events(5)
        async with asyncio.timeout(30):
            while rig.service.refusal is None:
                await asyncio.sleep(0.05)
        assert "Not authorized" in rig.service.refusal
        assert rig.journal.backlog() == 5  # refused, so none of them is marked sent
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "refused event seq 1" in errors[0] and "ACL" in errors[0], errors

        assert broker.process is not None
        (broker.workdir / "acl").write_text(REFUSING_ACL.replace("topic deny lockers/test-site/gw-01/events/#\n", ""))
        os.kill(broker.process.pid, signal.SIGHUP)  # Mosquitto reloads its ACL file
        received = await capture.wait_count(is_event, 5, timeout=60)
        assert seqs(received) == [1, 2, 3, 4, 5]
        assert await rig.service.flush(10)
        assert rig.journal.backlog() == 0
        assert rig.service.refusal is None
