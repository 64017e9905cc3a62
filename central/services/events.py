"""The event query of `GET /api/events`: filters, ordered by ts then (site, gateway, seq), keyset pages.

The order is the events table's primary key, so a page is an index range read whatever the table's
size; the cursor is the last row's key, opaque to callers (base64url of a JSON array).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select, tuple_

from central.schema import events
from central.services.errors import BadInput
from central.services.models import EventPage, no_control_characters
from central.services.times import utc

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class EventFilter:
    site: str | None = None
    gateway: str | None = None
    kind: str | None = None
    locker: str | None = None
    holder: str | None = None
    credential: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the primary key of its last event."""

    ts: datetime
    site: str
    gateway: str
    seq: int

    def encode(self) -> str:
        raw = json.dumps([utc(self.ts).isoformat(), self.site, self.gateway, self.seq], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            ts, site, gateway, seq = json.loads(raw)
            if not (isinstance(site, str) and isinstance(gateway, str) and type(seq) is int and 0 <= seq < 2**63):
                raise ValueError
            no_control_characters(site + gateway)
            return cls(utc(datetime.fromisoformat(ts)), site, gateway, seq)
        except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
            raise BadInput("cursor", "not a cursor this API returned (pass back the value of 'cursor' as is)") from None


def query_events(
    connection: Connection, where: EventFilter, *, cursor: str | None = None, limit: int = DEFAULT_LIMIT
) -> EventPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput("limit", f"must be between 1 and {MAX_LIMIT}")
    if where.since is not None and where.until is not None and utc(where.until) <= utc(where.since):
        raise BadInput("until", "must be after since")
    key = (events.c.ts, events.c.site, events.c.gateway, events.c.seq)
    query = _filtered(select(*key, events.c.envelope).order_by(*key).limit(limit + 1), where)
    if cursor:
        after = Position.decode(cursor)
        query = query.where(tuple_(*key) > tuple_(after.ts, after.site, after.gateway, after.seq))
    rows = connection.execute(query).all()
    page, more = rows[:limit], len(rows) > limit
    envelopes: list[dict[str, Any]] = [json.loads(row.envelope) for row in page]
    last = page[-1] if page else None
    next_cursor = Position(utc(last.ts), last.site, last.gateway, last.seq).encode() if more and last else None
    return EventPage(events=envelopes, cursor=next_cursor)


def _filtered(query: Select[Any], where: EventFilter) -> Select[Any]:
    for column, value in (
        (events.c.site, where.site),
        (events.c.gateway, where.gateway),
        (events.c.kind, where.kind),
        (events.c.locker, where.locker),
        (events.c.holder, where.holder),
        (events.c.credential_id, where.credential),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(events.c.ts >= utc(where.since))
    if where.until is not None:
        query = query.where(events.c.ts < utc(where.until))
    return query


def latest_events(connection: Connection, where: EventFilter, *, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The newest `limit` events matching `where`, newest first (the console's live list)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput("limit", f"must be between 1 and {MAX_LIMIT}")
    key = (events.c.ts.desc(), events.c.site, events.c.gateway, events.c.seq.desc())
    rows = connection.execute(_filtered(select(events.c.envelope).order_by(*key).limit(limit), where)).scalars()
    return [json.loads(envelope) for envelope in rows]
