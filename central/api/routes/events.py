"""`GET /api/events`: filtered, ordered by ts then (site, gateway, seq), paged by an opaque cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from central.api.deps import Db, Viewer
from central.services.events import DEFAULT_LIMIT, MAX_LIMIT, EventFilter, query_events
from central.services.models import EventPage

router = APIRouter(tags=["events"])
Name = Annotated[str | None, Query(min_length=1, max_length=128)]


@router.get("/api/events", response_model=EventPage, summary="Stored events, oldest first")
def events(
    connection: Db,
    _token: Viewer,
    site: Name = None,
    gateway: Name = None,
    kind: Name = None,
    locker: Name = None,
    holder: Name = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; exclusive")] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> EventPage:
    where = EventFilter(site=site, gateway=gateway, kind=kind, locker=locker, holder=holder, since=since, until=until)
    return query_events(connection, where, cursor=cursor, limit=limit)
