"""A site's locker bank: the live grid (door, occupied, service, holder, keys out, door alarms), opening a
locker with a reason, emergency openings approved by a second signed-in person, and service on/off.

Opening goes through `central.services.remote_open` (a signed `lockers/open` to the gateway that has the
locker), exactly as the API's does. A locker central knows to be held or occupied, or one the operator
marks as an emergency, is opened only once a different signed-in person approves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from central.api.deps import Context, Db
from central.api.params import NamePath
from central.context import GatewayUnavailable
from central.services import approvals
from central.services.alerts import list_alerts
from central.services.errors import ServiceError
from central.services.lockers import list_lockers
from central.services.models import Locker
from central.services.remote_open import open_locker, set_locker_service
from central.services.users import Session
from central.tokens import Role
from central.web.auth import OperatorAction, Viewer, actor
from central.web.live import stream
from central.web.templating import fragment, render

router = APIRouter(include_in_schema=False)
DOOR_ALARMS = ("door.left_open", "door.forced_open")
Text = Annotated[str, Form(max_length=1024)]


@dataclass(frozen=True, slots=True)
class Cell:
    locker: Locker
    alarms: list[str]

    @property
    def held(self) -> bool:
        return self.locker.holder is not None or bool(self.locker.occupied)


def cells(connection: Connection, site: str) -> list[Cell]:
    alarms: dict[tuple[str, str], list[str]] = {}
    for state in ("open", "acknowledged"):
        for alert in list_alerts(connection, state=state, site=site):
            if alert.kind in DOOR_ALARMS:
                alarms.setdefault((alert.gateway, str(alert.detail.get("locker"))), []).append(alert.kind)
    return [Cell(locker, alarms.get((locker.gateway, locker.locker), [])) for locker in list_lockers(connection, site)]


def grid_html(connection: Connection, site: str, session: Session) -> str:
    return fragment(
        "_grid.html",
        cells=cells(connection, site),
        pending=approvals.pending(connection, site),
        csrf_token=session.csrf_token,
        can_act=session.user.role >= Role.operator,
    )


def bank_page(
    request: Request, connection: Connection, session: Session, site: str, *, notice: str = "", problem: str = ""
) -> Response:
    return render(
        request,
        "bank.html",
        session,
        title=f"Lockers at {site}",
        site=site,
        grid=grid_html(connection, site, session),
        cells=cells(connection, site),
        pending=approvals.pending(connection, site),
        notice=notice,
        problem=problem,
    )


@router.get("/console/sites/{site}", response_class=HTMLResponse)
def page(request: Request, connection: Db, session: Viewer, site: NamePath) -> Response:
    return bank_page(request, connection, session, site)


@router.get("/console/live/sites/{site}")
def live(request: Request, _session: Viewer, site: NamePath) -> Response:
    return stream(request, "grid", lambda connection, session: grid_html(connection, site, session))


@router.post("/console/sites/{site}/open", response_class=HTMLResponse)
async def open_(
    request: Request,
    context: Context,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    locker: Annotated[str, Form(min_length=1, max_length=128)],
    reason: Text = "",
    emergency: Annotated[bool, Form()] = False,
) -> Response:
    now, name = datetime.now(UTC), session.user.name
    if not reason.strip():
        return bank_page(request, connection, session, site, problem="Say why the locker is opened (reason).")
    held = any(c.locker.locker == locker and c.held for c in cells(connection, site))
    try:
        if emergency or held:
            asked = approvals.request(connection, site, locker, reason, by=name, actor=actor(session), now=now)
            connection.commit()
            notice = (
                f"Locker {locker} is held or occupied: opening it waits for a second person's approval "
                f"(request {asked.id})."
            )
            return bank_page(request, connection, session, site, notice=notice)
        result = await open_locker(
            context, site, locker, operator=name, reason=reason.strip(), authorizers=[], actor=actor(session)
        )
    except (ServiceError, GatewayUnavailable) as exc:
        return bank_page(request, connection, session, site, problem=str(exc))
    return bank_page(request, connection, session, site, notice=f"Locker {locker} opened ({result.gateway}).")


@router.post("/console/sites/{site}/approvals/{approval_id}", response_class=HTMLResponse)
async def decide(
    request: Request,
    context: Context,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    approval_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    decision: Annotated[str, Form(pattern="^(approve|cancel)$")],
) -> Response:
    name = session.user.name
    try:
        asked = approvals.decide(
            connection, approval_id, approve=decision == "approve", by=name, actor=actor(session), now=datetime.now(UTC)
        )
        connection.commit()
        if decision == "cancel":
            return bank_page(request, connection, session, site, notice=f"Request {approval_id} cancelled.")
        await open_locker(
            context,
            asked.site,
            asked.locker,
            operator=name,
            reason=asked.reason,
            authorizers=asked.authorizers(name),
            actor=actor(session),
        )
    except (ServiceError, GatewayUnavailable) as exc:
        return bank_page(request, connection, session, site, problem=str(exc))
    notice = f"Locker {asked.locker} opened: asked by {asked.requested_by}, approved by {name}."
    return bank_page(request, connection, session, site, notice=notice)


@router.post("/console/sites/{site}/service", response_class=HTMLResponse)
async def service(
    request: Request,
    context: Context,
    connection: Db,
    session: OperatorAction,
    site: NamePath,
    locker: Annotated[str, Form(min_length=1, max_length=128)],
    service: Annotated[str, Form(pattern="^(in_service|out_of_service)$")],
) -> Response:
    try:
        await set_locker_service(context, site, locker, service, by=session.user.name, actor=actor(session))
    except (ServiceError, GatewayUnavailable) as exc:
        return bank_page(request, connection, session, site, problem=str(exc))
    words = "back in service" if service == "in_service" else "out of service"
    return bank_page(request, connection, session, site, notice=f"Locker {locker} is {words}.")
