"""The reference consumer: EventFollower's rules (property tests) and `lockergw events tail` end to end."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.kit import Capture, LockerBank, gateway_settings
from broker.mosquitto import Mosquitto
from hypothesis import given
from hypothesis import strategies as st

from gateway.events import GENESIS_HASH, SCHEMA, event_hash, uuid7
from gateway.journal import Journal
from gateway.mqtt.consumer import Delivered, Duplicate, EventFollower, Fault, Gap
from gateway.mqtt.service import MqttService
from gateway.sitekey import load_or_create_site_key
from gateway.store import Store


def chain(count: int, gateway: str = "gw-01") -> list[dict[str, Any]]:
    """A valid hash chain of `count` envelopes, as a journal would write them."""
    envelopes, previous = [], GENESIS_HASH
    for seq in range(1, count + 1):
        envelope: dict[str, Any] = {
            "schema": SCHEMA, "event_id": uuid7(), "site": "s", "gateway": gateway, "seq": seq,
            "boot_id": "b", "ts": "2026-11-28T10:00:00.000Z", "kind": "door.opened", "reader": None,
            "locker": "A-01", "credential": None, "reason": None, "override": None, "unlock": None,
            "prev_hash": previous,
        }  # fmt: skip
        envelope["hash"] = previous = event_hash(envelope)
        envelopes.append(envelope)
    return envelopes


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A chain and an at-least-once delivery of it: every event at least once, locally reordered."""
    events = chain(draw(st.integers(1, 30)))
    sent: list[dict[str, Any]] = []
    for event in events:
        sent += [{**event, "historical": draw(st.booleans())} for _ in range(draw(st.integers(1, 3)))]
    # swap some neighbours (a lost message that a replay brings back later looks like this)
    for _ in range(draw(st.integers(0, len(sent)))):
        i = draw(st.integers(0, len(sent) - 1))
        j = min(len(sent) - 1, i + draw(st.integers(1, 5)))
        sent[i], sent[j] = sent[j], sent[i]
    return events, sent


@given(deliveries())
def test_follower_delivers_each_event_once_in_order_whatever_the_delivery(
    case: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    events, sent = case
    follower = EventFollower(start_seq=1)
    outcomes = [outcome for envelope in sent for outcome in follower.receive(envelope)]
    delivered = [o for o in outcomes if isinstance(o, Delivered)]
    assert [o.envelope["seq"] for o in delivered] == list(range(1, len(events) + 1))
    assert all(o.fault is None and o.chained for o in delivered)
    assert not [o for o in outcomes if isinstance(o, Fault)]
    assert len([o for o in outcomes if isinstance(o, Duplicate)]) == len(sent) - len(events)
    assert follower.held("s", "gw-01") == 0


@given(st.integers(2, 12), st.data())
def test_an_altered_or_removed_event_is_reported(count: int, data: st.DataObject) -> None:
    events = chain(count)
    victim = data.draw(st.integers(0, count - 1))
    altered = [dict(e) for e in events]
    altered[victim]["locker"] = "Z-99"
    follower = EventFollower(1)
    delivered = [o for e in altered for o in follower.receive(e) if isinstance(o, Delivered)]
    assert [o.envelope["seq"] for o in delivered if o.fault] == [victim + 1]
    # a removed event: the follower holds what follows and asks for a replay from the hole
    follower = EventFollower(1)
    outcomes = [o for e in events[:victim] + events[victim + 1 :] for o in follower.receive(e)]
    if victim < count - 1:
        assert Gap("s", "gw-01", victim + 1, victim + 1) in outcomes
        assert follower.held("s", "gw-01") == count - victim - 1
    # rewriting history (recomputing the hash) breaks the link to the next event instead
    rewritten = [dict(e) for e in events]
    rewritten[victim]["locker"] = "Z-99"
    rewritten[victim]["hash"] = event_hash(rewritten[victim])
    follower = EventFollower(1)
    faults = [o.envelope["seq"] for e in rewritten for o in follower.receive(e) if isinstance(o, Delivered) and o.fault]
    assert faults == ([victim + 2] if victim < count - 1 else [])


def test_a_reused_seq_is_a_fault() -> None:
    follower = EventFollower()
    first, second = chain(1), chain(1)
    assert isinstance(follower.receive(first[0])[0], Delivered)
    assert isinstance(follower.receive(second[0])[0], Fault)


async def start_tail(*args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "events", "tail", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), 15)
    assert line.startswith(b"following "), line
    return process


async def finish(process: asyncio.subprocess.Process) -> tuple[int, list[str]]:
    stdout, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode is not None
    return process.returncode, stdout.decode().splitlines()


async def test_tail_fills_a_gap_by_asking_for_a_replay(broker: Mosquitto, tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, broker.url)
    boot_id = uuid7()
    site_key = load_or_create_site_key(tmp_path)
    with (
        Store.open(tmp_path) as store,
        Journal.open(tmp_path, site="test-site", gateway="gw-01", boot_id=boot_id) as journal,
    ):
        bank = LockerBank(settings, journal, store, boot_id=boot_id)
        tail = await start_tail(
            "--mqtt", broker.url, "--site", "test-site", "--gateway", "gw-01", "--count", "6", "--timeout", "20"
        )
        async with MqttService(settings, journal, store, bank, site_key) as service:
            bank.notify = service.notify
            assert await service.publisher.wait_connected(10)
            bank.append([{"kind": "door.opened", "locker": "A-01"}] * 3)
            assert await service.flush(5)
        # Events 4 and 5 reach the broker while this consumer is not looking (marked sent, never seen).
        lost = journal.append([{"kind": "door.closed", "locker": "A-01"}] * 2, datetime.now(UTC))
        journal.mark_sent([e["seq"] for e in lost])
        async with MqttService(settings, journal, store, bank, site_key) as service:
            bank.notify = service.notify
            service.set_ready()
            assert await service.publisher.wait_connected(10)
            bank.append([{"kind": "door.opened", "locker": "A-02"}])  # seq 6 arrives live: a gap before it
            code, lines = await finish(tail)
    assert code == 0, "\n".join(lines)
    printed = [line for line in lines if " #" in line]
    assert [int(line.split(" #")[1].split()[0]) for line in printed] == [1, 2, 3, 4, 5, 6]
    assert any(line.startswith("gap: lockers/test-site/gw-01 seq 4-5 missing") for line in lines)
    assert "(historical)" in printed[3] and "door.closed" in printed[3]  # replayed
    assert "(historical)" not in printed[5]  # went out live
    assert not any("FAULT" in line for line in lines)


async def test_tail_reports_an_altered_event_and_fails(broker: Mosquitto) -> None:
    events = chain(3, gateway="gw-x")
    events[2]["reason"] = "nothing to see"  # altered after hashing
    tail = await start_tail("--mqtt", broker.url, "--count", "3", "--timeout", "20", "--json")
    async with Capture(broker.url) as publisher:
        for event in events:
            await publisher.publish(f"lockers/s/gw-x/events/{event['kind']}", event)
        code, lines = await finish(tail)
    assert code == 1
    assert [json.loads(line)["seq"] for line in lines if line.startswith("{")] == [1, 2, 3]


async def test_tail_reports_a_missing_count_at_its_timeout(broker: Mosquitto) -> None:
    tail = await start_tail("--mqtt", broker.url, "--count", "1", "--timeout", "0.5")
    code, lines = await finish(tail)
    assert code == 1 and lines == ["timeout: 0 of 1 events after 0.5 s"]


def test_tail_usage_errors_are_one_line(capsys: Any) -> None:
    from gateway.cli import main

    assert main(["events", "tail", "--gateway", "gw-01", "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    assert main(["events", "tail"]) == 2
    assert main(["events", "tail", "--mqtt", "http://example.org"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lockergw: events tail: --gateway needs --site",
        "lockergw: events tail: give --mqtt URL or --config FILE",
        "lockergw: mqtt.url: must start with mqtt:// or mqtts:// (got 'http://example.org')",
    ]


def test_an_event_claiming_another_gateway_than_its_topic_is_refused_and_the_genuine_one_follows() -> None:
    genuine = chain(2)
    follower = EventFollower(1)
    # Published on gw-02's topic (its own ACL allows that), claiming to be gw-01's seq 1.
    forged = {**genuine[0], "event_id": uuid7(), "locker": "Z-99"}
    forged["hash"] = event_hash(forged)
    refused = follower.receive(forged, "lockers/s/gw-02/events/door.opened")
    assert len(refused) == 1 and isinstance(refused[0], Fault) and "must match the topic" in refused[0].message
    outcomes = [o for e in genuine for o in follower.receive(e, "lockers/s/gw-01/events/door.opened")]
    assert [type(o) for o in outcomes] == [Delivered, Delivered]  # no "seq reused"
    assert all(isinstance(o, Delivered) and o.fault is None for o in outcomes)
    wrong_kind = follower.receive({**genuine[1], "event_id": uuid7()}, "lockers/s/gw-01/events/access.granted")
    assert isinstance(wrong_kind[0], Fault)
