"""Signed requests: the recipe of docs/integrators.md, freshness, nonces — and refusals over a real broker."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from broker.kit import TEST_SIGNING_KEY, Capture, running_gateway
from broker.mosquitto import Mosquitto
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt.signing import RequestVerifier, SignatureError, sign, signature

KEY = b"correct horse battery staple, twice over"  # at least 32 bytes
BASE = "lockers/test-site/gw-01"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def verifier() -> tuple[RequestVerifier, Clock]:
    clock = Clock()
    return RequestVerifier(KEY, clock=clock), clock


def test_the_documented_recipe_is_what_is_checked() -> None:
    check, clock = verifier()
    request = {"transaction": 1, "locker": "A-01", "operator": "op-1", "reason": "stuck"}
    body = {**request, "issued_at": int(clock.now), "nonce": "n-1"}
    import hashlib
    import hmac

    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    mac = hmac.new(KEY, canonical, hashlib.sha256).hexdigest()
    check.verify({**body, "hmac": mac})
    assert signature(body, KEY) == mac


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {k: v for k, v in r.items() if k != "hmac"}, "unsigned request: missing hmac"),
        (lambda r: {k: v for k, v in r.items() if k not in ("nonce", "issued_at")}, "missing issued_at, nonce"),
        (lambda r: {**r, "locker": "A-02"}, "bad signature"),
        (lambda r: {**r, "hmac": r["hmac"][:-1] + ("0" if r["hmac"][-1] != "0" else "1")}, "bad signature"),
        (lambda r: {**r, "hmac": 12}, "hmac: must be a hex string"),
        (lambda r: {**r, "nonce": ""}, "nonce: must be a non-empty string"),
        (lambda r: {**r, "issued_at": "yesterday"}, "issued_at: not an ISO 8601"),
        (lambda r: {**r, "issued_at": True}, "issued_at: must be epoch seconds"),
    ],
)
def test_tampered_or_incomplete_requests_are_refused(change: Any, message: str) -> None:
    check, clock = verifier()
    request = sign({"locker": "A-01", "operator": "op", "reason": "r"}, KEY, issued_at=int(clock.now))
    with pytest.raises(SignatureError, match=message):
        check.verify(change(request))


@pytest.mark.parametrize(
    ("skew", "fresh"), [(0, True), (30, True), (-30, True), (31, False), (-31, False), (3600, False)]
)
def test_requests_older_or_newer_than_30_s_are_stale(skew: int, fresh: bool) -> None:
    check, clock = verifier()
    clock.now += 600  # the gateway has been running a while
    request = sign({"locker": "A-01"}, KEY, issued_at=int(clock.now) - skew)
    if fresh:
        check.verify(request)
    else:
        with pytest.raises(SignatureError, match="stale request"):
            check.verify(request)


def test_iso_issued_at_with_an_offset_is_accepted_and_without_one_refused() -> None:
    check, clock = verifier()
    moment = datetime.fromtimestamp(clock.now, UTC)
    check.verify(sign({"a": 1}, KEY, issued_at=moment.isoformat().replace("+00:00", "Z")))
    check.verify(sign({"a": 1}, KEY, issued_at=(moment + timedelta(hours=1)).isoformat().replace("+00:00", "+01:00")))
    with pytest.raises(SignatureError, match="needs a UTC offset"):
        check.verify(sign({"a": 1}, KEY, issued_at=moment.replace(tzinfo=None).isoformat()))


def test_a_nonce_is_accepted_once_within_the_window() -> None:
    check, clock = verifier()
    request = sign({"locker": "A-01"}, KEY, issued_at=int(clock.now), nonce="same")
    check.verify(request)
    clock.now += 10
    with pytest.raises(SignatureError, match="replayed request"):
        check.verify(request)
    with pytest.raises(SignatureError, match="replayed request"):  # same nonce, newly signed
        check.verify(sign({"locker": "A-02"}, KEY, issued_at=int(clock.now), nonce="same"))
    clock.now += 60  # the first request is now stale; its nonce may be forgotten
    with pytest.raises(SignatureError, match="stale request"):
        check.verify(request)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
requests = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in ("hmac", "issued_at", "nonce")), json_values, max_size=6
)


@given(requests, st.data())
def test_any_signed_request_verifies_and_any_changed_value_does_not(request: dict[str, Any], data: Any) -> None:
    check, clock = verifier()
    signed = sign(request, KEY, issued_at=int(clock.now))
    check.verify(json.loads(json.dumps(signed)))  # survives a trip through JSON
    if request:
        key = data.draw(st.sampled_from(sorted(request)))
        changed = data.draw(json_values.filter(lambda v: v != request[key]))
        with pytest.raises(SignatureError, match="bad signature"):
            RequestVerifier(KEY, clock=clock).verify({**signed, key: changed})


async def test_unsigned_stale_or_replayed_door_openings_are_refused_over_mqtt(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lockergw.mqtt")
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.decode() + "\n")
    state = tmp_path / "state"
    async with (
        running_gateway(state, broker.url, hmac_key_file=str(key_file)) as rig,
        Capture(broker.url, f"{BASE}/#", signing_key=None) as capture,
    ):
        opening = {"locker": "A-02", "operator": "op-1", "reason": "check"}
        unsigned = await capture.request(BASE, "lockers/open", opening)
        assert unsigned["status"] == "error" and "unsigned request" in unsigned["error"]

        signed = sign({**opening, "transaction": "t-1"}, KEY, topic=f"{BASE}/request/lockers/open")
        await capture.publish(f"{BASE}/request/lockers/open", signed)
        first = await capture.wait_for(
            lambda m: m.topic.endswith("/response/lockers/open") and m.json()["transaction"] == "t-1"
        )
        assert first.json()["status"] == "ok"
        await capture.publish(f"{BASE}/request/lockers/open", signed)  # captured and sent again
        replies = await capture.wait_count(
            lambda m: m.topic.endswith("/response/lockers/open") and m.json()["transaction"] == "t-1", 2
        )
        assert replies[1].json()["status"] == "error" and "replayed" in replies[1].json()["error"]

        stale = sign(
            {**opening, "transaction": "t-2"},
            KEY,
            issued_at=int(time.time()) - 120,
            topic=f"{BASE}/request/lockers/open",
        )
        await capture.publish(f"{BASE}/request/lockers/open", stale)
        reply = await capture.wait_for(
            lambda m: m.topic.endswith("/response/lockers/open") and m.json()["transaction"] == "t-2"
        )
        assert reply.json()["status"] == "error" and "stale request" in reply.json()["error"]

        forged = {**sign({**opening, "transaction": "t-3"}, b"another key", topic=f"{BASE}/request/lockers/open")}
        await capture.publish(f"{BASE}/request/lockers/open", forged)
        reply = await capture.wait_for(
            lambda m: m.topic.endswith("/response/lockers/open") and m.json()["transaction"] == "t-3"
        )
        assert "bad signature" in reply.json()["error"]

        # Signed for another command (here lockers/release, same arguments): refused as lockers/open.
        elsewhere = sign({"locker": "A-02", "transaction": "t-4"}, KEY, topic=f"{BASE}/request/lockers/release")
        await capture.publish(f"{BASE}/request/lockers/open", {**elsewhere, "operator": "op-1", "reason": "x"})
        reply = await capture.wait_for(
            lambda m: m.topic.endswith("/response/lockers/open") and m.json()["transaction"] == "t-4"
        )
        assert reply.json()["status"] == "error"

        assert rig.bank.opened == ["A-02"]  # exactly the one properly signed request
        upsert = await capture.request(
            BASE,
            "credentials/upsert",
            {"credentials": [{"id": "C-1", "uid": "0A0B0C0D", "holder": "h", "role": "user"}]},
        )
        assert upsert["status"] == "error" and rig.store.count() == 0
        # reading needs no signature
        assert (await capture.request(BASE, "health_check", {}))["status"] == "ok"
        assert (await capture.request(BASE, "events/replay", {"from_seq": 1}))["status"] == "ok"
    refusals = [r.getMessage() for r in caplog.records if "refused lockers/open" in r.getMessage()]
    assert len(refusals) == 5 and any("replayed" in line for line in refusals)


def test_a_request_signed_for_one_command_or_gateway_is_refused_as_another() -> None:
    clock = Clock()
    check = RequestVerifier(KEY, clock=clock)
    request = sign({"id": "C-1", "by": "hr"}, KEY, issued_at=int(clock.now), topic="x/request/credentials/remove")
    with pytest.raises(SignatureError, match="bad signature"):
        check.verify(request, "x/request/credentials/replace")
    with pytest.raises(SignatureError, match="bad signature"):
        check.verify(request, "y/request/credentials/remove")  # another gateway's topic
    check.verify(request, "x/request/credentials/remove")


def test_requests_issued_before_a_restart_are_refused() -> None:
    clock = Clock()
    captured = sign({"locker": "A-01"}, KEY, issued_at=int(clock.now) - 10, topic="x/request/lockers/open")
    restarted = RequestVerifier(KEY, clock=clock)  # nonces from the previous run are gone
    with pytest.raises(SignatureError, match="before the gateway"):
        restarted.verify(captured, "x/request/lockers/open")


def test_a_non_finite_issued_at_is_refused() -> None:
    clock = Clock()
    check = RequestVerifier(KEY, clock=clock)
    request = sign({"locker": "A-01"}, KEY, issued_at=float("nan"), topic="x/request/lockers/open")
    with pytest.raises(SignatureError, match="finite"):
        check.verify(request, "x/request/lockers/open")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {**r, "hmac": "é" * 64}, "hmac: must be a hex string"),
        (lambda r: {**r, "hmac": "zz" * 32}, "hmac: must be a hex string"),
        (lambda r: {**r, "issued_at": 10**400}, "issued_at: out of range"),
        (lambda r: {**r, "issued_at": -(10**30)}, "issued_at: out of range"),
        (lambda r: {**r, "issued_at": "9999-12-31T23:59:59-23:59"}, "bad signature|stale"),
        (lambda r: {**r, "nonce": "\ud800"}, "cannot be encoded"),
    ],
)
def test_malformed_signature_fields_are_refused_with_a_plain_reason(change: Any, message: str) -> None:
    check, clock = verifier()
    request = sign({"locker": "A-01", "operator": "op", "reason": "r"}, KEY, issued_at=int(clock.now))
    with pytest.raises(SignatureError, match=message):
        check.verify(change(request))


async def test_malformed_signatures_over_mqtt_get_an_error_never_an_internal_error(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with running_gateway(tmp_path / "state", broker.url) as rig, Capture(broker.url, f"{BASE}/#") as capture:
        topic = f"{BASE}/request/lockers/open"
        good = json.dumps(sign({"locker": "A-02", "operator": "op", "reason": "r"}, TEST_SIGNING_KEY, topic=topic))
        bodies = [
            good.replace('"hmac": "', '"hmac": "\u00e9'),
            good.replace('"issued_at": ', '"issued_at": 1' + "0" * 400 + ', "x": '),
            good.replace('"issued_at": ', '"issued_at": NaN, "x": '),
            good.replace('"issued_at": ', '"issued_at": Infinity, "x": '),
        ]
        for index, body in enumerate(bodies):
            seen = len(capture.on("/response/lockers/open"))
            await capture.publish(topic, body.encode())
            replies = await capture.wait_count(lambda m: m.topic.endswith("/response/lockers/open"), seen + 1)
            error = replies[seen].json()["error"]
            assert "internal error" not in error and replies[seen].json()["status"] == "error", (index, error)
        assert rig.bank.opened == []


async def test_without_a_key_every_request_but_health_check_and_replay_is_refused(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        running_gateway(tmp_path / "state", broker.url, hmac_key_file="") as rig,
        Capture(broker.url, f"{BASE}/#", signing_key=None) as capture,
    ):
        refused = await capture.request(BASE, "lockers/open", {"locker": "A-02", "operator": "op", "reason": "r"})
        assert refused["status"] == "error" and "signing is required" in refused["error"]
        upsert = {"credentials": [{"id": "C-1", "uid": "0A0B0C0D0E", "holder": "h", "role": "site_master"}]}
        assert "signing is required" in (await capture.request(BASE, "credentials/upsert", upsert))["error"]
        assert "signing is required" in (await capture.request(BASE, "credentials/get", {"id": "C-1"}))["error"]
        assert (await capture.request(BASE, "health_check", {}))["status"] == "ok"
        assert (await capture.request(BASE, "events/replay", {"from_seq": 1}))["status"] == "ok"
        assert rig.bank.opened == [] and rig.store.count() == 0


async def test_allow_unsigned_requests_accepts_them(broker: Mosquitto, tmp_path: Path) -> None:
    async with (
        running_gateway(tmp_path / "state", broker.url, allow_unsigned_requests=True) as rig,
        Capture(broker.url, f"{BASE}/#", signing_key=None) as capture,
    ):
        opened = await capture.request(BASE, "lockers/open", {"locker": "A-02", "operator": "op", "reason": "r"})
        assert opened["status"] == "ok" and rig.bank.opened == ["A-02"]


@pytest.mark.parametrize(("content", "message"), [("short-key", "fewer than 32"), ("", "fewer than 32")])
def test_a_short_or_empty_key_stops_start_up(tmp_path: Path, content: str, message: str) -> None:
    from broker.kit import gateway_settings

    from gateway.mqtt.link import LinkError, check

    key_file = tmp_path / "k"
    key_file.write_text(content)
    settings = gateway_settings(tmp_path / "state", "mqtt://127.0.0.1:1883", hmac_key_file=str(key_file))
    with pytest.raises(LinkError, match=message):
        check(settings.mqtt)
