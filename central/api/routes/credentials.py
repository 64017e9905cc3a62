"""Credentials (SPEC §11, central as the estate's issuing office): list, issue, change status, replace,
return, deposits, retire, term-end collection, reassigning a locker, key counts and a key's history.

Every route that changes something needs an operator token, runs in one transaction (nothing
half-applied) and leaves its lines in the audit log; the pusher carries the change to the gateways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from central.api.deps import Context, Db, Operator, Viewer, actor
from central.api.errors import ErrorBody
from central.api.params import NamePath, NameQuery
from central.services import credentials as service
from central.services.models import (
    CredentialList,
    CredentialView,
    Instant,
    KeyCounts,
    KeyHistory,
    PlainText,
    UpsertOutcome,
)

router = APIRouter(tags=["credentials"])

By = Annotated[PlainText | None, Field(default=None, min_length=1, max_length=128, description="who did it")]
Person = Annotated[PlainText, Field(min_length=1, max_length=128, description="the person who did it")]
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such credential at this site"},
    409: {
        "model": ErrorBody,
        "description": "a uid clash, a duplicate without approved_by, or a state that forbids it",
    },
}


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credentials: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=100_000,
        description="SPEC §7 upsert fields: id, uid, holder, role, scope, kind, status, valid_from, valid_until, "
        "schedule, key_code, deposit, approved_by",
    )
    by: By = None


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "suspended", "lost", "revoked", "returned"]
    reason: PlainText | None = Field(default=None, max_length=1024)
    by: By = None


class ReplaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    new_uid: str = Field(default="", max_length=64, description="the new card's number; empty for a physical key")
    new_id: PlainText | None = Field(default=None, min_length=1, max_length=128)
    by: By = None


class ReturnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Person
    at: Instant | None = Field(default=None, description="when it came back (default: now)")


class DepositRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["held", "refunded", "forfeited"]
    by: Person


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="retire a key that is still out (active, suspended, lost)")
    by: By = None


class CollectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[PlainText, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=100_000)
    outcome: Literal["returned", "lost"]
    by: Person
    at: Instant | None = None


class ReassignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: dict[str, Any] = Field(description="the new holder's credential (SPEC §7 upsert fields)")
    by: By = None


class OverdueCheck(BaseModel):
    opened: int


def _zone(context: Context) -> ZoneInfo:
    return ZoneInfo(context.settings.central.timezone)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/api/credentials", response_model=CredentialList, summary="Credentials, uids masked")
def list_(
    connection: Db,
    _token: Viewer,
    site: NameQuery = None,
    holder: NameQuery = None,
    status: NameQuery = None,
    kind: NameQuery = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = service.DEFAULT_LIMIT,
) -> CredentialList:
    return service.list_credentials(
        connection, site=site, holder=holder, status=status, kind=kind, cursor=cursor, limit=limit
    )


@router.get(
    "/api/credentials/overdue",
    response_model=CredentialList,
    summary="Term end: keys past valid_until and not returned",
)
def overdue(connection: Db, _token: Viewer, site: NameQuery = None, holder: NameQuery = None) -> CredentialList:
    return CredentialList(credentials=service.overdue(connection, site=site, holder=holder, now=_now()), cursor=None)


@router.post(
    "/api/credentials/overdue/check",
    response_model=OverdueCheck,
    summary="Look for overdue keys now (key.overdue alerts; the worker does it daily)",
)
def check_overdue(connection: Db, _token: Operator) -> OverdueCheck:
    opened = service.raise_overdue_alerts(connection, _now())
    connection.commit()
    return OverdueCheck(opened=opened)


@router.post(
    "/api/sites/{site}/credentials",
    response_model=UpsertOutcome,
    summary="Issue or update credentials (whole or not at all)",
    responses=CHANGE_ERRORS,
)
def upsert(connection: Db, context: Context, token: Operator, site: NamePath, body: UpsertRequest) -> UpsertOutcome:
    outcome = service.upsert(
        connection, site, body.credentials, by=body.by, actor=actor(token), now=_now(), zone=_zone(context)
    )
    connection.commit()
    return outcome


@router.get(
    "/api/sites/{site}/credentials/{credential_id}",
    response_model=KeyHistory,
    summary="One credential and everything done to it",
    responses={404: CHANGE_ERRORS[404]},
)
def one(connection: Db, _token: Viewer, site: NamePath, credential_id: NamePath) -> KeyHistory:
    return KeyHistory(
        credential=service.get_credential(connection, site, credential_id),
        history=service.history(connection, site, credential_id),
    )


@router.post(
    "/api/sites/{site}/credentials/{credential_id}/status",
    response_model=CredentialView,
    summary="Suspend, reactivate, report lost, revoke or return",
    responses=CHANGE_ERRORS,
)
def set_status(
    connection: Db, token: Operator, site: NamePath, credential_id: NamePath, body: StatusRequest
) -> CredentialView:
    result = service.set_status(
        connection, site, credential_id, body.status, reason=body.reason, by=body.by, actor=actor(token), now=_now()
    )
    connection.commit()
    return result


@router.post(
    "/api/sites/{site}/credentials/{credential_id}/replace",
    response_model=CredentialView,
    summary="Replace a key: the old one becomes replaced, the new one has issue_no + 1",
    responses=CHANGE_ERRORS,
)
def replace(
    connection: Db, token: Operator, site: NamePath, credential_id: NamePath, body: ReplaceRequest
) -> CredentialView:
    result = service.replace_key(
        connection,
        site,
        credential_id,
        new_uid=body.new_uid,
        new_id=body.new_id,
        by=body.by,
        actor=actor(token),
        now=_now(),
    )
    connection.commit()
    return result


@router.post(
    "/api/sites/{site}/credentials/{credential_id}/return",
    response_model=CredentialView,
    summary="A key came back: returned, with the time and the person",
    responses=CHANGE_ERRORS,
)
def return_(
    connection: Db, token: Operator, site: NamePath, credential_id: NamePath, body: ReturnRequest
) -> CredentialView:
    result = service.return_key(connection, site, credential_id, by=body.by, at=body.at, actor=actor(token), now=_now())
    connection.commit()
    return result


@router.post(
    "/api/sites/{site}/credentials/{credential_id}/deposit",
    response_model=CredentialView,
    summary="Record the deposit's state: held, refunded or forfeited",
    responses=CHANGE_ERRORS,
)
def deposit(
    connection: Db, token: Operator, site: NamePath, credential_id: NamePath, body: DepositRequest
) -> CredentialView:
    result = service.set_deposit(
        connection, site, credential_id, body.state, by=body.by, actor=actor(token), now=_now()
    )
    connection.commit()
    return result


@router.post(
    "/api/sites/{site}/credentials/{credential_id}/retire",
    status_code=204,
    summary="Retire a key: removed from the site's set (its history stays)",
    responses=CHANGE_ERRORS,
)
def retire(connection: Db, token: Operator, site: NamePath, credential_id: NamePath, body: RetireRequest) -> None:
    service.retire(connection, site, credential_id, force=body.force, by=body.by, actor=actor(token), now=_now())
    connection.commit()


@router.post(
    "/api/sites/{site}/credentials/collect",
    response_model=UpsertOutcome,
    summary="Term end in one action: mark keys returned or lost",
    responses=CHANGE_ERRORS,
)
def collect(connection: Db, token: Operator, site: NamePath, body: CollectRequest) -> UpsertOutcome:
    outcome = service.collect(
        connection, site, body.ids, body.outcome, by=body.by, at=body.at, actor=actor(token), now=_now()
    )
    connection.commit()
    return outcome


@router.post(
    "/api/sites/{site}/lockers/{locker}/reassign",
    response_model=UpsertOutcome,
    summary="Reassign a locker: release it from its keys and issue the new holder's, as one change",
    responses=CHANGE_ERRORS,
)
def reassign(
    connection: Db, context: Context, token: Operator, site: NamePath, locker: NamePath, body: ReassignRequest
) -> UpsertOutcome:
    outcome = service.reassign_locker(
        connection, site, locker, body.credential, by=body.by, actor=actor(token), now=_now(), zone=_zone(context)
    )
    connection.commit()
    return outcome


@router.get("/api/sites/{site}/keys", response_model=KeyCounts, summary="Keys out per locker and per key code")
def keys(connection: Db, _token: Viewer, site: NamePath) -> KeyCounts:
    return KeyCounts(site=site, **service.key_counts(connection, site))
