"""Ingest, verification and gap repair with a real worker, a real Mosquitto and each database."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from broker.mosquitto import Mosquitto
from sqlalchemy import Engine, func, select

from central import metrics
from central.config import load_central_config
from central.context import GatewayUnavailable
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
def engine(central_database: str) -> Iterator[Engine]:
    engine = open_database(central_database)
    yield engine
    engine.dispose()


@pytest.fixture
async def worker(tmp_path: Path, central_database: str, engine: Engine, broker: Mosquitto) -> AsyncIterator[Worker]:
    settings = load_central_config(write_central_config(tmp_path, central_database, broker.url))
    async with Worker(settings, engine) as worker:
        await worker.session.wait_connected()
        await worker.requests.wait_connected(10)
        yield worker


@pytest.fixture
def gateway_factory(broker: Mosquitto) -> Iterator[Callable[..., ChainedGateway]]:
    made: list[ChainedGateway] = []

    def make(site: str = "north-school", gateway: str = "gw-01", **options: object) -> ChainedGateway:
        simulated = ChainedGateway(broker.url, site, gateway, **options)  # type: ignore[arg-type]
        made.append(simulated)
        return simulated

    yield make
    for simulated in made:
        simulated.close()


def chain_of(engine: Engine, site: str, gateway: str) -> tuple[str, int | None, int | None]:
    row = gateway_row(engine, site, gateway)
    return (row.chain, row.verified_seq, row.received_seq) if row else ("none", None, None)


async def test_duplicates_reordering_and_drops_end_with_chain_ok_after_repair(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    duplicates_before = metrics.DUPLICATES._value.get()
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
    assert metrics.DUPLICATES._value.get() - duplicates_before >= 15  # replays may add more


async def test_a_tampered_event_breaks_the_chain_at_its_seq(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    envelopes = gateway.events(10)
    envelopes[4] = {**envelopes[4], "locker": "B-99"}  # altered after hashing
    gateway.publish_all(envelopes)
    await async_wait_until(lambda: alert_rows(engine, "chain.broken"), what="chain.broken")
    (alert,) = alert_rows(engine, "chain.broken")
    assert alert.seq == 5 and json.loads(alert.detail)["seq"] == 5
    assert chain_of(engine, "north-school", "gw-01") == ("broken", 4, 10)
    assert gateway_row(engine, "north-school", "gw-01").broken_seq == 5


async def test_a_second_copy_with_another_hash_is_kept_and_alerted_as_a_conflict(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    envelopes = gateway.events(3)
    gateway.publish_all(envelopes)
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-01") == ("ok", 3, 3), what="chain ok")
    forged = {**envelopes[1], "locker": "Z-01"}
    forged["hash"] = event_hash(forged)
    before = metrics.CONFLICTS._value.get()
    gateway.publish(forged)
    gateway.publish(forged)  # the same conflicting copy again: kept once
    await async_wait_until(lambda: alert_rows(engine, "chain.conflict"), what="chain.conflict")
    (alert,) = alert_rows(engine, "chain.conflict")
    assert alert.seq == 2
    with engine.connect() as connection:
        kept = connection.execute(select(event_conflicts.c.seq, event_conflicts.c.hash)).all()
        stored = connection.execute(select(events.c.hash).where(events.c.seq == 2)).scalar_one()
    assert kept == [(2, forged["hash"])]
    assert stored == envelopes[1]["hash"]  # the first copy stays the stored one
    assert metrics.CONFLICTS._value.get() == before + 1


async def test_an_event_on_another_gateways_topic_and_garbage_are_refused_counted_and_acknowledged(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    mismatch = metrics.REJECTED.labels(reason="rejected_topic_mismatch")
    not_json = metrics.REJECTED.labels(reason="not_json")
    not_event = metrics.REJECTED.labels(reason="not_an_event")
    before = (mismatch._value.get(), not_json._value.get(), not_event._value.get())
    intruder = gateway_factory("north-school", "gw-02")
    victim = Topics.of("lockers", "north-school", "gw-01")
    intruder.publish(intruder.event(), on=victim)
    intruder.client.publish(victim.event("door.opened"), b"\xff not json", qos=1).wait_for_publish(10)
    intruder.client.publish(victim.event("door.opened"), b'{"seq": "one"}', qos=1).wait_for_publish(10)
    honest = gateway_factory("north-school", "gw-01")
    honest.publish_all(honest.events(2))
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-01") == ("ok", 2, 2), what="honest events")
    assert (mismatch._value.get(), not_json._value.get(), not_event._value.get()) == (
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    )
    assert stored_seqs(engine, "north-school", "gw-02") == []
    assert worker.mqtt_connected


async def test_a_range_never_replayed_opens_events_missing_and_its_arrival_resolves_it(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory(answers_replays=False)
    envelopes = gateway.events(6)
    gateway.publish_all([e for e in envelopes if e["seq"] not in (3, 4)])
    await async_wait_until(lambda: alert_rows(engine, "events.missing"), timeout=30, what="events.missing")
    (alert,) = alert_rows(engine, "events.missing")
    assert json.loads(alert.detail)["from_seq"] == 3 and json.loads(alert.detail)["to_seq"] == 4
    assert gateway.replays[0] == 3 and len(gateway.replays) >= 2  # retried while unanswered
    assert chain_of(engine, "north-school", "gw-01") == ("gap", 2, 6)
    gateway.publish_all([envelopes[2], envelopes[3]])
    await async_wait_until(lambda: alert_rows(engine, "events.missing")[0].state == "resolved", what="resolved")
    assert alert_rows(engine, "events.missing")[0].resolved_at is not None
    assert chain_of(engine, "north-school", "gw-01") == ("ok", 6, 6)


async def test_door_left_open_alerts_until_that_locker_closes_and_is_published_once(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway], broker: Mosquitto
) -> None:
    received: list[dict[str, object]] = []
    listener = ChainedGateway(broker.url, "listener", "alerts")
    listener.client.on_message = lambda _c, _u, message: received.append(json.loads(message.payload))
    listener.client.subscribe("lockers/central/alerts/#", qos=1)
    gateway = gateway_factory()
    gateway.publish(gateway.event("door.left_open", locker="A-01"))
    gateway.publish(gateway.event("door.left_open", locker="A-01"))  # still open: the same alert
    await async_wait_until(lambda: alert_rows(engine, "door.left_open"), what="door.left_open")
    await async_wait_until(lambda: received, what="the alert published")
    gateway.publish(gateway.event("door.closed", locker="A-02"))  # another locker: nothing resolved
    gateway.publish(gateway.event("door.closed", locker="A-01"))
    await async_wait_until(lambda: alert_rows(engine, "door.left_open")[0].state == "resolved", what="resolved")
    (alert,) = alert_rows(engine, "door.left_open")
    assert alert.seq == 1 and alert.subject == "A-01" and alert.published
    assert [(m["kind"], m["seq"]) for m in received] == [("door.left_open", 1)]
    listener.close()


async def test_a_gateway_offline_too_long_is_alerted_and_its_return_resolves_it(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    gateway.publish_state("online")
    await async_wait_until(lambda: getattr(gateway_row(engine, "north-school", "gw-01"), "state", None) == "online")
    gateway.publish_state("offline")
    await async_wait_until(lambda: alert_rows(engine, "gateway.offline"), timeout=20, what="gateway.offline")
    gateway.publish_state("online")
    await async_wait_until(lambda: alert_rows(engine, "gateway.offline")[0].state == "resolved", what="resolved")
    assert len(alert_rows(engine, "gateway.offline")) == 1


async def test_text_the_database_cannot_index_is_escaped_and_never_fails_its_batch(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    first = gateway.events(2)
    odd = gateway.event("door.opened", locker="A\u000001")  # a NUL: PostgreSQL text cannot hold it
    gateway.publish_all([*first, odd, *gateway.events(2)])
    # An unpaired surrogate cannot even be hashed: stored, its chain broken, the batch unharmed.
    other = gateway_factory("north-school", "gw-02")
    forged = {**other.event(), "reader": "bank\ud800"}
    other.client.publish(other.topics.event("door.opened"), json.dumps(forged), qos=1).wait_for_publish(10)
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-01") == ("ok", 5, 5), what="all stored")
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-02")[0] == "broken", what="gw-02 broken")
    with engine.connect() as connection:
        query = select(events.c.locker, events.c.envelope).where(events.c.gateway == "gw-01", events.c.seq == 3)
        row = connection.execute(query).one()
        reader = connection.execute(select(events.c.reader).where(events.c.gateway == "gw-02")).scalar_one()
    assert row.locker == "A\\u000001" and reader == "bank\\ud800"
    assert json.loads(row.envelope) == odd  # the envelope as published, still re-hashable


async def test_requests_need_a_key_for_signed_commands_and_an_answer_in_time(worker: Worker) -> None:
    with pytest.raises(ValueError, match="no signing key for site 'north-school'"):
        await worker.request(
            "north-school", "gw-01", "lockers/open", {"locker": "A-01", "operator": "o", "reason": "r"}
        )
    with pytest.raises(GatewayUnavailable, match="did not answer health_check"):
        await worker.request("north-school", "gw-nobody", "health_check", {}, timeout_s=0.3)


async def test_a_door_left_open_delivered_after_its_closing_opens_no_alert(
    worker: Worker, engine: Engine, gateway_factory: Callable[..., ChainedGateway]
) -> None:
    gateway = gateway_factory()
    left_open, closed, later = (
        gateway.event("door.left_open", locker="A-01"),
        gateway.event("door.closed", locker="A-01"),
        gateway.event(),
    )
    gateway.publish_all([closed, later])
    await async_wait_until(lambda: stored_seqs(engine, "north-school", "gw-01") == [2, 3], what="the later events")
    gateway.publish(left_open)
    await async_wait_until(lambda: chain_of(engine, "north-school", "gw-01") == ("ok", 3, 3), what="all stored")
    assert alert_rows(engine, "door.left_open") == []
