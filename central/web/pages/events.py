"""Events: the newest events, filtered by site, gateway, kind, locker or holder, updated live."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from central.api.deps import Db
from central.api.params import NameQuery
from central.services.events import EventFilter, latest_events
from central.services.users import Session
from central.web.auth import Viewer
from central.web.live import stream
from central.web.templating import fragment, render

router = APIRouter(include_in_schema=False)
SHOWN = 100
#: Envelope fields shown in the list; `details` gathers the rest worth reading (never a uid: events carry
#: a card only as `uid_hash`, which is not shown either).
COLUMNS = ("ts", "site", "gateway", "seq", "kind", "locker", "holder", "credential", "reason")
HIDDEN = frozenset({*COLUMNS, "schema", "event_id", "boot_id", "prev_hash", "hash", "uid_hash", "historical", "reader"})


def filters(
    site: NameQuery = None,
    gateway: NameQuery = None,
    kind: NameQuery = None,
    locker: NameQuery = None,
    holder: NameQuery = None,
) -> EventFilter:
    return EventFilter(site=site or None, gateway=gateway or None, kind=kind or None, locker=locker or None,
                       holder=holder or None)  # fmt: skip


Filters = Annotated[EventFilter, Depends(filters)]


def details(envelope: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in envelope.items() if k not in HIDDEN and v not in (None, "", [], {}))


def rows_html(connection: Connection, where: EventFilter) -> str:
    return fragment("_events.html", events=latest_events(connection, where, limit=SHOWN), details=details)


@router.get("/console/events", response_class=HTMLResponse)
def page(request: Request, connection: Db, session: Viewer, where: Filters) -> Response:
    query = urlencode({k: v for k, v in vars_of(where).items() if v})
    return render(
        request, "events.html", session, title="Events", rows=rows_html(connection, where), where=vars_of(where),
        live_url=f"/console/live/events?{query}",
    )  # fmt: skip


@router.get("/console/live/events")
def live(request: Request, _session: Viewer, where: Filters) -> Response:
    def html(connection: Connection, _session: Session) -> str:
        return rows_html(connection, where)

    return stream(request, "events", html)


def vars_of(where: EventFilter) -> dict[str, str]:
    return {name: getattr(where, name) or "" for name in ("site", "gateway", "kind", "locker", "holder")}
