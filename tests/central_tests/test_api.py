"""Central's HTTP API on real PostgreSQL and SQLite: what each route answers, the errors it gives for bad
input, missing tokens and the wrong role — and that a refused request changes nothing."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, func, insert, select

from central.api.app import create_app
from central.context import GatewayUnavailable
from central.schema import alerts, api_tokens, audit_log, workers
from central.tokens import revoke_token
from central_tests.api_kit import (
    T0,
    FakeGateways,
    bearer,
    card,
    context_for,
    envelopes,
    store_alert,
    store_events,
    store_gateway,
    store_locker,
)

SITE = "north-school"

#: Every route that needs a token, with a body where it takes one.
GUARDED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/gateways", None),
    ("GET", "/api/events", None),
    ("GET", "/api/lockers", None),
    ("GET", "/api/alerts", None),
    ("POST", "/api/alerts/1/ack", {"by": "amira"}),
    ("POST", f"/api/sites/{SITE}/lockers/A-01/open", {"operator": "desk", "reason": "test"}),
    ("GET", "/api/reports/holders", None),
    ("GET", "/api/tokens", None),
    ("POST", "/api/tokens", {"name": "x", "role": "viewer"}),
    ("POST", "/api/tokens/1/revoke", None),
    ("GET", "/metrics", None),
]


def crafted_cursor(*key: object) -> str:
    """A cursor made by hand, as a curious client might."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def an_estate(engine: Engine) -> list[dict[str, Any]]:
    """Two gateways at one site and one at another; gw-01 holds A-01 (assigned) and S-01 (shared)."""
    first = envelopes(
        SITE,
        "gw-01",
        [
            {"kind": "gateway.started"},
            {"kind": "access.granted", "locker": "A-01", "reader": "bank-a", "credential": card("C-1", "amira"),
             "reason": "assigned_locker", "unlock": "sent"},
            {"kind": "door.opened", "locker": "A-01"},
            {"kind": "access.granted", "locker": "S-01", "reader": "bank-a", "credential": card("C-2", "ben"),
             "reason": "shared_allocated", "unlock": "sent"},
            {"kind": "locker.allocated", "locker": "S-01", "credential": card("C-2", "ben")},
            {"kind": "credential.lost_presented", "reader": "bank-a", "credential": card("C-9", "=cmd|' /C calc'!A0")},
            {"kind": "access.granted", "locker": "A-02", "reason": "remote_open", "override": True, "unlock": "sent",
             "operator": "desk", "authorizers": [{"id": "M-1", "holder": "head"}, {"id": "M-2", "holder": "nurse"}]},
            {"kind": "access.denied", "reader": "bank-a", "credential": card("C-7", "carl\x1b[31m"),
             "reason": "expired"},
        ],
    )  # fmt: skip
    second = envelopes(SITE, "gw-02", [{"kind": "gateway.started"}, {"kind": "door.closed", "locker": "B-01"}])
    other = envelopes("south-park", "gw-01", [{"kind": "gateway.started"}])
    store_events(engine, first + second + other)
    store_gateway(engine, SITE, "gw-01", anchor_seq=1, verified_seq=8, received_seq=8, chain="ok")
    store_gateway(engine, SITE, "gw-02", anchor_seq=1, verified_seq=2, received_seq=2, chain="ok")
    store_gateway(engine, "south-park", "gw-01", state="offline", anchor_seq=1, verified_seq=1, received_seq=1)
    for locker in ("A-01", "A-02", "S-01"):
        store_locker(engine, SITE, "gw-01", locker, occupied=locker == "S-01")
    store_locker(engine, SITE, "gw-02", "B-01")
    store_locker(engine, "south-park", "gw-01", "P-01")
    return first + second + other


# ---- tokens and roles -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
def test_every_route_but_healthz_needs_a_live_token(
    client: TestClient, engine: Engine, token: dict[str, str], method: str, path: str, body: dict[str, Any] | None
) -> None:
    missing = client.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing bearer token (Authorization: Bearer TOKEN)"}
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.request(method, path, json=body, headers=bearer("lgwc_not-a-token"))
    assert (wrong.status_code, wrong.json()) == (401, {"error": "unknown or revoked token"})
    with engine.begin() as connection:
        revoke_token(connection, "test admin", T0)
    revoked = client.request(method, path, json=body, headers=bearer(token["admin"]))
    assert (revoked.status_code, revoked.json()) == (401, {"error": "unknown or revoked token"})
    basic = client.request(method, path, json=body, headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401


def test_a_viewer_reads_but_cannot_acknowledge_or_open_and_nothing_changes(
    client: TestClient, engine: Engine, token: dict[str, str], gateways_fake: FakeGateways
) -> None:
    an_estate(engine)
    alert = store_alert(engine, SITE, "gw-01", "door.left_open")
    viewer = bearer(token["viewer"])
    for path in ("/api/gateways", "/api/events", "/api/lockers", "/api/alerts", "/api/reports/lockers", "/metrics"):
        assert client.get(path, headers=viewer).status_code == 200, path
    ack = client.post(f"/api/alerts/{alert}/ack", json={"by": "amira"}, headers=viewer)
    assert ack.status_code == 403
    assert ack.json() == {"error": "this needs the operator role; token 'test viewer' is viewer"}
    opened = client.post(f"/api/sites/{SITE}/lockers/A-01/open", json={"operator": "x", "reason": "y"}, headers=viewer)
    assert opened.status_code == 403
    assert gateways_fake.sent == []
    assert count(engine, audit_log) == 0
    with engine.connect() as connection:
        assert connection.execute(select(alerts.c.state).where(alerts.c.id == alert)).scalar_one() == "open"


# ---- healthz, gateways --------------------------------------------------------------------------


def test_healthz_needs_no_token_and_says_what_works(client: TestClient, engine: Engine) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "mqtt": "connected", "workers": 0}
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(workers),
            [
                {"id": "central-1", "client_id": "c1", "started_at": now, "heartbeat_at": now, "stopped_at": None},
                {
                    "id": "central-2",
                    "client_id": "c2",
                    "started_at": now,
                    "heartbeat_at": now - timedelta(hours=1),
                    "stopped_at": None,
                },
                {"id": "central-3", "client_id": "c3", "started_at": now, "heartbeat_at": now, "stopped_at": now},
            ],
        )
    assert client.get("/healthz").json()["workers"] == 1  # the stale and the stopped one do not count


def test_healthz_is_degraded_without_mqtt_or_database_and_the_rest_is_503(engine: Engine) -> None:
    with TestClient(create_app(context_for(engine, connected=False))) as client:
        assert client.get("/healthz").json() == {
            "status": "degraded", "database": "ok", "mqtt": "disconnected", "workers": 0,
        }  # fmt: skip
    broken = create_engine("sqlite:////nonexistent/folder/central.db")
    with TestClient(create_app(context_for(broken))) as client:
        answer = client.get("/healthz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "degraded", "database": "error", "mqtt": "connected", "workers": 0}
        # Every other route says the database is away, plainly, and lets the caller retry.
        down = client.get("/api/events", headers=bearer("lgwc_any"))
        assert (down.status_code, down.json()) == (503, {"error": "the database is not available; try again shortly"})


def test_gateways_show_state_chain_and_the_missing_ranges(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    chain = envelopes(SITE, "gw-01", [{"kind": "door.opened", "locker": "A-01"} for _ in range(12)])
    store_events(engine, [e for e in chain if e["seq"] not in (4, 5, 9)])
    store_gateway(engine, SITE, "gw-01", anchor_seq=1, verified_seq=3, received_seq=12, chain="gap", version="1.0")
    store_gateway(engine, SITE, "gw-02")
    answer = client.get("/api/gateways", headers=bearer(token["viewer"]))
    assert answer.status_code == 200
    listed = {g["gateway"]: g for g in answer.json()["gateways"]}
    assert listed["gw-01"] == {
        "site": SITE, "gateway": "gw-01", "state": "online", "boot_id": "boot-1", "version": "1.0",
        "last_seen": "2026-11-02T08:00:00.000Z", "anchor_seq": 1, "verified_seq": 3, "received_seq": 12,
        "chain": "gap", "missing": [[4, 5], [9, 9]], "credentials": "unknown",
    }  # fmt: skip
    assert listed["gw-02"]["missing"] == [] and listed["gw-02"]["received_seq"] is None


# ---- events -------------------------------------------------------------------------------------


def test_events_are_filtered_and_paged_in_order_to_the_last_one(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    stored = an_estate(engine)
    viewer = bearer(token["viewer"])
    expected = sorted(stored, key=lambda e: (e["ts"], e["site"], e["gateway"], e["seq"]))
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/events", params=params, headers=viewer)
        assert page.status_code == 200, page.text
        seen += page.json()["events"]
        cursor = page.json()["cursor"]
        if cursor is None:
            break
    assert seen == expected  # the envelopes exactly as published, every one once, in order

    def query(**params: Any) -> list[tuple[str, int]]:
        answer = client.get("/api/events", params=params, headers=viewer)
        assert answer.status_code == 200, answer.text
        return [(e["gateway"], e["seq"]) for e in answer.json()["events"]]

    assert query(site="south-park") == [("gw-01", 1)]
    assert query(site=SITE, gateway="gw-02") == [("gw-02", 1), ("gw-02", 2)]
    assert query(kind="access.granted", site=SITE) == [("gw-01", 2), ("gw-01", 4), ("gw-01", 7)]
    assert query(locker="S-01") == [("gw-01", 4), ("gw-01", 5)]
    assert query(holder="amira") == [("gw-01", 2)]
    window = {"since": (T0 + timedelta(seconds=2)).isoformat(), "until": (T0 + timedelta(seconds=4)).isoformat()}
    assert query(site=SITE, gateway="gw-01", **window) == [("gw-01", 2), ("gw-01", 3)]
    assert query(kind="no.such.kind") == []


def test_events_stored_while_paging_are_neither_skipped_nor_repeated(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    chain = envelopes(SITE, "gw-01", [{"kind": "door.opened", "locker": "A-01"} for _ in range(10)])
    store_events(engine, chain[:6])
    viewer = bearer(token["viewer"])
    first = client.get("/api/events", params={"limit": 4}, headers=viewer).json()
    store_events(engine, chain[6:])  # late arrivals, all after the page already read
    seqs = [e["seq"] for e in first["events"]]
    cursor = first["cursor"]
    while cursor:
        page = client.get("/api/events", params={"limit": 4, "cursor": cursor}, headers=viewer).json()
        seqs += [e["seq"] for e in page["events"]]
        cursor = page["cursor"]
    assert seqs == list(range(1, 11))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 0}, "limit: input should be greater than or equal to 1"),
        ({"limit": 1001}, "limit: input should be less than or equal to 1000"),
        ({"limit": "ten"}, "limit: input should be a valid integer, unable to parse string as an integer"),
        ({"since": "yesterday"}, "since: input should be a valid datetime or date, input is too short"),
        ({"cursor": "bm90LWEtY3Vyc29y"},
         "cursor: not a cursor this API returned (pass back the value of 'cursor' as is)"),
        ({"since": "2026-11-02T10:00:00Z", "until": "2026-11-02T09:00:00Z"}, "until: must be after since"),
        ({"site": ""}, "site: string should have at least 1 character"),
    ],
)  # fmt: skip
def test_bad_event_queries_are_400_naming_the_field(
    client: TestClient, token: dict[str, str], params: dict[str, Any], message: str
) -> None:
    answer = client.get("/api/events", params=params, headers=bearer(token["viewer"]))
    assert (answer.status_code, answer.json()) == (400, {"error": message})


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/api/events?site=%00", None, "site: must not contain control characters"),
        ("GET", "/api/events?holder=amira%1b%5b2J", None, "holder: must not contain control characters"),
        ("GET", "/api/gateways?site=a%00", None, "site: must not contain control characters"),
        ("GET", "/api/lockers?site=a%00", None, "site: must not contain control characters"),
        ("GET", "/api/alerts?kind=%00", None, "kind: must not contain control characters"),
        ("GET", "/api/reports/lost?site=%00", None, "site: must not contain control characters"),
        ("GET", "/api/events?since=0001-01-01T00:00:00%2B23:59", None, "since: out of range once converted to UTC"),
        ("GET", "/api/reports/overrides?until=9999-12-31T23:59:59-23:59", None,
         "until: out of range once converted to UTC"),
        ("GET", "/api/events?cursor=WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzIzOjU5IiwiYSIsImIiLDFd", None,
         "cursor: not a cursor this API returned (pass back the value of 'cursor' as is)"),
        ("GET", "/api/events?cursor=" + crafted_cursor("2026-11-02T08:00:00+00:00", "a", "b", 10**30), None,
         "cursor: not a cursor this API returned (pass back the value of 'cursor' as is)"),
        ("GET", "/api/events?cursor=" + crafted_cursor("2026-11-02T08:00:00+00:00", "a\x00", "b", 1), None,
         "cursor: not a cursor this API returned (pass back the value of 'cursor' as is)"),
        ("POST", f"/api/sites/{SITE}/lockers/A%00/open", {"operator": "d", "reason": "r"},
         "locker: must not contain control characters"),
        ("POST", f"/api/sites/{SITE}/lockers/A-01/open", {"operator": "d\x00", "reason": "r"},
         "operator: must not contain control characters"),
        ("POST", f"/api/sites/{SITE}/lockers/A-01/open",
         {"operator": "d", "reason": "r", "authorizers": [{"id": "\x07"}]},
         "authorizers[0].id: must not contain control characters"),
        ("POST", "/api/alerts/{id}/ack", {"by": "amira\x00"}, "by: must not contain control characters"),
    ],
)  # fmt: skip
def test_control_characters_and_impossible_times_are_refused_everywhere(
    client: TestClient,
    engine: Engine,
    token: dict[str, str],
    gateways_fake: FakeGateways,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    message: str,
) -> None:
    """PostgreSQL's text cannot hold a NUL, and UTC cannot hold year 1 at +23:59: both are 400, never 500."""
    an_estate(engine)
    alert = store_alert(engine, SITE, "gw-01", "door.left_open")
    answer = client.request(method, path.replace("{id}", str(alert)), json=body, headers=bearer(token["operator"]))
    assert (answer.status_code, answer.json()) == (400, {"error": message})
    assert gateways_fake.sent == [] and count(engine, audit_log) == 0


# ---- lockers ------------------------------------------------------------------------------------


def test_lockers_now_with_their_holders(client: TestClient, engine: Engine, token: dict[str, str]) -> None:
    an_estate(engine)
    answer = client.get("/api/lockers", params={"site": SITE}, headers=bearer(token["viewer"]))
    assert answer.status_code == 200
    rows = {(row["gateway"], row["locker"]): row for row in answer.json()["lockers"]}
    assert set(rows) == {("gw-01", "A-01"), ("gw-01", "A-02"), ("gw-01", "S-01"), ("gw-02", "B-01")}
    assert rows[("gw-01", "A-01")]["holder"] == "amira"  # opened with her assigned key
    assert rows[("gw-01", "S-01")] == {
        "site": SITE, "gateway": "gw-01", "locker": "S-01", "door": "closed", "service": "in_service",
        "occupied": True, "holder": "ben", "keys_out": None,
    }  # fmt: skip
    assert rows[("gw-01", "A-02")]["holder"] is None  # a remote open holds nothing
    released = envelopes(SITE, "gw-01", [{"kind": "door.opened"}] * 8 + [{"kind": "locker.released", "locker": "S-01"}])
    store_events(engine, released[-1:])
    answer = client.get("/api/lockers", params={"site": SITE}, headers=bearer(token["viewer"]))
    assert {r["locker"]: r["holder"] for r in answer.json()["lockers"]}["S-01"] is None


# ---- alerts -------------------------------------------------------------------------------------


def test_an_operator_acknowledges_an_open_alert_once(client: TestClient, engine: Engine, token: dict[str, str]) -> None:
    alert = store_alert(engine, SITE, "gw-01", "door.left_open", seq=3)
    resolved = store_alert(engine, SITE, "gw-02", "gateway.offline", state="resolved", resolved_at=T0)
    operator = bearer(token["operator"])
    listed = client.get("/api/alerts", params={"state": "open"}, headers=operator).json()["alerts"]
    assert [a["id"] for a in listed] == [alert]
    assert listed[0]["detail"] == {"locker": "A-01"} and listed[0]["opened_at"] == "2026-11-02T08:00:00.000Z"
    assert [
        a["id"]
        for a in client.get("/api/alerts", params={"kind": "gateway.offline"}, headers=operator).json()["alerts"]
    ] == [resolved]

    ack = client.post(f"/api/alerts/{alert}/ack", json={"by": "amira"}, headers=operator)
    assert ack.status_code == 200
    assert ack.json()["state"] == "acknowledged" and ack.json()["acknowledged_by"] == "amira"
    again = client.post(f"/api/alerts/{alert}/ack", json={"by": "ben"}, headers=operator)
    assert (again.status_code, again.json()) == (409, {"error": f"alert {alert} is already acknowledged by amira"})
    late = client.post(f"/api/alerts/{resolved}/ack", json={"by": "ben"}, headers=operator)
    assert (late.status_code, late.json()) == (409, {"error": f"alert {resolved} is resolved"})
    with engine.connect() as connection:
        entries = connection.execute(select(audit_log)).all()
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("alert.acknowledge", str(alert), "token:2:test operator")
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/alerts/999/ack", {"by": "amira"}, 404, "no alert 999"),
        ("/api/alerts/{id}/ack", {}, 400, "by: required"),
        ("/api/alerts/{id}/ack", None, 400, "body: required (a JSON object)"),
        ("/api/alerts/{id}/ack", {"by": 7}, 400, "by: input should be a valid string"),
        ("/api/alerts/{id}/ack", {"by": ""}, 400, "by: string should have at least 1 character"),
        ("/api/alerts/{id}/ack", {"by": "x", "extra": 1}, 400, "extra: extra inputs are not permitted"),
        ("/api/alerts/{id}/ack", "not json", 400, "body: not valid JSON"),
        ("/api/alerts/seven/ack", {"by": "amira"}, 400,
         "alert_id: input should be a valid integer, unable to parse string as an integer"),
        ("/api/alerts?state=closed", None, 400, "state: input should be 'open', 'acknowledged' or 'resolved'"),
    ],
)  # fmt: skip
def test_bad_alert_requests_change_nothing(
    client: TestClient, engine: Engine, token: dict[str, str], path: str, body: Any, status: int, message: str
) -> None:
    alert = store_alert(engine, SITE, "gw-01", "door.left_open")
    url = path.replace("{id}", str(alert))
    operator = bearer(token["operator"])
    if isinstance(body, str):
        answer = client.post(url, content=body, headers={**operator, "Content-Type": "application/json"})
    elif url.endswith("/ack"):
        answer = client.post(url, json=body, headers=operator)
    else:
        answer = client.get(url, headers=operator)
    assert (answer.status_code, answer.json()) == (status, {"error": message})
    assert count(engine, audit_log) == 0
    with engine.connect() as connection:
        assert connection.execute(select(alerts.c.state).where(alerts.c.id == alert)).scalar_one() == "open"


# ---- remote open (the gateway side is scripted here; test_api_remote_open runs the real daemon) ---------


def test_a_remote_open_is_forwarded_to_the_gateway_that_has_the_locker(
    client: TestClient, engine: Engine, token: dict[str, str], gateways_fake: FakeGateways
) -> None:
    an_estate(engine)
    gateways_fake.answer = {"status": "ok", "data": {"locker": "B-01", "unlock": "sent", "seq": 3}}
    body = {"operator": "desk", "reason": "lost property", "authorizers": [{"id": "M-1", "holder": "head"}]}
    answer = client.post(f"/api/sites/{SITE}/lockers/B-01/open", json=body, headers=bearer(token["operator"]))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "site": SITE, "gateway": "gw-02", "locker": "B-01", "status": "ok",
        "data": {"locker": "B-01", "unlock": "sent", "seq": 3},
    }  # fmt: skip
    assert gateways_fake.sent == [(SITE, "gw-02", "lockers/open", {"locker": "B-01", **body})]
    with engine.connect() as connection:
        entry = connection.execute(select(audit_log)).one()
    assert (entry.action, entry.site, entry.target) == ("locker.open", SITE, "B-01")


def test_a_locker_known_only_from_the_gateways_info_is_found_too(
    client: TestClient, engine: Engine, token: dict[str, str], gateways_fake: FakeGateways
) -> None:
    info = {"version": "1", "lockers": [{"id": "K-01", "section": "K", "mode": "assigned", "board": None}]}
    store_gateway(engine, SITE, "gw-07", info=json.dumps(info))
    gateways_fake.answer = {"status": "error", "error": "locker 'K-01' is keyed: it has no lock to open"}
    body = {"operator": "desk", "reason": "r"}
    answer = client.post(f"/api/sites/{SITE}/lockers/K-01/open", json=body, headers=bearer(token["operator"]))
    assert answer.status_code == 409
    assert answer.json() == {"error": "gateway gw-07 refused: locker 'K-01' is keyed: it has no lock to open"}
    assert [sent[:3] for sent in gateways_fake.sent] == [(SITE, "gw-07", "lockers/open")]


@pytest.mark.parametrize(
    ("site", "locker", "body", "answer", "fault", "status", "message"),
    [
        (SITE, "Z-99", {"operator": "desk", "reason": "r"}, None, None, 404, "no locker 'Z-99' at site 'north-school'"),
        ("nowhere", "A-01", {"operator": "desk", "reason": "r"}, None, None, 404, "no locker 'A-01' at site 'nowhere'"),
        (SITE, "A-01", {"reason": "r"}, None, None, 400, "operator: required"),
        (SITE, "A-01", {"operator": "desk", "reason": 5}, None, None, 400, "reason: input should be a valid string"),
        (SITE, "A-01", {"operator": "d", "reason": "r", "authorizers": [{"holder": "h"}]}, None, None, 400,
         "authorizers[0].id: required"),
        (SITE, "A-01", {"operator": "d", "reason": "r", "authorizers": "head"}, None, None, 400,
         "authorizers: input should be a valid list"),
        (SITE, "A-01", {"operator": "desk", "reason": "r"}, None, None, 504,
         "gateway gw-01 of site north-school did not answer lockers/open within 10 s"),
        (SITE, "A-01", {"operator": "desk", "reason": "r"}, None,
         GatewayUnavailable("central is not connected to the broker"), 502, "central is not connected to the broker"),
        (SITE, "A-01", {"operator": "desk", "reason": "r"}, None, ValueError("no signing key for site 'north-school'"),
         502, "not sent: no signing key for site 'north-school'"),
        (SITE, "A-01", {"operator": "desk", "reason": "r"},
         {"status": "error", "error": "needs two distinct authorizers"}, None, 409,
         "gateway gw-01 refused: needs two distinct authorizers"),
        ("south-park", "P-01", {"operator": "desk", "reason": "r"}, None, None, 502,
         "gateway gw-01 of site south-park is offline; locker P-01 cannot be opened now"),
    ],
)  # fmt: skip
def test_a_remote_open_that_cannot_be_done_says_why(
    client: TestClient,
    engine: Engine,
    token: dict[str, str],
    gateways_fake: FakeGateways,
    site: str,
    locker: str,
    body: dict[str, Any],
    answer: dict[str, Any] | None,
    fault: Exception | None,
    status: int,
    message: str,
) -> None:
    an_estate(engine)
    gateways_fake.answer, gateways_fake.fault = answer, fault
    response = client.post(f"/api/sites/{site}/lockers/{locker}/open", json=body, headers=bearer(token["operator"]))
    assert (response.status_code, response.json()) == (status, {"error": message})
    # Whatever reached the gateway path is in the audit log; what never got that far is not.
    assert count(engine, audit_log) == (1 if status in (409, 504) or fault is not None else 0)


# ---- tokens -------------------------------------------------------------------------------------


def test_an_admin_makes_lists_and_revokes_tokens_and_no_one_else_can(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    for role in ("viewer", "operator"):
        for method, path, body in (
            ("GET", "/api/tokens", None),
            ("POST", "/api/tokens", {"name": "x", "role": "admin"}),
            ("POST", "/api/tokens/1/revoke", None),
        ):
            answer = client.request(method, path, json=body, headers=bearer(token[role]))
            assert answer.status_code == 403, (role, path)
            assert answer.json()["error"] == f"this needs the admin role; token 'test {role}' is {role}"
    assert count(engine, api_tokens) == 3 and count(engine, audit_log) == 0

    admin = bearer(token["admin"])
    made = client.post("/api/tokens", json={"name": "wallboard", "role": "viewer"}, headers=admin)
    assert made.status_code == 201
    new = made.json()
    assert (new["name"], new["role"], new["revoked_at"]) == ("wallboard", "viewer", None)
    assert client.get("/api/lockers", headers=bearer(new["token"])).status_code == 200
    listed = client.get("/api/tokens", headers=admin).json()["tokens"]
    assert [t["name"] for t in listed] == ["test viewer", "test operator", "test admin", "wallboard"]
    assert all("token" not in t for t in listed)

    revoked = client.post(f"/api/tokens/{new['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/api/lockers", headers=bearer(new["token"])).status_code == 401
    again = client.post(f"/api/tokens/{new['id']}/revoke", headers=admin)
    assert (again.status_code, again.json()) == (409, {"error": f"token {new['id']} is already revoked"})
    missing = client.post("/api/tokens/999/revoke", headers=admin)
    assert (missing.status_code, missing.json()) == (404, {"error": "no token 999"})
    for body, message in (
        ({"name": "x", "role": "root"}, "role: input should be 'viewer', 'operator' or 'admin'"),
        ({"name": "", "role": "viewer"}, "name: string should have at least 1 character"),
        ({"name": "a\x1b[2J", "role": "viewer"}, "name: must not contain control characters"),
        ({"role": "viewer"}, "name: required"),
    ):
        refused = client.post("/api/tokens", json=body, headers=admin)
        assert (refused.status_code, refused.json()) == (400, {"error": message})
    assert count(engine, api_tokens) == 4
    with engine.connect() as connection:
        actions = [row.action for row in connection.execute(select(audit_log).order_by(audit_log.c.id))]
    assert actions == ["token.create", "token.revoke"]


# ---- reports, metrics, openapi ------------------------------------------------------------------


def test_reports_as_json_and_as_spreadsheet_safe_csv(client: TestClient, engine: Engine, token: dict[str, str]) -> None:
    an_estate(engine)
    viewer = bearer(token["viewer"])

    def report(name: str, **params: Any) -> dict[str, Any]:
        answer = client.get(f"/api/reports/{name}", params={"site": SITE, **params}, headers=viewer)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    holders = report("holders")["rows"]
    assert [(r["locker"], r["holder"], r["how"]) for r in holders] == [
        ("A-01", "amira", "assigned"),
        ("S-01", "ben", "allocated"),
    ]
    lost = report("lost")["rows"]
    assert [(r["credential"], r["presented"]) for r in lost] == [("C-9", "1")]
    unreturned = report("unreturned")["rows"]
    assert sorted((r["credential"], r["status"]) for r in unreturned) == [("C-7", "expired"), ("C-9", "lost")]
    overrides = report("overrides")["rows"]
    assert [(r["locker"], r["reason"], r["authorizers"]) for r in overrides] == [("A-02", "remote_open", "head+nurse")]
    assert len(report("lockers")["rows"]) == 4
    assert report("deposits")["rows"] == []  # central issued no credential here

    answer = client.get("/api/reports/unreturned", params={"site": SITE, "format": "csv"}, headers=viewer)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    holders_cells = sorted(r["holder"] for r in rows)
    assert holders_cells == ["'=cmd|' /C calc'!A0", "carl[31m"]  # formula neutralised, ESC removed
    assert "9f9f" not in answer.text  # not even the uid hash, let alone a card number

    bad = client.get("/api/reports/everything", headers=viewer)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("name: input should be 'holders', 'unreturned'")
    bad_format = client.get("/api/reports/lost", params={"format": "xlsx"}, headers=viewer)
    assert (bad_format.status_code, bad_format.json()) == (400, {"error": "format: input should be 'json' or 'csv'"})


def test_metrics_are_prometheus_text_for_a_viewer(client: TestClient, token: dict[str, str]) -> None:
    answer = client.get("/metrics", headers=bearer(token["viewer"]))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert "lockergw_central_events_ingested" in answer.text


def test_unknown_routes_and_methods_are_plain_errors(client: TestClient) -> None:
    assert client.get("/api/nothing").json() == {"error": "no such route: GET /api/nothing"}
    answer = client.delete("/api/gateways")
    assert (answer.status_code, answer.json()) == (405, {"error": "DELETE is not allowed on /api/gateways"})


def test_the_openapi_document_describes_the_api_as_it_answers(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert "422" not in operation["responses"], path
            if path != "/healthz":
                assert {"400", "401", "403"} <= set(operation["responses"]), path
    assert "Gateway" in document["components"]["schemas"]
