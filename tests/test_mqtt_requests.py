"""Requests over a real broker: every command of SPEC §7, and a matrix of bad inputs that change nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from broker.kit import Capture, Received, is_event, running_gateway, signed
from broker.mosquitto import Mosquitto
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.sitekey import uid_hash
from gateway.store import Store

UID = "3C00CE754C"
UID_2 = "04A1B2C3D4E5F6"
BASE = "lockers/test-site/gw-01"


def card(credential_id: str, uid: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": credential_id,
        "uid": uid,
        "holder": f"holder-{credential_id}",
        "role": "user",
        "scope": ["A-01"],
        **fields,
    }


def is_response(command: str) -> Any:
    return lambda m: m.topic == f"{BASE}/response/{command}"


async def raw_request(capture: Capture, command: str, payload: bytes, transaction: Any) -> dict[str, Any]:
    """Publish raw bytes; wait for the response to `command` carrying `transaction` (None: the next one)."""
    seen = len(capture.on(f"/response/{command}"))
    await capture.publish(f"{BASE}/request/{command}", payload)
    responses = await capture.wait_count(is_response(command), seen + 1)
    response: dict[str, Any] = responses[seen].json()
    return response


def no_raw_uid(messages: list[Received], *uids: str) -> None:
    """Nothing the gateway published (the requests are the central system's own) holds a raw uid."""
    for message in messages:
        if "/request/" in message.topic:
            continue
        for uid in uids:
            assert uid.encode() not in message.payload.upper(), f"raw uid in {message.topic}"
            assert uid not in message.topic.upper()


BAD_REQUESTS: list[tuple[str, str, bytes | dict[str, Any], str]] = [
    ("bad JSON", "health_check", b'{"transaction": "t1", ', "not valid JSON"),
    ("not an object", "health_check", b"[1, 2, 3]", "must be a JSON object"),
    ("unknown command", "credentials/explode", {}, "unknown command 'credentials/explode'"),
    ("unknown field", "health_check", {"colour": "red"}, "colour: unknown field"),
    ("missing credentials", "credentials/upsert", {}, "credentials: missing (required)"),
    (
        "credentials not a list",
        "credentials/upsert",
        {"credentials": "C-1"},
        "credentials: Input should be a valid list",
    ),
    ("empty upsert", "credentials/upsert", {"credentials": []}, "credentials: List should have at least 1 item"),
    (
        "missing holder",
        "credentials/upsert",
        {"credentials": [{"id": "C-1", "uid": UID, "role": "user"}]},
        "credentials[0].holder: missing",
    ),
    (
        "bad role",
        "credentials/upsert",
        {"credentials": [card("C-1", UID, role="boss")]},
        "credentials[0].role: 'boss' is not one of",
    ),
    ("bad uid", "credentials/upsert", {"credentials": [card("C-1", "ZZ00CE754C")]}, "credentials[0].uid:"),
    (
        "unknown credential field",
        "credentials/upsert",
        {"credentials": [card("C-1", UID, colour="red")]},
        "credentials[0].colour: unknown field",
    ),
    (
        "one bad item of two",
        "credentials/upsert",
        {"credentials": [card("C-1", UID), card("C-2", UID_2, role="boss")]},
        "credentials[1].role",
    ),
    (
        "duplicate id",
        "credentials/upsert",
        {"credentials": [card("C-1", UID), card("C-1", UID_2)]},
        "credentials[1].id: 'C-1' also appears at credentials[0]",
    ),
    (
        "bad validity",
        "credentials/upsert",
        {"credentials": [card("C-1", UID, valid_from="2026-09-02", valid_until="2026-09-01")]},
        "credentials[0].valid_until: must be after valid_from",
    ),
    ("set_status unknown id", "credentials/set_status", {"id": "C-404", "status": "lost"}, "C-404"),
    ("set_status bad status", "credentials/set_status", {"id": "C-1", "status": "stolen"}, "status: Input should be"),
    (
        "set_status id not text",
        "credentials/set_status",
        {"id": 7, "status": "lost"},
        "id: Input should be a valid string",
    ),
    ("remove unknown id", "credentials/remove", {"id": "C-404"}, "C-404"),
    ("replace bad uid", "credentials/replace", {"id": "C-1", "new_uid": "not-a-card"}, "new_uid: not a card number"),
    ("replace unknown id", "credentials/replace", {"id": "C-404", "new_uid": UID_2}, "C-404"),
    ("get unknown id", "credentials/get", {"id": "C-404"}, "unknown credential 'C-404'"),
    ("get without id", "credentials/get", {}, "id: missing (required)"),
    (
        "snapshot page beyond pages",
        "credentials/snapshot",
        {"version": 1, "page": 3, "pages": 2, "credentials": []},
        "page: 3 is beyond pages (2)",
    ),
    (
        "snapshot bad item",
        "credentials/snapshot",
        {"version": 1, "page": 1, "pages": 1, "credentials": [card("C-9", UID, kind="tattoo")]},
        "credentials[0].kind",
    ),
    (
        "open unknown locker",
        "lockers/open",
        {"locker": "Z-99", "operator": "op-1", "reason": "test"},
        "unknown locker 'Z-99'",
    ),
    ("open without operator", "lockers/open", {"locker": "A-02", "reason": "test"}, "operator: missing (required)"),
    (
        "open bad authorizers",
        "lockers/open",
        {"locker": "A-02", "operator": "op", "reason": "r", "authorizers": ["x"]},
        "authorizers[0]",
    ),
    (
        "set_service bad value",
        "lockers/set_service",
        {"locker": "A-01", "service": "broken"},
        "service: Input should be",
    ),
    (
        "assign unknown credential",
        "lockers/assign",
        {"locker": "S-01", "credential": "C-404"},
        "unknown credential 'C-404'",
    ),
    ("release unknown locker", "lockers/release", {"locker": "Z-99"}, "unknown locker 'Z-99'"),
    ("replay from 0", "events/replay", {"from_seq": 0}, "from_seq: Input should be greater than or equal to 1"),
    ("replay from text", "events/replay", {"from_seq": "3"}, "from_seq: Input should be a valid integer"),
    ("replay beyond the end", "events/replay", {"from_seq": 999}, "after the last journaled event"),
]


async def test_every_bad_request_is_answered_with_an_error_and_changes_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        running_gateway(tmp_path, broker.url, max_request_bytes=2048) as rig,
        Capture(broker.url, f"{BASE}/#") as capture,
    ):
        ok = await capture.request(BASE, "credentials/upsert", {"credentials": [card("C-1", UID)]})
        assert ok["status"] == "ok"
        version = rig.store.version_and_digest()
        last_seq = rig.journal.last_seq
        failures = []
        for index, (name, command, body, expected) in enumerate(BAD_REQUESTS):
            if isinstance(body, bytes):
                transaction = None
                payload = body
            else:
                transaction = {"case": index, "name": name}  # any JSON value is echoed
                request = {"transaction": transaction, **body}
                if not command.startswith("credentials/explode"):
                    request = signed(f"{BASE}/request/{command}", request)
                payload = json.dumps(request).encode()
            response = await raw_request(capture, command, payload, transaction)
            if (
                response["status"] != "error"
                or expected not in response.get("error", "")
                or response["transaction"] != transaction
                or response["data"] != {}
            ):
                failures.append(f"{name}: {response}")
        oversized = json.dumps({"transaction": "big", "credentials": [card("C-1", UID, holder="x" * 3000)]}).encode()
        response = await raw_request(capture, "credentials/upsert", oversized, None)
        assert response["status"] == "error" and "more than mqtt.max_request_bytes (2048)" in response["error"]
        assert response["transaction"] is None
        assert not failures, "\n".join(failures)
        assert rig.store.version_and_digest() == version
        assert rig.journal.last_seq == last_seq
        assert rig.bank.opened == []
        no_raw_uid(capture.messages, UID, UID_2, "ZZ00CE754C")


async def test_credential_lifecycle_over_mqtt(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        response = await capture.request(
            BASE, "credentials/upsert", {"credentials": [card("C-1", "3c:00:ce:75:4c"), card("C-2", UID_2)], "by": "hr"}
        )
        assert response["status"] == "ok", response
        # in force before the answer: the running gateway was told before the ok went out
        assert rig.bank.credential_changes == 1
        version, digest = rig.store.version_and_digest()
        assert response["data"] == {"count": 2, "version": version, "digest": digest}

        got = await capture.request(BASE, "credentials/get", {"id": "C-1"})
        assert got["status"] == "ok"
        data = got["data"]
        assert "uid" not in data and data["uid_hash"] == uid_hash(rig.site_key, UID)
        assert data["holder"] == "holder-C-1" and data["issue_no"] == 1 and data["issued_by"] == "hr"
        assert data["status"] == "active" and data["kind"] == "card" and data["scope"] == ["A-01"]

        lost = await capture.request(BASE, "credentials/set_status", {"id": "C-1", "status": "lost", "reason": "bus"})
        assert lost["status"] == "ok" and lost["data"]["status"] == "lost"
        replaced = await capture.request(BASE, "credentials/replace", {"id": "C-1", "new_uid": "dec:0013530444"})
        assert replaced["status"] == "ok", replaced
        assert {k: replaced["data"][k] for k in ("id", "replaced", "issue_no")} == {
            "id": "C-1-2",
            "replaced": "C-1",
            "issue_no": 2,
        }
        old = rig.store.get("C-1")
        assert old is not None and old.status == "replaced"
        removed = await capture.request(BASE, "credentials/remove", {"id": "C-1"})
        assert removed["status"] == "ok" and rig.store.get("C-1") is None
        refused = await capture.request(BASE, "credentials/remove", {"id": "C-2"})
        assert refused["status"] == "error" and rig.store.get("C-2") is not None  # still active: needs force
        forced = await capture.request(BASE, "credentials/remove", {"id": "C-2", "force": True})
        assert forced["status"] == "ok" and rig.store.get("C-2") is None
        assert rig.bank.credential_changes == 5
        changed = await capture.wait_count(lambda m: m.topic == f"{BASE}/events/credentials.changed", 5)
        assert len(changed) == 5
        await capture.wait_for(
            lambda m: m.topic == f"{BASE}/info" and m.json()["credentials"]["version"] == rig.store.rev
        )
        async with Capture(broker.url, f"{BASE}/info") as later:
            info = await later.wait_for(lambda m: True)
            assert info.retain and info.json()["credentials"]["version"] == rig.store.rev
        no_raw_uid(capture.messages, UID, UID_2, "0013530444", "00CE754C")


async def test_snapshot_replaces_the_whole_set_when_the_last_page_arrives(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        await capture.request(BASE, "credentials/upsert", {"credentials": [card("OLD-1", "0A0B0C0D0E")]})
        before = rig.store.version_and_digest()
        pages = [[card(f"C-{n}", f"{0x1000 + n:010X}") for n in range(page * 3, page * 3 + 3)] for page in range(3)]
        first = await capture.request(
            BASE, "credentials/snapshot", {"version": "2026-09", "page": 1, "pages": 3, "credentials": pages[0]}
        )
        assert first["status"] == "ok" and first["data"]["complete"] is False
        # a page of another snapshot abandons the first one
        other = await capture.request(
            BASE, "credentials/snapshot", {"version": "stale", "page": 2, "pages": 3, "credentials": pages[1]}
        )
        assert other["data"]["complete"] is False
        for page in (3, 2, 1):  # any order
            response = await capture.request(
                BASE,
                "credentials/snapshot",
                {"version": "2026-09", "page": page, "pages": 3, "credentials": pages[page - 1]},
            )
            assert response["status"] == "ok", response
            if page != 1:
                assert response["data"]["complete"] is False
                assert rig.store.version_and_digest() == before  # nothing changes until the last page
        version, digest = rig.store.version_and_digest()
        assert response["data"] == {
            "snapshot": "2026-09",
            "pages": 3,
            "complete": True,
            "count": 9,
            "version": version,
            "digest": digest,
        }
        assert sorted(c.id for c in rig.store.all()) == sorted(f"C-{n}" for n in range(9))


async def test_remote_open_needs_two_people_for_an_assigned_locker(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        await capture.request(BASE, "credentials/upsert", {"credentials": [card("C-1", UID)]})  # assigned A-01
        alone = await capture.request(
            BASE,
            "lockers/open",
            {"locker": "A-01", "operator": "op-1", "reason": "lost key", "authorizers": [{"id": "op-1"}]},
        )
        assert alone["status"] == "error" and "two distinct authorizers" in alone["error"]
        same_person = await capture.request(
            BASE,
            "lockers/open",
            {
                "locker": "A-01",
                "operator": "op-1",
                "reason": "lost key",
                "authorizers": [{"id": "C-7", "holder": "ann"}, {"id": "C-8", "holder": "ann"}],
            },
        )
        assert same_person["status"] == "error"
        assert rig.bank.opened == []
        two = await capture.request(
            BASE,
            "lockers/open",
            {
                "locker": "A-01",
                "operator": "op-1",
                "reason": "lost key",
                "authorizers": [{"id": "C-7", "holder": "ann"}, {"id": "C-9", "holder": "bob"}],
            },
        )
        assert two["status"] == "ok" and two["data"]["locker"] == "A-01"
        granted = await capture.wait_for(lambda m: m.topic == f"{BASE}/events/access.granted")
        event = granted.json()
        assert event["reason"] == "remote_open" and event["override"] is True and event["locker"] == "A-01"
        assert [a["holder"] for a in event["authorizers"]] == ["ann", "bob"]
        # a free locker opens on one operator's word
        free = await capture.request(BASE, "lockers/open", {"locker": "A-02", "operator": "op-1", "reason": "check"})
        assert free["status"] == "ok"


async def test_locker_commands_update_the_retained_locker_topics(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        await capture.request(BASE, "credentials/upsert", {"credentials": [card("C-1", UID, scope=[])]})
        service = await capture.request(BASE, "lockers/set_service", {"locker": "A-02", "service": "out_of_service"})
        assert service["status"] == "ok"
        await capture.wait_for(lambda m: m.topic == f"{BASE}/lockers/A-02" and m.json()["service"] == "out_of_service")
        assigned = await capture.request(BASE, "lockers/assign", {"locker": "S-01", "credential": "C-1"})
        assert assigned["status"] == "ok"
        await capture.wait_for(lambda m: m.topic == f"{BASE}/lockers/S-01" and m.json()["occupied"] is True)
        released = await capture.request(BASE, "lockers/release", {"locker": "S-01"})
        assert released["status"] == "ok"
        await capture.wait_for(lambda m: m.topic == f"{BASE}/lockers/S-01" and m.json()["occupied"] is False)
        assert rig.bank.lockers["S-01"].occupant is None
        await capture.wait_for(lambda m: m.topic == f"{BASE}/events/locker.allocated")
        await capture.wait_for(lambda m: m.topic == f"{BASE}/events/locker.released")


async def test_health_check_and_replay(broker: Mosquitto, tmp_path: Path) -> None:
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        health = await capture.request(BASE, "health_check", {})
        assert health["status"] == "ok" and health["data"]["boot_id"] == rig.bank.boot_id
        rig.journal_events(4)
        await capture.wait_count(is_event, 4)
        replay = await capture.request(BASE, "events/replay", {"from_seq": 2})
        assert replay["data"] == {"from_seq": 2, "to_seq": 4, "count": 3}
        events = await capture.wait_count(is_event, 7)
        assert [(e.json()["seq"], e.json()["historical"]) for e in events[4:]] == [(2, True), (3, True), (4, True)]


async def test_mqtt5_response_topic_and_correlation_data_are_honoured(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path, broker.url),
        Capture(broker.url, f"{BASE}/response/#") as capture,
    ):
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = f"{BASE}/response/central-1/health"
        properties.CorrelationData = b"\x00\x01corr"
        await capture.publish(f"{BASE}/request/health_check", {"transaction": 5}, properties=properties)
        reply = await capture.wait_for(lambda m: m.topic == f"{BASE}/response/central-1/health")
        assert reply.correlation_data == b"\x00\x01corr"
        assert reply.json()["status"] == "ok" and reply.json()["transaction"] == 5
        assert not capture.on("/response/health_check")  # went to the response topic instead


@pytest.mark.parametrize("max_bytes", [1024])
async def test_handler_answers_without_a_broker(max_bytes: int, tmp_path: Path) -> None:
    """`RequestHandler.handle` is usable on its own (the daemon's tests and tools can call it)."""
    async with running_gateway(tmp_path, "mqtt://127.0.0.1:9", connect=False, max_request_bytes=max_bytes) as rig:
        handler = rig.service.requests
        response = await handler.handle("health_check", b'{"transaction": [1]}')
        assert response.ok and response.topic == f"{BASE}/response/health_check"
        assert response.payload["transaction"] == [1]
        too_big = await handler.handle("health_check", b" " * (max_bytes + 1))
        assert not too_big.ok and too_big.payload["transaction"] is None


async def test_a_large_upsert_does_not_hold_up_the_event_loop(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taps are decided on the event loop: a big credential change is written on the store's worker
    thread, and the loop keeps running (here: a ticking task) while it is written."""
    credentials = [card(f"C-{n}", f"{0x100000 + n:010X}", scope=[f"A-{n % 40:02d}"]) for n in range(15000)]
    writing = threading.Event()
    writers: list[threading.Thread] = []
    upsert = Store.upsert

    def watched_upsert(self: Store, *args: Any, **kwargs: Any) -> Any:
        writers.append(threading.current_thread())
        writing.set()
        try:
            return upsert(self, *args, **kwargs)
        finally:
            writing.clear()

    monkeypatch.setattr(Store, "upsert", watched_upsert)
    async with running_gateway(tmp_path, broker.url) as rig, Capture(broker.url, f"{BASE}/response/#") as capture:
        ticks_while_writing = 0
        done = False

        async def watch_loop() -> None:
            nonlocal ticks_while_writing
            while not done:
                await asyncio.sleep(0.005)
                ticks_while_writing += writing.is_set()

        watcher = asyncio.create_task(watch_loop())
        response = await capture.request(BASE, "credentials/upsert", {"credentials": credentials}, timeout=60)
        done = True
        await watcher
        assert response["status"] == "ok" and response["data"]["count"] == 15000
        assert rig.store.count() == 15000
        assert writers and threading.main_thread() not in writers, "the upsert ran on the event loop's thread"
        assert ticks_while_writing > 0, "the event loop stood still while the upsert was written"


async def test_a_snapshot_larger_than_the_bound_is_dropped_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.mqtt import snapshot_pages as requests_module

    monkeypatch.setattr(requests_module, "MAX_SNAPSHOT_CREDENTIALS", 4)
    # The handler is called directly, unsigned: what is tested here is the snapshot bound.
    async with running_gateway(tmp_path, "mqtt://127.0.0.1:9", connect=False, allow_unsigned_requests=True) as rig:
        handler = rig.service.requests
        before = rig.store.version_and_digest()

        def page(number: int) -> bytes:
            items = [card(f"C-{number}-{n}", f"{0x2000 + number * 10 + n:010X}") for n in range(3)]
            return json.dumps({"version": "big", "page": number, "pages": 3, "credentials": items}).encode()

        assert (await handler.handle("credentials/snapshot", page(1))).ok
        refused = await handler.handle("credentials/snapshot", page(2))
        assert not refused.ok and "more than 4 credentials" in refused.payload["error"]
        # The partial snapshot is gone: the last page alone does not complete anything.
        third = await handler.handle("credentials/snapshot", page(3))
        assert third.ok and third.payload["data"]["complete"] is False
        assert rig.store.version_and_digest() == before


async def test_a_response_topic_outside_the_response_tree_is_ignored(broker: Mosquitto, tmp_path: Path) -> None:
    """An attacker-chosen response topic must not make the gateway publish on its own event or state topics."""
    async with running_gateway(tmp_path, broker.url), Capture(broker.url, f"{BASE}/#") as capture:
        for target in (f"{BASE}/events/access.granted", f"{BASE}/state", "elsewhere/topic", f"{BASE}/response/"):
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = target
            transaction = f"t-{target}"
            await capture.publish(f"{BASE}/request/health_check", {"transaction": transaction}, properties=properties)
            reply = await capture.wait_for(
                lambda m, t=transaction: m.topic == f"{BASE}/response/health_check" and m.json()["transaction"] == t
            )
            assert reply.json()["status"] == "ok"
        assert not [m for m in capture.messages if m.topic in (f"{BASE}/events/access.granted", "elsewhere/topic")]
        assert all(m.json().get("transaction") is None for m in capture.on("/state"))


async def test_deeply_nested_json_is_bad_input_not_an_internal_error(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, "mqtt://127.0.0.1:9", connect=False, max_request_bytes=1 << 20) as rig:
        handler = rig.service.requests
        for command in ("health_check", "credentials/upsert", "lockers/open"):
            for depth in (40, 1000, 100_000):
                payload = b'{"transaction": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
                response = await handler.handle(command, payload)
                assert not response.ok, (command, depth)
                assert "nested more than" in response.payload["error"], (command, depth, response.payload)
