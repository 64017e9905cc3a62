"""The console's rules through HTTP, on SQLite and PostgreSQL: sign-in and its lock-out, sessions that end
at once, roles enforced on every action whatever the page shows, CSRF on every form, every action in the
audit log, and the pages themselves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from central.api.app import create_app
from central.schema import audit_log
from central.services import users
from central.services.users import MAX_FAILED_SIGNINS
from central_tests.api_kit import FakeGateways, context_for, store_alert, store_gateway, store_locker
from central_tests.console_kit import PASSWORD, add_users, hidden_token, sign_in, signed_in

SITE, GATEWAY = "north-school", "gw-01"
PAGES = ("/console/", f"/console/sites/{SITE}", "/console/people", "/console/events", "/console/alerts",
         "/console/reports")  # fmt: skip


@pytest.fixture
def console(engine: Engine, gateways_fake: FakeGateways) -> Iterator[TestClient]:
    add_users(engine)
    store_gateway(engine, SITE, GATEWAY)
    store_locker(engine, SITE, GATEWAY, "A-01")
    store_locker(engine, SITE, GATEWAY, "A-02", occupied=True)
    with TestClient(create_app(context_for(engine, gateways_fake))) as client:
        yield client


def audit(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return [(r.actor, r.action) for r in connection.execute(select(audit_log).order_by(audit_log.c.id))]


def test_every_page_needs_a_signed_in_person(console: TestClient) -> None:
    for page in PAGES:
        answer = console.get(page, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/signin", page
    assert console.post(f"/console/sites/{SITE}/open", data={"locker": "A-01"}).status_code == 401
    assert console.get("/").status_code == 200  # the root leads to the console's sign-in


def test_a_signed_in_viewer_sees_every_page(console: TestClient) -> None:
    signed_in(console, "viewer-1")
    for page in PAGES:
        answer = console.get(page)
        assert answer.status_code == 200, page
        assert 'name="viewport"' in answer.text and "viewer-1" in answer.text


def test_a_viewer_has_no_action_buttons_and_its_posts_are_refused(console: TestClient, engine: Engine) -> None:
    alert = store_alert(engine, SITE, GATEWAY, "credential.lost_presented")
    csrf = signed_in(console, "viewer-1")
    assert "Acknowledge alert" not in console.get("/console/alerts").text
    bank = console.get(f"/console/sites/{SITE}").text
    assert "Open a locker" not in bank and 'action="/console/sites/north-school/open"' not in bank
    refused = [
        console.post(f"/console/alerts/{alert}/ack", data={"csrf_token": csrf}),
        console.post(f"/console/sites/{SITE}/open", data={"csrf_token": csrf, "locker": "A-01", "reason": "x"}),
        console.post(
            f"/console/sites/{SITE}/service", data={"csrf_token": csrf, "locker": "A-01", "service": "out_of_service"}
        ),
    ]
    assert [answer.status_code for answer in refused] == [403, 403, 403]
    assert "needs the operator role" in refused[0].text


def test_a_form_posted_without_its_csrf_token_is_refused(console: TestClient, engine: Engine) -> None:
    alert = store_alert(engine, SITE, GATEWAY, "credential.lost_presented")
    csrf = signed_in(console, "operator-1")
    assert console.post(f"/console/alerts/{alert}/ack", data={}).status_code == 403
    assert console.post(f"/console/alerts/{alert}/ack", data={"csrf_token": "forged"}).status_code == 403
    assert console.post(f"/console/alerts/{alert}/ack", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert console.get("/console/alerts").text.count("Acknowledge alert") == 1  # still open
    done = console.post(f"/console/alerts/{alert}/ack", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and "acknowledged" in done.text
    assert ("user:operator-1", "alert.acknowledge") in audit(engine)


def test_the_sign_in_form_needs_its_own_token(console: TestClient) -> None:
    answer = console.post("/console/signin", data={"name": "operator-1", "password": PASSWORD, "csrf_token": "x"})
    assert answer.status_code == 403 and "lockergw_session" not in answer.cookies


def test_five_wrong_passwords_lock_sign_in_even_with_the_right_one(console: TestClient, engine: Engine) -> None:
    for _ in range(MAX_FAILED_SIGNINS - 1):
        answer = sign_in(console, "operator-1", "wrong password")
        assert answer.status_code == 401 and "wrong name or password" in answer.text
    locked = sign_in(console, "operator-1", "wrong password")
    assert locked.status_code == 401 and "locked after 5 wrong passwords; try again in 15 minutes" in locked.text
    again = sign_in(console, "operator-1", PASSWORD)
    assert again.status_code == 401 and "locked" in again.text
    assert console.get("/console/", follow_redirects=False).status_code == 303
    assert sign_in(console, "viewer-1").status_code == 303  # only that name is locked
    with engine.begin() as connection:
        users.set_password(connection, "operator-1", PASSWORD, actor="test", now=datetime.now(UTC))
    assert sign_in(console, "operator-1").status_code == 303  # a new password lifts the lock
    assert audit(engine).count(("user:operator-1", "signin.failed")) == MAX_FAILED_SIGNINS


def test_the_session_cookie_is_http_only_and_strict(console: TestClient) -> None:
    answer = sign_in(console, "operator-1")
    cookie = answer.headers["set-cookie"]
    assert "lockergw_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure


def test_signing_out_and_removing_a_user_end_sessions_at_once(console: TestClient, engine: Engine) -> None:
    csrf = signed_in(console, "operator-1")
    assert console.post("/console/signout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert console.get("/console/", follow_redirects=False).status_code == 303
    signed_in(console, "admin-1")
    with engine.begin() as connection:
        users.remove(connection, "admin-1", actor="test", now=datetime.now(UTC))
    assert console.get("/console/", follow_redirects=False).status_code == 303
    actions = audit(engine)
    assert ("user:operator-1", "signout") in actions and ("test", "user.remove") in actions


def test_opening_a_free_locker_forwards_a_signed_open_and_a_held_one_waits_for_a_second_person(
    console: TestClient, engine: Engine, gateways_fake: FakeGateways
) -> None:
    gateways_fake.answer = {"status": "ok", "data": {"locker": "A-01", "unlock": "sent", "seq": 9}}
    csrf = signed_in(console, "operator-1")
    missing_reason = console.post(f"/console/sites/{SITE}/open", data={"csrf_token": csrf, "locker": "A-01"})
    assert "Say why the locker is opened" in missing_reason.text and not gateways_fake.sent
    opened = console.post(
        f"/console/sites/{SITE}/open", data={"csrf_token": csrf, "locker": "A-01", "reason": "lost key"}
    )
    assert "Locker A-01 opened" in opened.text
    assert gateways_fake.sent[-1][2:] == ("lockers/open", {"locker": "A-01", "operator": "operator-1",
                                                           "reason": "lost key", "authorizers": []})  # fmt: skip
    asked = console.post(f"/console/sites/{SITE}/open", data={"csrf_token": csrf, "locker": "A-02", "reason": "fire"})
    assert "waits for a second person" in asked.text and len(gateways_fake.sent) == 1
    approval = asked.text.split("/approvals/")[1].split('"')[0]
    same = console.post(f"/console/sites/{SITE}/approvals/{approval}", data={"csrf_token": csrf, "decision": "approve"})
    assert "approved by a second person" in same.text and len(gateways_fake.sent) == 1
    second = TestClient(console.app)
    csrf2 = signed_in(second, "admin-1")
    done = second.post(f"/console/sites/{SITE}/approvals/{approval}", data={"csrf_token": csrf2, "decision": "approve"})
    assert "asked by operator-1, approved by admin-1" in done.text
    sent = gateways_fake.sent[-1][3]
    assert sent["authorizers"] == [{"id": "operator-1", "holder": "operator-1"}, {"id": "admin-1", "holder": "admin-1"}]
    actions = audit(engine)
    assert ("user:operator-1", "locker.open_requested") in actions and (
        "user:admin-1",
        "locker.open_approved",
    ) in actions
    assert [a for a in actions if a[1] == "locker.open"] == [
        ("user:operator-1", "locker.open"),
        ("user:admin-1", "locker.open"),
    ]


def test_taking_a_locker_out_of_service_goes_to_its_gateway(console: TestClient, gateways_fake: FakeGateways) -> None:
    gateways_fake.answer = {"status": "ok", "data": {}}
    csrf = signed_in(console, "operator-1")
    answer = console.post(f"/console/sites/{SITE}/service", data={"csrf_token": csrf, "locker": "A-01",
                                                                 "service": "out_of_service"})  # fmt: skip
    assert "Locker A-01 is out of service" in answer.text
    assert gateways_fake.sent[-1][2:] == ("lockers/set_service", {"locker": "A-01", "service": "out_of_service",
                                                                  "by": "operator-1"})  # fmt: skip
    gateways_fake.answer = None
    timed_out = console.post(f"/console/sites/{SITE}/service", data={"csrf_token": csrf, "locker": "A-01",
                                                                    "service": "in_service"})  # fmt: skip
    assert timed_out.status_code == 200 and "did not answer" in timed_out.text


def test_the_reports_download_as_csv(console: TestClient) -> None:
    signed_in(console, "viewer-1")
    answer = console.get("/console/reports/lockers.csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.splitlines()
    assert lines[0].startswith("site,gateway,locker") and len(lines) == 3
    assert console.get("/console/reports/nothing.csv").status_code == 404


def test_the_assets_are_served_from_the_package(console: TestClient) -> None:
    for asset in ("console.css", "vendor/htmx-2.0.11.min.js", "vendor/htmx-ext-sse-2.2.4.min.js"):
        assert console.get(f"/console/static/{asset}").status_code == 200, asset
    sign_in(console, "viewer-1")
    page = console.get("/console/").text
    assert "http://" not in page.replace('xmlns="http://', "") and "https://" not in page


def test_audit_detail_names_who_and_what(console: TestClient, engine: Engine) -> None:
    sign_in(console, "viewer-1")
    with engine.connect() as connection:
        row = connection.execute(select(audit_log).where(audit_log.c.action == "signin")).one()
    assert row.actor == "user:viewer-1" and row.at is not None and json.loads(row.detail) == {}
    assert hidden_token(console.get("/console/").text)


def test_over_https_the_session_cookie_is_secure(engine: Engine, console: TestClient) -> None:
    with TestClient(console.app, base_url="https://testserver") as secure:
        cookie = sign_in(secure, "operator-1").headers["set-cookie"]
    assert "lockergw_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie


def issue_form(csrf: str, **fields: str) -> dict[str, str]:
    return {"csrf_token": csrf, "site": SITE, "kind": "card", "role": "user", **fields}


def test_people_and_keys_issue_duplicate_lost_replace_and_deposit_never_showing_a_raw_uid(
    console: TestClient, engine: Engine
) -> None:
    csrf = signed_in(console, "operator-1")
    issued = console.post("/console/people/issue", data=issue_form(csrf, id="C-1", holder="amira", uid="3C00CE754C",
                                                                   scope="A-01", deposit="10.00"))  # fmt: skip
    assert "Issued card C-1 to amira (issue 1, uid …754C)" in issued.text
    second = console.post("/console/people/issue", data=issue_form(csrf, id="C-2", holder="amira", uid="14008EC793",
                                                                   scope="A-01"))  # fmt: skip
    assert 'class="problem"' in second.text and "approved_by" in second.text.split('class="problem"')[1][:300]
    approved = console.post("/console/people/issue", data=issue_form(csrf, id="C-2", holder="amira", uid="14008EC793",
                                                                     scope="A-01", approved_by="head"))  # fmt: skip
    assert "Issued card C-2 to amira" in approved.text
    clash = console.post("/console/people/issue", data=issue_form(csrf, id="C-3", holder="cara", uid="3C00CE754C"))
    assert 'class="problem"' in clash.text
    found = console.get("/console/people", params={"q": "754c"}).text  # the last digits of the card
    assert 'data-key="C-1"' in found and 'data-key="C-2"' not in found
    lost = console.post(f"/console/people/{SITE}/C-1/status", data={"csrf_token": csrf, "status": "lost"})
    assert "C-1 is now lost" in lost.text
    refunded = console.post(f"/console/people/{SITE}/C-1/deposit", data={"csrf_token": csrf, "state": "refunded"})
    assert "10.00: refunded" in refunded.text
    replaced = console.post(f"/console/people/{SITE}/C-1/replace", data={"csrf_token": csrf, "new_uid": "62E3086CED"})
    assert "C-1 replaced by C-1-2, issue 2" in replaced.text and "…6CED" in replaced.text
    history = console.get(f"/console/people/{SITE}/C-1").text
    assert "credential.issue" in history and "credential.set_status" in history and "credential.replace" in history
    for page in (issued, second, approved, clash, lost, refunded, replaced):
        for raw in ("3C00CE754C", "14008EC793", "62E3086CED"):
            assert raw not in page.text
    with engine.connect() as connection:
        logged = " ".join(connection.execute(select(audit_log.c.detail)).scalars())
    assert "3C00CE754C" not in logged


def test_a_viewer_cannot_issue_or_change_a_key(console: TestClient) -> None:
    operator = TestClient(console.app)
    csrf = signed_in(operator, "operator-1")
    operator.post("/console/people/issue", data=issue_form(csrf, id="C-1", holder="amira", uid="3C00CE754C"))
    viewer_csrf = signed_in(console, "viewer-1")
    assert "Issue a key" not in console.get("/console/people").text
    assert "Mark as" not in console.get(f"/console/people/{SITE}/C-1").text
    refused = [
        console.post("/console/people/issue", data=issue_form(viewer_csrf, id="C-9", holder="x", uid="0A0B0C0D0E")),
        console.post(f"/console/people/{SITE}/C-1/status", data={"csrf_token": viewer_csrf, "status": "lost"}),
    ]
    assert [answer.status_code for answer in refused] == [403, 403]
