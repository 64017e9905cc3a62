"""docs/asyncapi.yaml holds what the gateway really sends and accepts: payloads captured from a real broker
are validated against it, channel by channel."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from broker.contract import Contract
from broker.kit import Capture, events_of, is_event, running_gateway
from broker.mosquitto import Mosquitto
from gateway_world import devices_online_all, running, write_site
from jsonschema import ValidationError

from gateway.events import EVENT_KINDS
from gateway.mqtt.requests import COMMANDS
from gateway.mqtt.signing import UNSIGNED_COMMANDS
from gateway.store import Store
from simulators.site import SimulatedSite

BASE = "lockers/test-site/gw-01"
UID_HASH = "9f2c" + "0" * 60

#: One record of every kind, shaped as the daemon journals them (gateway/daemon.py, records.py, doors.py).
SAMPLE_RECORDS: list[dict[str, Any]] = [
    {"kind": "gateway.started", "reason": None, "version": "0.1.0"},
    {"kind": "reader.online", "reader": "bank-a"},
    {"kind": "board.online", "board": "board-a"},
    {"kind": "access.granted", "reader": "bank-a", "locker": "A-01", "reason": "assigned_locker", "override": False,
     "unlock": "sent", "credential": {"id": "C-1", "holder": "u-1", "role": "user", "uid_hash": UID_HASH}},
    {"kind": "access.denied", "reader": "bank-a", "locker": None, "reason": "unknown_credential", "override": False,
     "unlock": None, "credential": {"id": None, "holder": None, "role": None, "uid_hash": UID_HASH}},
    {"kind": "override.pending", "reader": "bank-a", "reason": "override_needs_second_person",
     "credential": {"id": "E-1", "holder": "ann", "role": "emergency", "uid_hash": UID_HASH}},
    {"kind": "access.granted", "reader": "bank-a", "locker": "A-02", "reason": "emergency_override", "override": True,
     "unlock": "failed", "credential": {"id": "E-2", "holder": "bob", "role": "emergency", "uid_hash": UID_HASH},
     "authorizers": [{"id": "E-1", "holder": "ann"}, {"id": "E-2", "holder": "bob"}]},
    {"kind": "credential.lost_presented", "reader": "bank-a", "reason": "credential_lost",
     "credential": {"id": "C-2", "holder": "u-2", "role": "user", "uid_hash": UID_HASH}},
    {"kind": "reader.lockout", "reader": "bank-a", "reason": "too_many_denials",
     "locked_until": "2026-11-28T10:13:12.345Z", "denials": 5},
    {"kind": "locker.allocated", "reader": "bank-a", "locker": "S-01", "reason": "shared_allocated",
     "credential": {"id": "C-1", "holder": "u-1", "role": "user", "uid_hash": UID_HASH}},
    {"kind": "locker.released", "locker": "S-01", "reason": "remote", "by": "mqtt", "credential": None},
    {"kind": "locker.service", "locker": "S-01", "service": "out_of_service", "by": "mqtt", "reason": "broken hinge"},
    {"kind": "door.opened", "locker": "A-01", "board": "board-a"},
    {"kind": "door.forced_open", "locker": "A-01", "board": "board-a"},
    {"kind": "door.left_open", "locker": "A-01", "board": "board-a"},
    {"kind": "door.closed", "locker": "A-01", "board": "board-a"},
    {"kind": "unlock.failed", "reason": "latch_did_not_open", "locker": "A-02", "board": "board-a"},
    {"kind": "reader.fault", "reader": "bank-a", "reason": "bad_frames", "bad_frames": 12},
    {"kind": "reader.offline", "reader": "bank-a", "reason": "port disappeared"},
    {"kind": "board.offline", "board": "board-a", "reason": "no reply"},
    {"kind": "credentials.changed", "reason": None, "action": "upsert", "by": "hr", "ids": ["C-1"], "count": 1,
     "version": 3, "digest": UID_HASH},
    {"kind": "access.granted", "reader": "qr-a", "locker": "A-01", "reason": "assigned_locker", "override": False,
     "unlock": "sent", "credential": {"id": "V-1", "holder": "dana", "role": "user", "uid_hash": UID_HASH},
     "used_up": True},
    {"kind": "credentials.changed", "reason": "single_use", "action": "set_status", "by": "gateway", "ids": ["V-1"],
     "count": 1, "version": 4},
    {"kind": "gateway.stopped", "reason": "signal"},
    {"kind": "journal.unavailable", "reason": "commit_failed", "cause": "no space left on the device",
     "unavailable_from": "2026-11-28T10:11:12.345Z", "unavailable_until": "2026-11-28T10:12:12.345Z",
     "refused_taps": 3},
]  # fmt: skip


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_the_document_is_complete_and_consistent(contract: Contract) -> None:
    document = contract.document
    assert document["asyncapi"].startswith("3.")
    for ref in refs(document):
        contract.resolve(ref)  # every $ref points somewhere
    assert contract.document["components"]["schemas"]["EventKind"]["enum"] == list(EVENT_KINDS)
    assert {r["kind"] for r in SAMPLE_RECORDS} == set(EVENT_KINDS)
    addresses = {c.address for c in contract.channels}
    assert set(COMMANDS) >= UNSIGNED_COMMANDS
    for command in COMMANDS:
        assert f"lockers/{{site}}/{{gateway}}/request/{command}" in addresses, command
        assert f"lockers/{{site}}/{{gateway}}/response/{command}" in addresses, command
    for operation in document["operations"].values():
        contract.resolve(operation["channel"]["$ref"])


def test_the_schemas_refuse_what_the_contract_forbids(contract: Contract) -> None:
    envelope = contract.schema("EventEnvelope")
    good = {
        "schema": "lockergw.event/1", "event_id": "e", "site": "s", "gateway": "g", "seq": 1, "boot_id": "b",
        "ts": "2026-11-28T10:11:12.345Z", "kind": "door.opened", "reader": None, "locker": "A-01", "credential": None,
        "reason": None, "override": None, "unlock": None, "historical": False, "prev_hash": "0" * 64, "hash": "1" * 64,
    }  # fmt: skip
    envelope.validate(good)
    for bad in (
        {**good, "kind": "door.exploded"},
        {**good, "seq": 0},
        {**good, "ts": "2026-11-28 10:11:12"},
        {**good, "temperature": 21.5},  # no floats in an envelope
        {**good, "credential": {"id": "C-1", "holder": "h", "role": "user", "uid": "3C00CE754C", "uid_hash": None}},
        {k: v for k, v in good.items() if k != "historical"},
        {**good, "kind": "access.granted", "unlock": None},
        {**good, "kind": "access.granted", "reason": "emergency_override", "unlock": "sent", "override": True},
    ):
        with pytest.raises(ValidationError):
            envelope.validate(bad)
    response = contract.schema("ResponseBase")
    response.validate({"transaction": None, "status": "error", "data": {}, "error": "payload is not valid JSON"})
    with pytest.raises(ValidationError):
        response.validate({"transaction": None, "status": "error", "data": {}})
    with pytest.raises(ValidationError):
        response.validate({"transaction": 1, "status": "ok", "data": {}, "error": "x"})


async def test_every_payload_the_gateway_sends_matches_the_contract(
    contract: Contract, broker: Mosquitto, tmp_path: Path
) -> None:
    sent_requests: list[tuple[str, dict[str, Any]]] = []

    async def ask(capture: Capture, command: str, payload: dict[str, Any], expect: str = "ok") -> None:
        if expect == "ok":
            sent_requests.append((f"{BASE}/request/{command}", payload))
        response = await capture.request(BASE, command, payload)
        assert response["status"] == expect, response

    card = {"id": "C-1", "uid": "3C00CE754C", "holder": "u-1", "role": "user", "scope": ["A-01"],
            "valid_from": "2026-09-01", "valid_until": "2027-07-31", "schedule": "Mon-Fri 07:30-18:00",
            "deposit": 10}  # fmt: skip
    key = {"id": "K-1", "holder": "u-9", "role": "user", "kind": "physical_key", "key_code": "KC-77", "scope": "A-02"}
    async with Capture(broker.url, f"{BASE}/#") as capture:
        async with running_gateway(tmp_path, broker.url) as rig:
            rig.bank.append([dict(r) for r in SAMPLE_RECORDS])
            await ask(capture, "health_check", {})
            await ask(capture, "credentials/upsert", {"credentials": [card, key], "by": "hr"})
            await ask(capture, "credentials/get", {"id": "C-1"})
            await ask(capture, "credentials/get", {"id": "K-1"})
            await ask(capture, "credentials/set_status", {"id": "C-1", "status": "lost", "reason": "bus"})
            await ask(capture, "credentials/replace", {"id": "C-1", "new_uid": "0A0B0C0D0E"})
            await ask(capture, "credentials/remove", {"id": "C-1"})
            page = {"version": 7, "pages": 2, "by": "sync"}
            snapshot_1 = {**page, "page": 1, "credentials": [key]}
            await ask(capture, "credentials/snapshot", snapshot_1)
            snapshot_2 = {**page, "page": 2, "credentials": [{**card, "id": "C-5", "uid": "0011223344"}]}
            await ask(capture, "credentials/snapshot", snapshot_2)
            opening = {
                "locker": "A-01",
                "operator": "op",
                "reason": "check",
                "authorizers": [{"id": "op"}, {"id": "E-1", "holder": "ann"}],
            }
            await ask(capture, "lockers/open", opening)
            await ask(capture, "lockers/set_service", {"locker": "A-02", "service": "out_of_service"})
            await ask(capture, "lockers/assign", {"locker": "S-01", "credential": "C-5"})
            await ask(capture, "lockers/release", {"locker": "S-01", "by": "desk"})
            await ask(capture, "events/replay", {"from_seq": 20})
            for command, payload in [
                ("credentials/upsert", {"credentials": [{**card, "role": "boss"}]}),
                ("lockers/open", {"locker": "Z-9", "operator": "op", "reason": "r"}),
                ("no/such/command", {}),
                ("credentials/get", {"id": "C-404"}),
            ]:
                await ask(capture, command, payload, expect="error")
            assert await rig.service.flush(5)
            total = rig.journal.last_seq
            await capture.wait_count(is_event, total + (total - 20 + 1))  # live + replayed
        await capture.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "offline")

    seen: Counter[str] = Counter()
    failures: list[str] = []
    for message in capture.messages:
        if "/request/" in message.topic:
            continue  # the test's own requests (some deliberately bad); the valid ones are checked below
        try:
            seen[contract.validate(message.topic, message.json())] += 1
        except (ValidationError, AssertionError) as exc:
            failures.append(f"{message.topic}: {str(exc).splitlines()[0]}\n  {message.payload[:300]!r}")
    assert not failures, "\n".join(failures)
    for topic, payload in sent_requests:  # what an integrator sends is documented too
        contract.validate(topic, {**payload, "transaction": "t"})
    kinds = {m.topic.rsplit("/", 1)[1] for m in capture.messages if is_event(m)}
    assert kinds == set(EVENT_KINDS)
    unused = {c.name for c in contract.channels} - set(seen)
    # readerTag exists only with Home Assistant discovery: tests/test_homeassistant.py holds it to the contract.
    assert unused <= {c.name for c in contract.channels if "/request/" in c.address} | {"readerTag"}, unused


async def test_the_real_daemon_answers_locker_operations_and_sends_only_what_the_contract_says(
    contract: Contract, broker: Mosquitto, tmp_path: Path
) -> None:
    """`lockergw run` on the simulators: a lockout, then every remote locker operation over MQTT;
    every payload it publishes is validated (events allow no member the document does not list)."""
    config, settings = write_site(tmp_path, broker.url)
    base = settings.base_topic()
    state_dir = settings.gateway.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    people = [
        {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]},
        {"id": "C-2", "uid": "14008EC793", "holder": "ben", "role": "user", "scope": ["A-01"], "status": "lost"},
    ]
    with Store.open(state_dir) as store:
        store.upsert(people, by="test", now=datetime.now(UTC))
    async with SimulatedSite(settings) as site, running(config) as gw, Capture(broker.url, f"{base}/#") as capture:
        await devices_online_all(gw)
        await capture.wait_for(lambda m: m.topic == f"{base}/state" and m.json()["state"] == "online")
        for uid in ("0102030405", "0102030406", "0102030407"):  # lockout_after = 3 unknown cards
            await site.tap("bank-a", uid, hold=0.05)
        lockout = await gw.wait_for("reader.lockout", reader="bank-a")
        assert lockout["denials"] == 3 and isinstance(lockout["locked_until"], str)

        async def ask(command: str, payload: dict[str, Any]) -> dict[str, Any]:
            response = await capture.request(base, command, payload)
            contract.validate(f"{base}/response/{command}", response)
            return response

        # A lost key is still out in the world: its holder's locker needs two people to open it.
        one = {"locker": "A-01", "operator": "desk", "reason": "check", "authorizers": [{"id": "desk"}]}
        refused = await ask("lockers/open", one)
        assert refused["status"] == "error" and "two distinct authorizers" in refused["error"]
        two = {**one, "authorizers": [{"id": "desk"}, {"id": "E-1", "holder": "ann"}]}
        opened = await ask("lockers/open", two)
        assert opened["status"] == "ok" and opened["data"]["unlock"] == "sent", opened
        granted = await gw.wait_for("access.granted", locker="A-01", reason="remote_open")
        assert granted["override"] is True
        assert (await ask("lockers/set_service", {"locker": "A-03", "service": "out_of_service"}))["status"] == "ok"
        await gw.wait_for("locker.service", locker="A-03", service="out_of_service")
        await site.tap("bank-a", "3C00CE754C")  # reader still locked out: refused either way, nothing opens
        assigned = await ask("lockers/assign", {"locker": "B-01", "credential": "C-1", "by": "desk"})
        assert assigned["status"] == "ok" and assigned["data"] == {"locker": "B-01", "occupant": "C-1"}
        allocated = await gw.wait_for("locker.allocated", locker="B-01")
        assert allocated["credential"]["id"] == "C-1" and "uid" not in allocated["credential"]
        taken = await ask("lockers/assign", {"locker": "B-01", "credential": "C-2"})
        assert taken["status"] == "error"
        released = await ask("lockers/release", {"locker": "B-01", "by": "desk"})
        assert released["status"] == "ok" and released["data"] == {"locker": "B-01", "occupant": None}
        await gw.wait_for("locker.released", locker="B-01")
        last = gw.events[-1]["seq"]
        await capture.wait_until(lambda messages: last in {e["seq"] for e in events_of(messages)}, 20)
        await capture.wait_for(  # the retained locker state follows the service change
            lambda m: m.topic == f"{base}/lockers/A-03" and m.json()["service"] == "out_of_service"
        )

    failures: list[str] = []
    kinds: set[str] = set()
    for message in capture.messages:
        if "/request/" in message.topic:
            continue
        try:
            contract.validate(message.topic, message.json())
        except (ValidationError, AssertionError) as exc:
            failures.append(f"{message.topic}: {str(exc).splitlines()[0]}\n  {message.payload[:300]!r}")
        if is_event(message):
            kinds.add(message.json()["kind"])
    assert not failures, "\n".join(failures)
    assert {"reader.lockout", "access.denied", "access.granted", "locker.service", "locker.allocated"} <= kinds
    assert "locker.released" in kinds
