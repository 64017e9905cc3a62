"""`GET /api/alerts` and `POST /api/alerts/{id}/ack`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from central.api.deps import Db, Operator, Viewer, actor
from central.api.errors import ErrorBody
from central.api.params import NameQuery
from central.services import alerts as service
from central.services.models import Alert, AlertList, AlertState, PlainText

router = APIRouter(tags=["alerts"])


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: PlainText = Field(min_length=1, max_length=128, description="the person acknowledging")


@router.get("/api/alerts", response_model=AlertList, summary="Alerts, newest first")
def alerts(
    connection: Db,
    _token: Viewer,
    state: AlertState | None = None,
    kind: NameQuery = None,
    site: NameQuery = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = service.MAX_LIMIT,
) -> AlertList:
    return AlertList(alerts=service.list_alerts(connection, state=state, kind=kind, site=site, limit=limit))


@router.post(
    "/api/alerts/{alert_id}/ack",
    response_model=Alert,
    summary="Acknowledge an open alert",
    responses={
        404: {"model": ErrorBody, "description": "no such alert"},
        409: {"model": ErrorBody, "description": "already acknowledged, or resolved"},
    },
)
def acknowledge(
    connection: Db,
    token: Operator,
    alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: Acknowledgement,
) -> Alert:
    alert = service.acknowledge(connection, alert_id, body.by, actor=actor(token), now=datetime.now(UTC))
    connection.commit()
    return alert
