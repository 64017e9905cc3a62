"""Alerts: open ones first, then acknowledged, then the latest resolved with what resolved them; an
operator acknowledges. The list is live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from central.api.deps import Db
from central.api.params import NameQuery
from central.services import alerts as service
from central.services.errors import ServiceError
from central.services.users import Session
from central.tokens import Role
from central.web.auth import OperatorAction, Viewer, actor
from central.web.live import stream
from central.web.templating import fragment, render

router = APIRouter(include_in_schema=False)
RESOLVED_SHOWN = 50


def alerts_html(connection: Connection, session: Session, site: str | None) -> str:
    listed = {
        state: service.list_alerts(connection, state=state, site=site, limit=limit)
        for state, limit in (
            ("open", service.MAX_LIMIT),
            ("acknowledged", service.MAX_LIMIT),
            ("resolved", RESOLVED_SHOWN),
        )
    }
    return fragment(
        "_alerts.html", listed=listed, csrf_token=session.csrf_token, can_act=session.user.role >= Role.operator
    )


def alerts_page(
    request: Request, connection: Connection, session: Session, site: str | None, notice: str = "", problem: str = ""
) -> Response:
    suffix = f"?site={site}" if site else ""
    return render(
        request, "alerts.html", session, title="Alerts", body=alerts_html(connection, session, site),
        live_url=f"/console/live/alerts{suffix}", notice=notice, problem=problem,
    )  # fmt: skip


@router.get("/console/alerts", response_class=HTMLResponse)
def page(request: Request, connection: Db, session: Viewer, site: NameQuery = None) -> Response:
    return alerts_page(request, connection, session, site)


@router.get("/console/live/alerts")
def live(request: Request, _session: Viewer, site: NameQuery = None) -> Response:
    return stream(request, "alerts", lambda connection, session: alerts_html(connection, session, site))


@router.post("/console/alerts/{alert_id}/ack", response_class=HTMLResponse)
def acknowledge(
    request: Request, connection: Db, session: OperatorAction, alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> Response:
    try:
        alert = service.acknowledge(
            connection, alert_id, session.user.name, actor=actor(session), now=datetime.now(UTC)
        )
    except ServiceError as exc:
        return alerts_page(request, connection, session, None, problem=str(exc))
    connection.commit()
    return alerts_page(request, connection, session, None, notice=f"Alert {alert.id} ({alert.kind}) acknowledged.")
