"""SPEC §10's reports, estate-wide, from central's own tables (SPEC §11).

Keys come from two sources: what the events and the gateways' `info` say (who holds a locker, which keys
were presented lost or past their validity, who overrode) and central's own credential tables (the keys
it issued: lost, overdue, deposits). Every report is columns and rows of strings, served as JSON or as CSV (`csv_text`).
Events carry a card only as `uid_hash`, so no raw card number can reach a report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from central.schema import KEY_STILL_OUT, credentials, events
from central.services.lockers import described_lockers, holdings, keys_out_by_site
from central.services.models import Report
from central.services.times import iso, utc

REPORTS = ("holders", "unreturned", "lost", "overrides", "lockers", "deposits")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return iso(value) or ""
    return str(value)


def _report(name: str, columns: list[str], rows: Iterable[Iterable[object]], note: str | None = None) -> Report:
    return Report(
        report=name, columns=columns, rows=[dict(zip(columns, map(_text, row), strict=True)) for row in rows], note=note
    )


def _by_site_holder_credential(row: tuple[object, ...]) -> tuple[str, str, str]:
    return (str(row[0]), str(row[1]), str(row[2]))


def _between(query: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        query = query.where(events.c.ts >= utc(since))
    if until is not None:
        query = query.where(events.c.ts < utc(until))
    return query


def _site(query: Any, site: str | None) -> Any:
    return query if site is None else query.where(events.c.site == site)


def holders(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Who holds which locker now: the latest allocation of a shared locker, the latest assigned opening —
    and every key central issued that is out (active, suspended, lost) for a locker or a key code (`how`
    `issued`, since its issue; its gateway empty: it is valid at every gateway of the site)."""
    columns = ["site", "gateway", "locker", "holder", "credential", "how", "since"]
    rows: list[tuple[object, ...]] = [
        (h.site, h.gateway, h.locker, h.holder, h.credential, h.how, h.since)
        for h in holdings(connection, site)
        if h.holder is not None or h.credential is not None
    ]
    seen = {(r[0], r[2], r[4]) for r in rows}
    out = select(credentials).where(credentials.c.status.in_(("active", "suspended", "lost")))
    for r in connection.execute(out if site is None else out.where(credentials.c.site == site)):
        places = json.loads(r.scope) if r.role == "user" else []
        for place in places or [r.key_code or ""]:
            if (r.site, place, r.id) not in seen:
                rows.append((r.site, "", place, r.holder, r.id, "issued", r.issued_at))
    ordered = sorted(rows, key=lambda row: (str(row[0]), str(row[2]), str(row[1]), str(row[4])))
    return _report("holders", columns, ordered)


def unreturned(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Keys still in use that should have come back: presented while lost, or refused as expired."""
    status = case((events.c.kind == "credential.lost_presented", "lost"), else_="expired")
    query = (
        select(
            events.c.site,
            func.max(events.c.holder).label("holder"),
            events.c.credential_id,
            status.label("status"),
            func.max(events.c.ts).label("last_seen"),
            func.count().label("times"),
        )
        .where(KEY_STILL_OUT)
        .group_by(events.c.site, events.c.credential_id, status)
        .order_by(events.c.site, func.max(events.c.holder), events.c.credential_id)
    )
    rows = connection.execute(_between(_site(query, site), since, until))
    columns = ["site", "holder", "credential", "status", "last_seen", "times_seen"]
    seen: list[tuple[object, ...]] = [(r.site, r.holder, r.credential_id, r.status, r.last_seen, r.times) for r in rows]
    listed = {(r[0], r[2]) for r in seen}
    out = select(credentials).where(
        ((credentials.c.valid_until <= datetime.now(UTC)) & credentials.c.status.in_(("active", "suspended")))
        | (credentials.c.status == "lost")
    )
    issued: list[tuple[object, ...]] = [
        (r.site, r.holder, r.id, "lost" if r.status == "lost" else "overdue", None, 0)
        for r in connection.execute(out if site is None else out.where(credentials.c.site == site))
        if (r.site, r.id) not in listed
    ]
    ordered = sorted([*seen, *issued], key=_by_site_holder_credential)
    return _report("unreturned", columns, ordered)


def lost(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Lost keys that were presented, how often, first and last."""
    query = (
        select(
            events.c.site,
            func.max(events.c.holder).label("holder"),
            events.c.credential_id,
            func.count().label("times"),
            func.min(events.c.ts).label("first"),
            func.max(events.c.ts).label("last"),
        )
        .where(events.c.kind == "credential.lost_presented")
        .group_by(events.c.site, events.c.credential_id)
        .order_by(events.c.site, func.max(events.c.holder), events.c.credential_id)
    )
    rows = connection.execute(_between(_site(query, site), since, until))
    columns = ["site", "holder", "credential", "presented", "first_presented", "last_presented"]
    seen: list[tuple[object, ...]] = [(r.site, r.holder, r.credential_id, r.times, r.first, r.last) for r in rows]
    listed = {(r[0], r[2]) for r in seen}
    reported = select(credentials).where(credentials.c.status == "lost")
    issued: list[tuple[object, ...]] = [
        (r.site, r.holder, r.id, 0, None, None)
        for r in connection.execute(reported if site is None else reported.where(credentials.c.site == site))
        if (r.site, r.id) not in listed
    ]
    ordered = sorted([*seen, *issued], key=_by_site_holder_credential)
    return _report("lost", columns, ordered)


def _authorizers(envelope: dict[str, Any]) -> str:
    listed = envelope.get("authorizers")
    names = (
        [str(a.get("holder") or a.get("id")) for a in listed if isinstance(a, dict)] if isinstance(listed, list) else []
    )
    return "+".join(names) or str(envelope.get("operator") or "")


def overrides(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Every master, emergency and remote opening (access.granted with override), oldest first."""
    query = (
        select(
            events.c.site,
            events.c.gateway,
            events.c.seq,
            events.c.ts,
            events.c.locker,
            events.c.reader,
            events.c.reason,
            events.c.credential_id,
            events.c.holder,
            events.c.envelope,
        )
        .where(events.c.override.is_(True), events.c.kind == "access.granted")
        .order_by(events.c.ts, events.c.site, events.c.gateway, events.c.seq)
    )
    columns = ["site", "gateway", "seq", "ts", "locker", "reader", "reason", "credential", "holder", "authorizers"]
    rows = (
        (
            r.site,
            r.gateway,
            r.seq,
            r.ts,
            r.locker,
            r.reader,
            r.reason,
            r.credential_id,
            r.holder,
            _authorizers(json.loads(r.envelope)),
        )
        for r in connection.execute(_between(_site(query, site), since, until))
    )
    return _report("overrides", columns, rows)


def lockers(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Every locker: where it is, how it is used, its door and service now, and who holds it."""
    described = described_lockers(connection, site)
    columns = [
        "site",
        "gateway",
        "locker",
        "section",
        "department",
        "mode",
        "kind",
        "door",
        "service",
        "occupied",
        "holder",
        "keys_out",
    ]
    rows = []
    found = holdings(connection, site)
    counts = keys_out_by_site(connection, {h.site for h in found})
    for h in found:
        per_locker = counts[h.site]
        entry = described.get((h.site, h.gateway, h.locker), {})
        kind = "" if not entry else ("keyed" if entry.get("board") is None else "electronic")
        rows.append(
            (
                h.site,
                h.gateway,
                h.locker,
                entry.get("section"),
                entry.get("department"),
                entry.get("mode"),
                kind,
                h.door,
                h.service,
                h.occupied,
                h.holder,
                None if per_locker is None else per_locker.get(h.locker, 0),
            )
        )
    return _report("lockers", columns, rows)


def deposits(connection: Connection, site: str | None, since: datetime | None, until: datetime | None) -> Report:
    """Every deposit central holds or held: amount, state (held | refunded | forfeited), who changed it and
    when, and whether the key is back — a held deposit of a returned key is one to refund."""
    query = (
        select(credentials)
        .where(credentials.c.deposit.is_not(None))
        .order_by(credentials.c.site, credentials.c.holder, credentials.c.id)
    )
    if site is not None:
        query = query.where(credentials.c.site == site)
    columns = [
        "site",
        "holder",
        "credential",
        "kind",
        "key_code",
        "deposit",
        "state",
        "key_status",
        "returned_at",
        "returned_by",
        "to_refund",
        "changed_by",
        "changed_at",
    ]
    rows = (
        (
            r.site,
            r.holder,
            r.id,
            r.kind,
            r.key_code,
            r.deposit,
            r.deposit_state or "held",
            r.status,
            r.returned_at,
            r.returned_by,
            (r.deposit_state or "held") == "held" and r.status == "returned",
            r.deposit_changed_by,
            r.deposit_changed_at,
        )
        for r in connection.execute(query)
    )
    return _report("deposits", columns, rows)


RUNNERS: dict[str, Callable[[Connection, str | None, datetime | None, datetime | None], Report]] = {
    "holders": holders,
    "unreturned": unreturned,
    "lost": lost,
    "overrides": overrides,
    "lockers": lockers,
    "deposits": deposits,
}


def run_report(
    connection: Connection,
    name: str,
    *,
    site: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    return RUNNERS[name](connection, site, since, until)
