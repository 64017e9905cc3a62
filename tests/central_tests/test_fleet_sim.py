"""`lockergw fleet-sim` and its `Fleet` against a private Mosquitto: the §7 contract for N gateways, chains
that verify, faults at their configured rates, replays that fill exactly what was dropped, credentials
pushed and answered, and the command line (stops by itself, on SIGTERM; bad input is one line, exit 2)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from broker.contract import Contract
from broker.kit import TEST_SIGNING_KEY, Capture, Received, events_of, is_event, signed
from broker.mosquitto import Mosquitto, TlsFiles
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select

from central.database import open_database
from central.schema import events as events_table
from central_tests.kit import CentralProcess, async_wait_until, gateway_row, stored_seqs, write_central_config
from gateway.credential_digest import set_digest
from gateway.events import GENESIS_HASH, event_hash, verify_chain
from simulators.fleet import Fleet, FleetError
from simulators.fleet_faults import Fault, Faults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def roomy_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker that queues enough for a subscriber to keep every message of a fast fleet
    (Mosquitto's default `max_queued_messages` of 1000 would drop QoS 1 messages, as docs/ explains)."""
    broker = Mosquitto(tmp_path / "mosquitto")
    with broker.conf.open("a", encoding="utf-8") as conf:
        conf.write("max_queued_messages 100000\n")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def capture(roomy_broker: Mosquitto) -> AsyncIterator[Capture]:
    async with Capture(roomy_broker.url, "lockers/#") as subscriber:
        yield subscriber


def by_gateway(messages: list[Received]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events_of(messages):
        found[(event["site"], event["gateway"])].append(event)
    return found


async def wait_events(capture: Capture, count: int, timeout: float = 30.0) -> None:
    await capture.wait_until(lambda messages: sum(1 for m in messages if is_event(m)) >= count, timeout)


async def test_gateways_publish_the_contract_with_chains_that_verify(roomy_broker: Mosquitto, capture: Capture) -> None:
    async with Fleet(roomy_broker.url, gateways=4, sites=2, seed=1) as fleet:
        assert await fleet.publish(400) == 400
        await fleet.drain()
        await wait_events(capture, 400)
    # Leaving the fleet says goodbye: every gateway's retained state goes offline.
    await capture.wait_count(lambda m: m.topic.endswith("/state") and m.json()["state"] == "offline", 4)
    retained = {m.topic: m.json() for m in capture.messages if not is_event(m)}

    names = sorted((g.site, g.gateway) for g in fleet.gateways)
    assert names == [("site-1", "gw-001"), ("site-1", "gw-003"), ("site-2", "gw-002"), ("site-2", "gw-004")]
    chains = by_gateway(capture.messages)
    assert sorted(chains) == names
    contract = Contract.load()
    for events in chains.values():
        assert [e["seq"] for e in events] == list(range(1, 101))  # no faults: in order, each once
        assert verify_chain(events, GENESIS_HASH) is None
        assert all(e["historical"] is False for e in events)
    for message in capture.messages:
        contract.validate(message.topic, message.json())
    kinds = Counter(e["kind"] for events in chains.values() for e in events)
    assert {"access.granted", "access.denied", "door.opened", "door.closed"} <= set(kinds)
    for event in (e for events in chains.values() for e in events if e["credential"]):
        assert set(event["credential"]) == {"id", "holder", "role", "uid_hash"}  # never a raw uid
    info = retained["lockers/site-1/gw-001/info"]
    assert [r["id"] for r in info["readers"]] == ["bank-a", "bank-s"]
    assert info["credentials"] == {"version": 0, "digest": "0" * 64}
    assert retained["lockers/site-1/gw-001/lockers/A-01"]["door"] in ("open", "closed")


async def test_faults_happen_at_the_configured_rates_and_a_seed_repeats_them(
    roomy_broker: Mosquitto, capture: Capture
) -> None:
    faults = Faults.parse("drop=0.05,dup=0.05,reorder=0.1,tamper=0.02")
    async with Fleet(roomy_broker.url, gateways=2, faults=faults, seed=7) as fleet:
        await fleet.publish(2000)
        await fleet.flush()
        counts = fleet.stats.faults()
        expected = 2000 - counts[Fault.DROP] + counts[Fault.DUP]
        await wait_events(capture, expected)
    for fault, rate in ((Fault.DROP, 0.05), (Fault.DUP, 0.05), (Fault.REORDER, 0.1), (Fault.TAMPER, 0.02)):
        assert 0.5 * rate * 2000 <= counts[fault] <= 1.5 * rate * 2000, (fault, counts[fault])

    received = by_gateway(capture.messages)
    for fault, entries in fleet.stats.faulted.items():
        for site, gateway, seq in entries:
            copies = [e for e in received[(site, gateway)] if e["seq"] == seq]
            if fault is Fault.DROP:
                assert copies == []
            elif fault is Fault.DUP:
                assert len(copies) == 2 and copies[0] == copies[1]
            elif fault is Fault.TAMPER:
                assert event_hash(copies[0]) != copies[0]["hash"]
            else:  # reordered: arrives after a later seq of its gateway
                arrival = [e["seq"] for e in received[(site, gateway)]]
                assert any(later > seq for later in arrival[: arrival.index(seq)])

    async with Fleet(roomy_broker.url, gateways=2, faults=faults, seed=7) as again:
        await again.publish(2000)
        await again.flush()
    assert again.stats.faulted == fleet.stats.faulted


async def test_a_replay_fills_exactly_the_dropped_seqs(roomy_broker: Mosquitto, capture: Capture) -> None:
    async with Fleet(roomy_broker.url, gateways=2, faults=Faults(drop=0.1), seed=3) as fleet:
        first, second = fleet.gateways
        await fleet.publish(300)
        fleet.inject_gap(second, 2)
        await fleet.publish(2, gateways=[second])
        await fleet.drain()
        dropped = {(site, gw, seq) for site, gw, seq in fleet.stats.faulted[Fault.DROP]}
        await wait_events(capture, 302 - len(dropped))
        live = by_gateway(capture.messages)
        for gateway in (first, second):
            seen = {e["seq"] for e in live[(gateway.site, gateway.gateway)]}
            missing = set(range(1, gateway.seq + 1)) - seen
            assert missing == {seq for site, gw, seq in dropped if gw == gateway.gateway}
        assert {second.seq - 1, second.seq} <= {seq for _, gw, seq in dropped if gw == second.gateway}

        gap_start = min(seq for _, gw, seq in dropped if gw == first.gateway)
        response = await capture.request(first.topics.base, "events/replay", {"from_seq": gap_start})
        assert response["status"] == "ok"
        assert response["data"] == {"from_seq": gap_start, "to_seq": first.seq, "count": first.seq - gap_start + 1}
        await wait_events(capture, 302 - len(dropped) + response["data"]["count"])

    events = by_gateway(capture.messages)[(first.site, first.gateway)]
    replayed = [e for e in events if e["historical"]]
    assert [e["seq"] for e in replayed] == list(range(gap_start, first.seq + 1))
    whole = {e["seq"]: e for e in events}
    assert sorted(whole) == list(range(1, first.seq + 1))
    assert verify_chain([whole[seq] for seq in sorted(whole)], GENESIS_HASH) is None


async def test_a_fleet_without_replay_never_answers_one(roomy_broker: Mosquitto, capture: Capture) -> None:
    async with Fleet(roomy_broker.url, gateways=1, replay=False, seed=1) as fleet:
        (gateway,) = fleet.gateways
        fleet.inject_gap(gateway)
        await fleet.publish(5)
        await fleet.drain()
        await capture.publish(f"{gateway.topics.base}/request/events/replay", {"from_seq": 1, "transaction": "r"})
        # Requests are handled in order: once the health check is answered, the replay was passed over.
        health = await capture.request(gateway.topics.base, "health_check", {})
        assert health["status"] == "ok" and health["data"]["journal"]["last_seq"] == 5
    assert capture.on("/response/events/replay") == []
    assert all(not e["historical"] for e in events_of(capture.messages))
    assert fleet.stats.replays_ignored == 1


async def test_credentials_pushed_are_answered_and_change_the_digest(roomy_broker: Mosquitto, capture: Capture) -> None:
    credential = {"id": "C-1", "uid": "3C00CE754C", "holder": "u-1", "role": "user", "scope": ["A-01"]}
    async with Fleet(roomy_broker.url, gateways=2, hmac_key=TEST_SIGNING_KEY, seed=1) as fleet:
        gateway = fleet.gateways[0]
        base = gateway.topics.base

        await capture.publish(f"{base}/request/credentials/upsert", {"credentials": [credential], "transaction": "u"})
        found = await capture.wait_for(lambda m: m.topic.endswith("/response/credentials/upsert"))
        unsigned = found.json()
        assert unsigned["status"] == "error" and "signing is required" in unsigned["error"]

        response = await capture.request(base, "credentials/upsert", {"credentials": [credential]})
        assert response["status"] == "ok", response
        record = {
            **credential,
            "kind": "card",
            "status": "active",
            "valid_from": None,
            "valid_until": None,
            "schedule": None,
            "key_code": None,
            "deposit": None,
            "approved_by": None,
        }
        assert response["data"]["digest"] == set_digest([record]) != "0" * 64
        info = await capture.wait_for(
            lambda m: m.topic == f"{base}/info" and m.json()["credentials"]["digest"] == response["data"]["digest"]
        )
        assert info.retain or info.json()["credentials"]["version"] == response["data"]["version"]
        assert "3C00CE754C" not in json.dumps(
            [m.json() for m in capture.messages if not m.topic.endswith("/request/credentials/upsert")]
        )

        # An MQTT 5 response topic and correlation data are honoured.
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = f"{base}/response/mine"
        properties.CorrelationData = b"corr-1"
        topic = f"{base}/request/credentials/set_status"
        request = signed(topic, {"id": "C-1", "status": "suspended", "transaction": "t-2"})
        await capture.publish(topic, request, properties=properties)
        answer = await capture.wait_for(lambda m: m.topic == f"{base}/response/mine")
        assert answer.correlation_data == b"corr-1" and answer.json()["status"] == "ok"
        assert answer.json()["data"]["digest"] == set_digest([{**record, "status": "suspended"}])

        snapshot = {"version": "s-1", "page": 1, "pages": 1, "credentials": [credential]}
        replaced = await capture.request(base, "credentials/snapshot", snapshot)
        assert replaced["status"] == "ok" and replaced["data"]["digest"] == set_digest([record])

        # Taps now come from the credential pushed to it.
        await fleet.publish(40, gateways=[gateway])
        await fleet.drain()
        await capture.wait_for(
            lambda m: (
                is_event(m)
                and m.json()["gateway"] == gateway.gateway
                and (m.json()["credential"] or {}).get("id") == "C-1"
            )
        )
        other = fleet.gateways[1]
        assert other.info()["credentials"]["digest"] == "0" * 64  # only the gateway it was pushed to

        # A remote open is journaled as the gateway does it, and the door then opens.
        opened = await capture.request(base, "lockers/open", {"locker": "A-07", "operator": "op", "reason": "test"})
        assert opened["status"] == "ok" and opened["data"]["locker"] == "A-07"
        grant = await capture.wait_for(lambda m: is_event(m) and m.json()["seq"] == opened["data"]["seq"])
        assert grant.json()["reason"] == "remote_open" and grant.json()["override"] is True
        unknown = await capture.request(base, "lockers/open", {"locker": "Z-99", "operator": "op", "reason": "t"})
        assert unknown["status"] == "error" and unknown["error"] == "unknown locker 'Z-99'"
        await fleet.publish(12, gateways=[gateway])
        await fleet.drain()
        await capture.wait_for(
            lambda m: is_event(m) and m.json()["kind"] == "door.opened" and m.json()["locker"] == "A-07"
        )

    contract = Contract.load()
    for message in capture.messages:
        if not message.topic.endswith("/response/mine"):  # the contract reads "mine" as an unknown command
            contract.validate(message.topic, message.json())


async def test_without_a_key_unsigned_requests_are_accepted(roomy_broker: Mosquitto, capture: Capture) -> None:
    async with Fleet(roomy_broker.url, gateways=1, seed=1) as fleet:
        base = fleet.gateways[0].topics.base
        await capture.publish(
            f"{base}/request/lockers/set_service", {"locker": "A-02", "service": "out_of_service", "transaction": "x"}
        )
        answer = await capture.wait_for(lambda m: m.topic == f"{base}/response/lockers/set_service")
        assert answer.json() == {
            "transaction": "x",
            "status": "ok",
            "data": {"locker": "A-02", "service": "out_of_service"},
        }
        state = await capture.wait_for(
            lambda m: m.topic == f"{base}/lockers/A-02" and m.json()["service"] != "in_service"
        )
        assert state.json()["service"] == "out_of_service"


def test_a_short_signing_key_is_refused_in_one_line(tmp_path: Path) -> None:
    key = tmp_path / "short.key"
    key.write_text("too-short")
    done = run_fleet_sim("--gateways", "1", "--rate", "1", "--mqtt", "mqtt://127.0.0.1:1", "--hmac-key-file", str(key))
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"lockergw: fleet-sim: --hmac-key-file: {key} holds 9 bytes, fewer than 32; ")


async def test_a_gateway_stops_and_comes_back_with_its_chain_intact(roomy_broker: Mosquitto, capture: Capture) -> None:
    async with Fleet(roomy_broker.url, gateways=2, seed=2) as fleet:
        gateway = fleet.gateways[0]
        await fleet.publish(10, gateways=[gateway])
        first_boot = gateway.boot_id
        await fleet.stop_gateway(gateway)
        await capture.wait_for(lambda m: m.topic == gateway.topics.state and m.json()["state"] == "offline")
        assert [g.gateway for g in fleet.running] == ["gw-002"]
        await fleet.publish(5)  # only the running gateway publishes
        await fleet.start_gateway(gateway)
        online = await capture.wait_for(
            lambda m: (
                m.topic == gateway.topics.state and m.json()["state"] == "online" and m.json()["boot_id"] != first_boot
            )
        )
        await fleet.publish(5, gateways=[gateway])
        await fleet.drain()
        await wait_events(capture, 10 + 1 + 5 + 1 + 5)

    events = by_gateway(capture.messages)[(gateway.site, gateway.gateway)]
    assert [e["kind"] for e in events if e["kind"].startswith("gateway.")] == ["gateway.stopped", "gateway.started"]
    assert [e["seq"] for e in events] == list(range(1, 18))
    assert verify_chain(events, GENESIS_HASH) is None
    assert {e["boot_id"] for e in events[11:]} == {online.json()["boot_id"]}


async def test_a_fleet_logs_in_over_tls_with_a_password(
    mosquitto_factory: Callable[..., Mosquitto], test_pki: TlsFiles, tmp_path: Path
) -> None:
    broker = mosquitto_factory(tls=test_pki, passwords={"fleet": "pw-fleet", "central": "pw-central"})
    password_file = tmp_path / "fleet.password"
    password_file.write_text("pw-fleet\n")
    login = {
        "username": "fleet",
        "password_file": str(password_file),
        "ca_file": str(test_pki.ca_cert),
        "cert_file": str(test_pki.client_cert),
        "key_file": str(test_pki.client_key),
    }
    async with (
        Capture(broker.url, "lockers/#", username="central", password="pw-central", tls=test_pki) as central,
        Fleet(broker.url, gateways=2, seed=1, **login) as fleet,
    ):
        await fleet.publish(10)
        await fleet.drain()
        await wait_events(central, 10)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("nope")
    with pytest.raises(FleetError, match=r"^cannot connect to the broker at mqtts://127\.0\.0\.1:\d+: "):
        async with Fleet(broker.url, gateways=1, **{**login, "password_file": str(wrong)}):
            pass


# ---- the command ------------------------------------------------------------------------------------


def lockergw() -> list[str]:
    script = Path(sys.executable).with_name("lockergw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def run_fleet_sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*lockergw(), "fleet-sim", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


async def test_the_command_stops_after_its_events_with_one_summary_line(
    roomy_broker: Mosquitto, capture: Capture
) -> None:
    args = (
        "--gateways",
        "3",
        "--sites",
        "2",
        "--rate",
        "400",
        "--events",
        "90",
        "--seed",
        "5",
        "--mqtt",
        roomy_broker.url,
    )
    done = await asyncio.to_thread(run_fleet_sim, *args, "--faults", "dup=0.1", "--no-wills")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet-sim: 90 events from 3 gateways on 2 sites (30 per gateway)")
    assert "dup " in lines[0]
    await wait_events(capture, 90)
    for events in by_gateway(capture.messages).values():
        unique = {e["seq"]: e for e in events}
        assert sorted(unique) == list(range(1, 31))
        assert verify_chain([unique[s] for s in sorted(unique)], GENESIS_HASH) is None


def test_the_command_stops_after_its_duration(roomy_broker: Mosquitto) -> None:
    done = run_fleet_sim("--gateways", "2", "--rate", "50", "--duration", "0.5", "--mqtt", roomy_broker.url)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("fleet-sim: ") and " from 2 gateways on 1 site " in line


async def stop_fleet_sim(capture: Capture, url: str, how: signal.Signals) -> tuple[int, str, str]:
    """Start `lockergw fleet-sim` (no end of its own), wait for its events, stop it with `how`; then wait
    for both gateways' retained state to say offline."""
    command = [*lockergw(), "fleet-sim", "--gateways", "2", "--rate", "20", "--mqtt", url]
    start = len(capture.messages)

    def since_start(message: Received) -> bool:
        return capture.messages.index(message) >= start

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        await capture.wait_count(lambda m: is_event(m) and since_start(m), 4, timeout=20)
        os.kill(process.pid, how)
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    offline = await capture.wait_count(
        lambda m: m.topic.endswith("/state") and m.json()["state"] == "offline" and since_start(m), 2
    )
    assert {m.topic for m in offline} == {"lockers/site-1/gw-001/state", "lockers/site-1/gw-002/state"}
    return process.returncode, stdout, stderr


async def test_the_command_stops_on_sigterm_with_its_summary(roomy_broker: Mosquitto, capture: Capture) -> None:
    code, stdout, stderr = await stop_fleet_sim(capture, roomy_broker.url, signal.SIGTERM)
    assert code == 0, stderr
    assert stdout.startswith("fleet-sim: ") and len(stdout.splitlines()) == 1


async def test_a_killed_fleet_leaves_its_wills_saying_offline(roomy_broker: Mosquitto, capture: Capture) -> None:
    code, _, _ = await stop_fleet_sim(capture, roomy_broker.url, signal.SIGKILL)
    assert code == -signal.SIGKILL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gateways", "0"), "--gateways: must be at least 1"),
        (("--sites", "5"), "--sites: must be between 1 and --gateways (2)"),
        (("--rate", "0"), "--rate: must be a number of events per second above 0"),
        (("--faults", "drop=2"), "--faults: drop=2 must be between 0 and 1"),
        (("--faults", "lose=0.1"), "--faults: unknown fault 'lose' (one of: drop, dup, reorder, tamper)"),
        (("--faults", "drop"), "--faults: 'drop' is not name=rate (e.g. drop=0.01)"),
        (("--mqtt", "http://127.0.0.1"), "--mqtt: must start with mqtt:// or mqtts://"),
        (("--hmac-key-file", "/nonexistent/key"), "--hmac-key-file: cannot read /nonexistent/key"),
        (("--password-file", "/nonexistent/pw"), "--password-file: cannot read /nonexistent/pw"),
        (("--prefix", "a+b"), "--prefix: 'a+b' is not a topic prefix"),
        (("--mqtt", "mqtt://127.0.0.1:1"), "cannot connect to the broker at mqtt://127.0.0.1:1"),
    ],
)
def test_bad_input_gets_one_plain_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    defaults = {"--gateways": "2", "--rate": "10", "--mqtt": "mqtt://127.0.0.1:1", "--events": "1"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [item for key, value in {**defaults, **given}.items() for item in (key, value)]
    done = run_fleet_sim(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"lockergw: fleet-sim: {message}"), line


# ---- with central -------------------------------------------------------------------------------------


async def test_two_central_workers_store_a_faulty_fleet_exactly_once_with_chains_ok(
    mosquitto_factory: Callable[..., Mosquitto], postgres_url: str, tmp_path: Path
) -> None:
    """Issue 11: duplicates, reordering and drops injected by fleet-sim end with `chain: ok` everywhere."""
    broker = mosquitto_factory(persistence=True, extra=("max_inflight_messages 1000", "max_queued_messages 100000"))
    engine = open_database(postgres_url)  # the schema exists before two workers start at once
    workers = [
        CentralProcess(write_central_config(tmp_path, postgres_url, broker.url, name), tmp_path / f"{name}.log")
        for name in ("central-1", "central-2")
    ]
    try:
        for worker in workers:
            worker.start()
        faults = Faults.parse("drop=0.03,dup=0.05,reorder=0.1")
        async with Fleet(broker.url, gateways=3, sites=2, seed=11) as fleet:
            # Seq 1 goes out clean: the lowest seq central holds is its anchor, so a lost first event is no gap.
            await fleet.publish(3)
            fleet.faults = faults
            await fleet.publish(300)
            await fleet.flush()
            assert fleet.stats.faults()[Fault.DROP] > 0

            def stored_once_and_verified() -> bool:
                for gateway in fleet.gateways:
                    row = gateway_row(engine, gateway.site, gateway.gateway)
                    if row is None or row.chain != "ok" or row.verified_seq != gateway.seq:
                        return False
                    if stored_seqs(engine, gateway.site, gateway.gateway) != list(range(1, gateway.seq + 1)):
                        return False
                return True

            await async_wait_until(stored_once_and_verified, 60, "every event stored once, chains ok")
            assert fleet.stats.replays > 0  # the drops came back through events/replay
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(events_table)).scalar_one() == fleet.events
        for worker in workers:
            worker.signal(signal.SIGTERM)
        assert [worker.wait() for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.stop()
        engine.dispose()
