"""People and keys: search by holder, id or masked uid; issue a card, fob, mobile credential or physical
key; mark lost, returned, suspended; replace (a new issue number); duplicates only with an approver;
deposits; and each key's history — what was done to it and what it opened.

Every change goes through central.services.credentials (central is the issuing office, SPEC §11): the
same rules and audit as the API, pushed to the site's gateways. A raw uid typed into a form goes to the
service and nowhere else: it is never put back into a page, an address or a message (the services mask
uids in their own messages).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection, select

from central.api.deps import Context, Db
from central.api.params import NamePath
from central.schema import credential_sites, gateways
from central.services import credentials as service
from central.services.errors import ServiceError
from central.services.events import EventFilter, latest_events
from central.services.models import CredentialView
from central.services.users import Session
from central.web.auth import OperatorAction, Viewer, actor
from central.web.templating import render

router = APIRouter(include_in_schema=False)
KINDS = ("card", "fob", "mobile", "physical_key")
ROLES = ("user", "section_master", "department_master", "site_master", "emergency")
STATUSES = ("lost", "returned", "suspended", "active", "revoked")
DEPOSIT_STATES = ("held", "refunded", "forfeited")
SEARCHED = 1000
Field = Annotated[str, Form(max_length=1024)]


def sites(connection: Connection) -> list[str]:
    known = set(connection.execute(select(gateways.c.site)).scalars())
    known |= set(connection.execute(select(credential_sites.c.site)).scalars())
    return sorted(known)


def matches(credential: CredentialView, query: str) -> bool:
    """Holder or id containing `query`, or a masked uid ending with it (`…754C`, `754C` or `754c`)."""
    wanted = query.strip().casefold()
    if not wanted:
        return True
    uid = (credential.uid or "").lstrip("…").casefold()
    return (
        wanted in credential.holder.casefold()
        or wanted in credential.id.casefold()
        or (bool(uid) and uid.endswith(wanted.lstrip("…")))
    )


def search(connection: Connection, site: str | None, query: str) -> list[CredentialView]:
    listed = service.list_credentials(connection, site=site, limit=SEARCHED).credentials
    return [c for c in listed if matches(c, query)]


def people_page(
    request: Request,
    connection: Connection,
    session: Session,
    *,
    site: str | None,
    q: str = "",
    notice: str = "",
    problem: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    known = sites(connection)
    return render(
        request, "people.html", session, title="People and keys", sites=known, site=site or "", q=q,
        found=search(connection, site or None, q), kinds=KINDS, roles=ROLES, notice=notice, problem=problem,
        form=form or {}, issue_site=site or (known[0] if known else ""),
    )  # fmt: skip


@router.get("/console/people", response_class=HTMLResponse)
def page(
    request: Request,
    connection: Db,
    session: Viewer,
    site: Annotated[str, Query(max_length=128)] = "",
    q: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    return people_page(request, connection, session, site=site or None, q=q)


@router.post("/console/people/issue", response_class=HTMLResponse)
def issue(
    request: Request,
    context: Context,
    connection: Db,
    session: OperatorAction,
    site: Annotated[str, Form(min_length=1, max_length=128)],
    id: Annotated[str, Form(alias="id", min_length=1, max_length=128)],
    holder: Annotated[str, Form(min_length=1, max_length=128)],
    kind: Annotated[str, Form(pattern="^(card|fob|mobile|physical_key)$")] = "card",
    role: Annotated[str, Form(max_length=32)] = "user",
    uid: Annotated[str, Form(max_length=64)] = "",
    scope: Field = "",
    valid_until: Field = "",
    deposit: Field = "",
    key_code: Field = "",
    approved_by: Field = "",
) -> Response:
    item: dict[str, Any] = {
        "id": id.strip(),
        "holder": holder.strip(),
        "role": role,
        "kind": kind,
        "scope": [part.strip() for part in scope.replace(";", ",").split(",") if part.strip()],
    }
    optional = {"uid": uid, "valid_until": valid_until, "deposit": deposit, "key_code": key_code,
                "approved_by": approved_by}  # fmt: skip
    item |= {name: value.strip() for name, value in optional.items() if value.strip()}
    kept = {k: v for k, v in item.items() if k != "uid" and isinstance(v, str)} | {"scope": scope}
    try:
        outcome = service.upsert(
            connection, site, [item], by=session.user.name, actor=actor(session), now=datetime.now(UTC),
            zone=ZoneInfo(context.settings.central.timezone),
        )  # fmt: skip
    except ServiceError as exc:
        connection.rollback()
        return people_page(request, connection, session, site=site, problem=str(exc), form=kept)
    connection.commit()
    issued = outcome.credentials[0] if outcome.credentials else None
    notice = (
        f"Issued {issued.kind.replace('_', ' ')} {issued.id} to {issued.holder} (issue {issued.issue_no}"
        f"{', uid ' + issued.uid if issued.uid else ''})."
        if issued
        else "Nothing changed."
    )
    return people_page(request, connection, session, site=site, q=item["holder"], notice=notice)


def key_page(
    request: Request,
    connection: Connection,
    session: Session,
    site: str,
    credential_id: str,
    *,
    notice: str = "",
    problem: str = "",
) -> Response:
    credential = service.get_credential(connection, site, credential_id)
    return render(
        request, "key.html", session, title=f"Key {credential.id}", credential=credential,
        history=service.history(connection, site, credential_id),
        opened=latest_events(connection, EventFilter(site=site, credential=credential_id), limit=100),
        statuses=STATUSES, deposit_states=DEPOSIT_STATES, notice=notice, problem=problem,
        here=f"/console/people/{quote(site, safe='')}/{quote(credential_id, safe='')}",
    )  # fmt: skip


@router.get("/console/people/{site}/{credential_id}", response_class=HTMLResponse)
def key(request: Request, connection: Db, session: Viewer, site: NamePath, credential_id: NamePath) -> Response:
    return key_page(request, connection, session, site, credential_id)


def key_change(
    request: Request,
    connection: Connection,
    session: Session,
    site: str,
    credential_id: str,
    change: Callable[[datetime], tuple[str, str]],
) -> Response:
    """Run `change` (which returns the key to show next and a notice) in one transaction, then show that
    key's page; a refused change is rolled back and its message shown on this key's page."""
    try:
        shown, notice = change(datetime.now(UTC))
    except ServiceError as exc:
        connection.rollback()
        return key_page(request, connection, session, site, credential_id, problem=str(exc))
    connection.commit()
    return key_page(request, connection, session, site, shown, notice=notice)


@router.post("/console/people/{site}/{credential_id}/status", response_class=HTMLResponse)
def set_status(
    request: Request,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    credential_id: NamePath,
    status: Annotated[str, Form(pattern="^(lost|returned|suspended|active|revoked)$")],
    reason: Field = "",
) -> Response:
    def change(now: datetime) -> tuple[str, str]:
        changed = service.set_status(
            connection, site, credential_id, status, reason=reason.strip() or None, by=session.user.name,
            actor=actor(session), now=now,
        )  # fmt: skip
        return credential_id, f"{changed.id} is now {changed.status}."

    return key_change(request, connection, session, site, credential_id, change)


@router.post("/console/people/{site}/{credential_id}/replace", response_class=HTMLResponse)
def replace(
    request: Request,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    credential_id: NamePath,
    new_uid: Annotated[str, Form(max_length=64)] = "",
    new_id: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    def change(now: datetime) -> tuple[str, str]:
        successor = service.replace_key(
            connection, site, credential_id, new_uid=new_uid, new_id=new_id.strip() or None, by=session.user.name,
            actor=actor(session), now=now,
        )  # fmt: skip
        return successor.id, f"{credential_id} replaced by {successor.id}, issue {successor.issue_no}."

    return key_change(request, connection, session, site, credential_id, change)


@router.post("/console/people/{site}/{credential_id}/deposit", response_class=HTMLResponse)
def deposit(
    request: Request,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    credential_id: NamePath,
    state: Annotated[str, Form(pattern="^(held|refunded|forfeited)$")],
) -> Response:
    def change(now: datetime) -> tuple[str, str]:
        service.set_deposit(connection, site, credential_id, state, by=session.user.name, actor=actor(session), now=now)
        return credential_id, f"Deposit {state}."

    return key_change(request, connection, session, site, credential_id, change)
