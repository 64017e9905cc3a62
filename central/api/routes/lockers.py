"""`GET /api/lockers` and `POST /api/sites/{site}/lockers/{locker}/open`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from central.api.deps import Context, Db, Operator, Viewer, actor
from central.api.errors import ErrorBody
from central.api.params import NamePath, NameQuery
from central.services.lockers import list_lockers
from central.services.models import Authorizer, LockerList, OpenResult, PlainText
from central.services.remote_open import open_locker

router = APIRouter(tags=["lockers"])


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operator: PlainText = Field(min_length=1, max_length=128, description="the person opening it")
    reason: PlainText = Field(min_length=1, max_length=1024)
    authorizers: list[Authorizer] = Field(
        default_factory=list, max_length=16, description="two distinct people for an assigned or occupied locker"
    )


@router.get("/api/lockers", response_model=LockerList, summary="Every locker now")
def lockers(connection: Db, _token: Viewer, site: NameQuery = None) -> LockerList:
    return LockerList(lockers=list_lockers(connection, site))


@router.post(
    "/api/sites/{site}/lockers/{locker}/open",
    response_model=OpenResult,
    summary="Open a locker through its gateway (signed lockers/open)",
    responses={
        404: {"model": ErrorBody, "description": "no such locker at this site"},
        409: {"model": ErrorBody, "description": "the gateway refused (its message is given)"},
        502: {"model": ErrorBody, "description": "the gateway is offline or cannot be reached"},
        504: {"model": ErrorBody, "description": "the gateway did not answer in time"},
    },
)
async def open_(context: Context, token: Operator, site: NamePath, locker: NamePath, body: OpenRequest) -> OpenResult:
    return await open_locker(
        context,
        site,
        locker,
        operator=body.operator,
        reason=body.reason,
        authorizers=body.authorizers,
        actor=actor(token),
    )
