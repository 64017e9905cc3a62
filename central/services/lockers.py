"""Each locker now (SPEC §11 `GET /api/lockers`): its retained state from `lockers`, and who holds it as
far as the events tell — the latest allocation or release of a shared locker, or the latest opening of
an assigned locker by its holder's own key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, or_, select

from central.schema import events, gateways, lockers
from central.services.credentials import key_counts, site_state
from central.services.errors import Conflict, NotFound
from central.services.models import Locker
from central.services.times import utc_or_none

#: The events that say who holds a locker.
HOLDING = or_(
    events.c.kind.in_(("locker.allocated", "locker.released")),
    and_(events.c.kind == "access.granted", events.c.reason == "assigned_locker"),
)


@dataclass(frozen=True, slots=True)
class Holding:
    """A locker with who holds it now and since when (from its latest holding event)."""

    site: str
    gateway: str
    locker: str
    door: str
    service: str
    occupied: bool | None
    holder: str | None
    credential: str | None
    since: datetime | None
    how: str | None  # allocated | assigned


def _with_holders(site: str | None) -> Select[tuple[object, ...]]:
    """lockers ⟕ its latest holding event (a correlated index read per locker, never a scan of events)."""
    latest_seq = (
        select(events.c.seq)
        .where(
            events.c.site == lockers.c.site,
            events.c.locker == lockers.c.locker,
            events.c.gateway == lockers.c.gateway,
            HOLDING,
        )
        .order_by(events.c.ts.desc(), events.c.seq.desc())
        .limit(1)
        .correlate(lockers)
        .scalar_subquery()
    )
    current = select(lockers, latest_seq.label("holding_seq"))
    if site is not None:
        current = current.where(lockers.c.site == site)
    # Materialised, so that PostgreSQL runs the per-locker lookup once per locker rather than once per
    # partition of `events` it joins the result against.
    now = current.cte("now").prefix_with("MATERIALIZED", dialect="postgresql")
    held = events.alias("held")
    return (
        select(now, held.c.kind, held.c.holder, held.c.credential_id, held.c.ts.label("held_since"))
        .select_from(
            now.outerjoin(
                held,
                and_(held.c.site == now.c.site, held.c.gateway == now.c.gateway, held.c.seq == now.c.holding_seq),
            )
        )
        .order_by(now.c.site, now.c.gateway, now.c.locker)
    )


def holdings(connection: Connection, site: str | None = None) -> list[Holding]:
    result: list[Holding] = []
    for row in connection.execute(_with_holders(site)):
        released = row.kind in (None, "locker.released")
        result.append(
            Holding(
                site=row.site,
                gateway=row.gateway,
                locker=row.locker,
                door=row.door,
                service=row.service,
                occupied=row.occupied,
                holder=None if released else row.holder,
                credential=None if released else row.credential_id,
                since=None if released else utc_or_none(row.held_since),
                how=None if released else ("allocated" if row.kind == "locker.allocated" else "assigned"),
            )
        )
    return result


def keys_out_by_site(connection: Connection, sites: set[str]) -> dict[str, dict[str, int] | None]:
    """Per site: the keys out per locker (central.services.credentials.key_counts), or None for a site
    central does not issue credentials for."""
    return {name: key_counts(connection, name)["lockers"] if site_state(connection, name) else None for name in sites}


def list_lockers(connection: Connection, site: str | None = None) -> list[Locker]:
    """Every locker now; `keys_out` counts the keys central issued for it that are still out (null for a
    site central does not issue credentials for)."""
    found = holdings(connection, site)
    counts = keys_out_by_site(connection, {h.site for h in found})
    return [
        Locker(
            site=h.site,
            gateway=h.gateway,
            locker=h.locker,
            door=h.door,
            service=h.service,
            occupied=h.occupied,
            holder=h.holder,
            keys_out=None if (per := counts[h.site]) is None else per.get(h.locker, 0),
        )
        for h in found
    ]


def described_lockers(connection: Connection, site: str | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Each locker as the gateways' retained `info` describes it (section, department, mode, board)."""
    query = select(gateways.c.site, gateways.c.gateway, gateways.c.info).where(gateways.c.info.is_not(None))
    if site is not None:
        query = query.where(gateways.c.site == site)
    described: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in connection.execute(query):
        try:
            info = json.loads(row.info)
        except ValueError:
            continue
        listed = info.get("lockers") if isinstance(info, dict) else None
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                described[(row.site, row.gateway, entry["id"])] = entry
    return described


def gateway_of(connection: Connection, site: str, locker: str) -> str:
    """The gateway that has `locker` at `site` (from the retained locker states, else the gateways'
    `info`); NotFound if none does, Conflict if several claim it."""
    found = connection.execute(
        select(lockers.c.gateway).where(lockers.c.site == site, lockers.c.locker == locker).order_by(lockers.c.gateway)
    ).scalars()
    names = [str(name) for name in found]
    if not names:  # no retained state yet: the gateways' `info` still says which gateway has it
        names = sorted({gateway for (_, gateway, name) in described_lockers(connection, site) if name == locker})
    if not names:
        raise NotFound(f"no locker {locker!r} at site {site!r}")
    if len(names) > 1:
        raise Conflict(f"locker {locker!r} at site {site!r} is reported by several gateways: {', '.join(names)}")
    return names[0]
