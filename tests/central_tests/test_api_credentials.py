"""Central's credential routes on real PostgreSQL and SQLite: issuing by the gateway's own §4 rules, 409 for
a clash or an unapproved duplicate, 400 naming the field, 403 for a viewer, nothing half-applied, the
audit log, uids masked everywhere — and the term-end collection with its key.overdue alerts and deposits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from central.schema import audit_log, credential_changes, credentials
from central_tests.api_kit import bearer, store_locker

SITE = "north-school"
UID = "3C00CE754C"


def card(ident: str, holder: str, locker: str, uid: str, **more: Any) -> dict[str, Any]:
    return {"id": ident, "uid": uid, "holder": holder, "role": "user", "scope": [locker], **more}


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def issue(client: TestClient, token: str, *items: dict[str, Any], site: str = SITE) -> Any:
    return client.post(f"/api/sites/{site}/credentials", json={"credentials": list(items)}, headers=bearer(token))


def test_issued_credentials_are_listed_masked_and_every_change_is_audited(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    answer = issue(client, token["operator"], card("C-1", "amira", "A-01", UID, deposit="20"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["revision"], body["added"]) == (1, 1)
    assert body["credentials"][0]["uid"] == "…754C" and body["credentials"][0]["deposit"]["state"] == "held"
    again = issue(client, token["operator"], card("C-1", "amira", "A-01", UID, deposit="20"))
    assert (again.json()["revision"], again.json()["unchanged"]) == (1, 1)  # nothing changed, no new revision
    listed = client.get("/api/credentials", params={"site": SITE}, headers=bearer(token["viewer"]))
    assert listed.status_code == 200 and listed.json()["credentials"][0]["uid"] == "…754C"
    one = client.get(f"/api/sites/{SITE}/credentials/C-1", headers=bearer(token["viewer"]))
    assert [h["action"] for h in one.json()["history"]] == ["credential.issue"]
    for response in (answer, listed, one):
        assert UID not in response.text
    with engine.connect() as connection:
        assert connection.execute(select(credentials.c.uid)).scalar_one() == UID  # stored raw: central pushes it
        outbox = connection.execute(select(credential_changes)).one()
    assert outbox.command == "credentials/upsert" and UID in outbox.body


def test_a_second_key_needs_approved_by_and_then_gets_the_next_issue_number(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    assert issue(client, token["operator"], card("C-1", "amira", "A-01", UID)).status_code == 200
    second = card("C-2", "amira", "A-01", "04A1B2C3D4E5F6")
    refused = issue(client, token["operator"], second)
    assert refused.status_code == 409
    assert "C-1" in refused.json()["error"] and "approved_by" in refused.json()["error"]
    approved = issue(client, token["operator"], {**second, "approved_by": "head"})
    assert approved.status_code == 200 and approved.json()["credentials"][0]["issue_no"] == 2
    replaced = client.post(
        f"/api/sites/{SITE}/credentials/C-2/replace",
        json={"new_uid": "11223344", "by": "desk"},
        headers=bearer(token["operator"]),
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["id"], replaced.json()["issue_no"], replaced.json()["uid"]) == ("C-2-3", 3, "…44")


def test_the_same_card_in_another_printed_form_is_a_uid_clash(client: TestClient, token: dict[str, str]) -> None:
    assert issue(client, token["operator"], card("C-1", "amira", "A-01", UID)).status_code == 200
    # 0x00CE754C = 13530444: the 10-digit number printed on the same EM4100 fob
    clash = issue(client, token["operator"], card("C-2", "ben", "A-02", "dec:0013530444"))
    assert clash.status_code == 409 and "C-1" in clash.json()["error"]
    assert UID not in clash.text and "13530444" not in clash.text


def test_bad_input_names_the_field_and_nothing_is_half_applied(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    good = card("C-1", "amira", "A-01", UID)
    for bad, field in (
        (card("C-2", "ben", "A-02", "04A1B2C3", role="wizard"), "credentials[1] (C-2).role"),
        (card("C-2", "ben", "A-02", "04A1B2C3", valid_from="2027-01-02", valid_until="2027-01-01"), "valid_until"),
        (card("C-2", "ben", "A-02", "not a card"), "credentials[1] (C-2).uid"),
        (card("C-2", "ben", "A-02", "04A1B2C3", colour="red"), "colour"),
    ):
        refused = issue(client, token["operator"], good, bad)
        assert refused.status_code == 400, refused.text
        assert field in refused.json()["error"]
    clash = issue(client, token["operator"], good, card("C-2", "ben", "A-02", UID))
    assert clash.status_code == 409
    assert count(engine, credentials) == count(engine, credential_changes) == count(engine, audit_log) == 0
    status = client.post(
        f"/api/sites/{SITE}/credentials/C-9/status", json={"status": "gone"}, headers=bearer(token["operator"])
    )
    assert status.status_code == 400 and status.json()["error"].startswith("status:")
    missing = client.post(
        f"/api/sites/{SITE}/credentials/C-9/status", json={"status": "lost"}, headers=bearer(token["operator"])
    )
    assert missing.status_code == 404


def test_a_viewer_cannot_change_anything(client: TestClient, engine: Engine, token: dict[str, str]) -> None:
    assert issue(client, token["operator"], card("C-1", "amira", "A-01", UID, deposit="20")).status_code == 200
    before = count(engine, audit_log)
    base = f"/api/sites/{SITE}/credentials"
    for path, body in (
        (base, {"credentials": [card("C-2", "ben", "A-02", "04A1B2C3")]}),
        (f"{base}/C-1/status", {"status": "revoked"}),
        (f"{base}/C-1/replace", {"new_uid": "04A1B2C3"}),
        (f"{base}/C-1/return", {"by": "desk"}),
        (f"{base}/C-1/deposit", {"state": "refunded", "by": "desk"}),
        (f"{base}/C-1/retire", {"force": True}),
        (f"{base}/collect", {"ids": ["C-1"], "outcome": "returned", "by": "desk"}),
        (f"/api/sites/{SITE}/lockers/A-01/reassign", {"credential": card("C-2", "ben", "A-01", "04A1B2C3")}),
        ("/api/credentials/overdue/check", None),
    ):
        refused = client.post(path, json=body, headers=bearer(token["viewer"]))
        assert refused.status_code == 403, path
    assert count(engine, audit_log) == before and count(engine, credentials) == 1


def test_term_end_overdue_keys_are_alerted_collected_and_their_deposits_are_reported_to_refund(
    client: TestClient, engine: Engine, token: dict[str, str]
) -> None:
    operator, viewer = bearer(token["operator"]), bearer(token["viewer"])
    ended = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    later = (datetime.now(UTC) + timedelta(days=200)).date().isoformat()
    answer = issue(
        client,
        token["operator"],
        card("C-1", "amira", "A-01", UID, valid_until=ended, deposit="20"),
        card("C-2", "ben", "A-02", "04A1B2C3", valid_until=ended, deposit="20"),
        card("C-3", "carl", "A-03", "04A1B2C4", valid_until=later, deposit="20"),
        {"id": "K-1", "holder": "dana", "role": "user", "scope": ["K-01"], "kind": "physical_key", "key_code": "MK-7",
         "valid_until": ended},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    checked = client.post("/api/credentials/overdue/check", headers=operator)
    assert checked.json() == {"opened": 3}
    assert client.post("/api/credentials/overdue/check", headers=operator).json() == {"opened": 0}
    overdue = client.get("/api/credentials/overdue", params={"site": SITE}, headers=viewer).json()["credentials"]
    assert [c["id"] for c in overdue] == ["C-1", "C-2", "K-1"]
    alerts = client.get("/api/alerts", params={"kind": "key.overdue", "state": "open"}, headers=viewer).json()["alerts"]
    assert sorted(a["detail"]["credential"] for a in alerts) == ["C-1", "C-2", "K-1"]
    keys = client.get(f"/api/sites/{SITE}/keys", headers=viewer).json()
    assert keys["key_codes"] == {"MK-7": 1} and keys["lockers"]["A-01"] == 1

    collected = client.post(
        f"/api/sites/{SITE}/credentials/collect",
        json={"ids": ["C-1", "C-2"], "outcome": "returned", "by": "office"},
        headers=operator,
    )
    assert collected.status_code == 200, collected.text
    assert {c["returned_by"] for c in collected.json()["credentials"]} == {"office"}
    lost = client.post(
        f"/api/sites/{SITE}/credentials/collect",
        json={"ids": ["K-1"], "outcome": "lost", "by": "office"},
        headers=operator,
    )
    assert lost.status_code == 200
    still = client.get("/api/alerts", params={"kind": "key.overdue", "state": "open"}, headers=viewer).json()["alerts"]
    assert still == []
    deposits = client.get("/api/reports/deposits", params={"site": SITE}, headers=viewer).json()["rows"]
    assert [(r["credential"], r["state"], r["to_refund"]) for r in deposits] == [
        ("C-1", "held", "yes"),
        ("C-2", "held", "yes"),
        ("C-3", "held", "no"),
    ]
    refunded = client.post(
        f"/api/sites/{SITE}/credentials/C-1/deposit", json={"state": "refunded", "by": "bursar"}, headers=operator
    )
    assert refunded.json()["deposit"] == {**refunded.json()["deposit"], "state": "refunded", "changed_by": "bursar"}
    lost_report = client.get("/api/reports/lost", params={"site": SITE}, headers=viewer).json()["rows"]
    assert [r["credential"] for r in lost_report] == ["K-1"]
    csv = client.get("/api/reports/deposits", params={"site": SITE, "format": "csv"}, headers=viewer)
    assert csv.status_code == 200 and "bursar" in csv.text and UID not in csv.text


def test_return_reassign_and_retire(client: TestClient, engine: Engine, token: dict[str, str]) -> None:
    operator = bearer(token["operator"])
    assert issue(client, token["operator"], card("C-1", "amira", "A-01", UID)).status_code == 200
    at = "2026-07-20T15:00:00Z"
    returned = client.post(f"/api/sites/{SITE}/credentials/C-1/return", json={"by": "desk", "at": at}, headers=operator)
    assert returned.status_code == 200, returned.text
    assert (returned.json()["status"], returned.json()["returned_by"]) == ("returned", "desk")
    assert returned.json()["returned_at"].startswith("2026-07-20T15:00:00")
    assert issue(client, token["operator"], card("C-2", "ben", "A-02", "04A1B2C3")).status_code == 200
    reassigned = client.post(
        f"/api/sites/{SITE}/lockers/A-02/reassign",
        json={"credential": card("C-3", "carl", "A-02", "04A1B2C4"), "by": "office"},
        headers=operator,
    )
    assert reassigned.status_code == 200, reassigned.text
    states = {c["id"]: c["status"] for c in reassigned.json()["credentials"]}
    assert states == {"C-2": "returned", "C-3": "active"}
    holders = client.get("/api/reports/holders", params={"site": SITE}, headers=operator).json()["rows"]
    assert [(r["locker"], r["holder"], r["credential"], r["how"]) for r in holders] == [
        ("A-02", "carl", "C-3", "issued")
    ]
    store_locker(engine, SITE, "gw-01", "A-02")
    listed = client.get("/api/lockers", params={"site": SITE}, headers=operator).json()["lockers"]
    assert [(x["locker"], x["keys_out"]) for x in listed] == [("A-02", 1)]  # C-2 released, C-3 out
    still_out = client.post(f"/api/sites/{SITE}/credentials/C-3/retire", json={}, headers=operator)
    assert still_out.status_code == 409
    retired = client.post(f"/api/sites/{SITE}/credentials/C-1/retire", json={"by": "office"}, headers=operator)
    assert retired.status_code == 204
    assert client.get(f"/api/sites/{SITE}/credentials/C-1", headers=operator).status_code == 404
    with engine.connect() as connection:
        commands = list(
            connection.execute(select(credential_changes.c.command).order_by(credential_changes.c.revision)).scalars()
        )
    assert commands == [
        "credentials/upsert",
        "credentials/set_status",
        "credentials/upsert",
        "credentials/upsert",
        "credentials/remove",
    ]
