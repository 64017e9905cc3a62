"""`GET /api/events`: filtered, ordered by ts then (site, gateway, seq), paged by an opaque cursor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from central.api.deps import Db, Viewer
from central.api.params import NameQuery, SinceQuery, UntilQuery
from central.services.events import DEFAULT_LIMIT, MAX_LIMIT, EventFilter, query_events
from central.services.models import EventPage

router = APIRouter(tags=["events"])


@router.get("/api/events", response_model=EventPage, summary="Stored events, oldest first")
def events(
    connection: Db,
    _token: Viewer,
    site: NameQuery = None,
    gateway: NameQuery = None,
    kind: NameQuery = None,
    locker: NameQuery = None,
    holder: NameQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> EventPage:
    where = EventFilter(site=site, gateway=gateway, kind=kind, locker=locker, holder=holder, since=since, until=until)
    return query_events(connection, where, cursor=cursor, limit=limit)
