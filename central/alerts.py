"""Alerts (SPEC §11 Alerts): open, resolve and publish, idempotently.

At most one alert per `(site, gateway, kind, subject)` is unresolved at a time (a unique partial index),
so opening the same alert twice — a duplicate delivery, two workers, an out-of-order copy — changes
nothing. The `published` flag is an outbox: each alert goes out once on
`{prefix}/central/alerts/{kind}` after the transaction that opened it has committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, select, tuple_, update

from central import metrics
from central.schema import alerts, events
from central.sql import storable, upsert, utc

log = logging.getLogger(__name__)

#: Event kinds that open an alert of the same name, one per event (subject = the event's seq).
EVENT_ALERT_KINDS = frozenset({"door.forced_open", "credential.lost_presented", "reader.lockout", "unlock.failed"})
DOOR_LEFT_OPEN = "door.left_open"
DOOR_CLOSED = "door.closed"
#: Alerts published per outbox pass; the rest go in the next.
PUBLISH_BATCH = 200


def open_alert(
    connection: Connection,
    *,
    site: str,
    gateway: str,
    kind: str,
    at: datetime,
    subject: str = "",
    seq: int | None = None,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Open an alert unless one with this key is already unresolved; True when a new one was opened."""
    statement = (
        upsert(connection, alerts)
        .values(
            site=site,
            gateway=gateway,
            kind=kind,
            subject=storable(subject) or "",
            opened_at=at,
            seq=seq,
            state="open",
            detail=json.dumps(detail or {}, sort_keys=True),
            published=False,
        )
        .on_conflict_do_nothing()
        .returning(alerts.c.id)
    )
    # rowcount is not reliable here (PostgreSQL's implicit RETURNING of the id): ask for the id instead.
    opened = connection.execute(statement).first() is not None
    if opened:
        log.warning("alert %s opened: %s/%s %s", kind, site, gateway, subject or "")
    return opened


def resolve_alerts(
    connection: Connection,
    *,
    site: str,
    gateway: str,
    kind: str,
    at: datetime,
    resolution: str,
    subject: str | None = None,
    before_seq: int | None = None,
) -> int:
    """Resolve the unresolved alerts of this kind (and subject, and opened by a seq below `before_seq`)."""
    conditions = [alerts.c.site == site, alerts.c.gateway == gateway, alerts.c.kind == kind]
    conditions.append(alerts.c.state != "resolved")
    if subject is not None:
        conditions.append(alerts.c.subject == (storable(subject) or ""))
    if before_seq is not None:
        conditions.append(alerts.c.seq < before_seq)
    result = connection.execute(
        update(alerts).where(and_(*conditions)).values(state="resolved", resolved_at=at, resolution=resolution)
    )
    if result.rowcount:
        log.info("alert %s resolved: %s/%s %s (%s)", kind, site, gateway, subject or "", resolution)
    return int(result.rowcount)


def alerts_from_events(connection: Connection, stored: Iterable[dict[str, Any]], at: datetime) -> None:
    """The alerts that newly stored events open or resolve (each event is seen here once: on first storing).

    Per batch, not per event: a `door.closed` costs a statement only when its locker has an unresolved
    `door.left_open` (looked up once for the batch's gateways)."""
    batch = list(stored)
    closing = {(e["site"], e["gateway"]) for e in batch if e["kind"] == DOOR_CLOSED and e.get("locker")}
    left_open = _open_left_open(connection, closing)
    for event in batch:
        kind, site, gateway, seq = event["kind"], event["site"], event["gateway"], event["seq"]
        locker = event.get("locker")
        if kind in EVENT_ALERT_KINDS:
            detail = {k: event[k] for k in ("reader", "locker", "credential_id", "holder", "reason") if event.get(k)}
            open_alert(
                connection, site=site, gateway=gateway, kind=kind, at=at, subject=str(seq), seq=seq, detail=detail
            )
        elif kind == DOOR_LEFT_OPEN and locker and not _closed_after(connection, site, gateway, locker, seq):
            opened = open_alert(
                connection,
                site=site,
                gateway=gateway,
                kind=kind,
                at=at,
                subject=locker,
                seq=seq,
                detail={"locker": locker},
            )
            if opened:
                left_open.setdefault((site, gateway, storable(locker) or ""), []).append(seq)
        elif kind == DOOR_CLOSED and locker:
            key = (site, gateway, storable(locker) or "")
            if not any(opened_by is not None and opened_by < seq for opened_by in left_open.get(key, [])):
                continue
            resolve_alerts(
                connection,
                site=site,
                gateway=gateway,
                kind=DOOR_LEFT_OPEN,
                subject=locker,
                before_seq=seq,
                at=at,
                resolution=f"door closed (seq {seq})",
            )
            left_open[key] = [s for s in left_open[key] if s is None or s >= seq]


def _open_left_open(connection: Connection, gateways: set[tuple[str, str]]) -> dict[tuple[str, str, str], list[Any]]:
    """Unresolved `door.left_open` alerts of these gateways: (site, gateway, locker) → the seqs that opened them."""
    found: dict[tuple[str, str, str], list[Any]] = {}
    if not gateways:
        return found
    rows = connection.execute(
        select(alerts.c.site, alerts.c.gateway, alerts.c.subject, alerts.c.seq).where(
            alerts.c.kind == DOOR_LEFT_OPEN,
            alerts.c.state != "resolved",
            tuple_(alerts.c.site, alerts.c.gateway).in_(sorted(gateways)),
        )
    )
    for row in rows:
        found.setdefault((row.site, row.gateway, row.subject), []).append(row.seq)
    return found


def _closed_after(connection: Connection, site: str, gateway: str, locker: str, seq: int) -> bool:
    """Is a later `door.closed` of this locker already stored (an event delivered out of order)?"""
    closed = connection.execute(
        select(events.c.seq)
        .where(
            events.c.site == site,
            events.c.gateway == gateway,
            events.c.locker == locker,
            events.c.kind == DOOR_CLOSED,
            events.c.seq > seq,
        )
        .limit(1)
    ).first()
    return closed is not None


def resolve_closed_doors(connection: Connection, at: datetime) -> int:
    """Resolve `door.left_open` alerts whose locker has a later `door.closed` stored.

    Events of one gateway arrive at several workers and out of order, so the closing event may have been
    stored before, or beside, the one that opened the alert; this query catches what `alerts_from_events`
    could not see."""
    closed_later = exists().where(
        events.c.site == alerts.c.site,
        events.c.gateway == alerts.c.gateway,
        events.c.locker == alerts.c.subject,
        events.c.kind == DOOR_CLOSED,
        events.c.seq > alerts.c.seq,
    )
    result = connection.execute(
        update(alerts)
        .where(alerts.c.kind == DOOR_LEFT_OPEN, alerts.c.state != "resolved", closed_later)
        .values(state="resolved", resolved_at=at, resolution="door closed")
    )
    return int(result.rowcount)


def alert_payload(row: Any) -> dict[str, Any]:
    """What is published for an alert (and what the API shows): SPEC §11's fields."""
    opened, resolved = utc(row.opened_at), utc(row.resolved_at)
    return {
        "id": row.id,
        "site": row.site,
        "gateway": row.gateway,
        "kind": row.kind,
        "state": row.state,
        "opened_at": opened.isoformat().replace("+00:00", "Z") if opened else None,
        "seq": row.seq,
        "acknowledged_by": row.acknowledged_by,
        "resolved_at": resolved.isoformat().replace("+00:00", "Z") if resolved else None,
        "detail": json.loads(row.detail or "{}"),
    }


def publish_pending(engine: Engine, publish: Callable[[str, bytes], bool], prefix: str) -> int:
    """Publish alerts not yet published (the outbox); `publish(topic, payload)` returns True once the broker
    has acknowledged. On PostgreSQL the rows are claimed with SKIP LOCKED, so two workers never send one
    twice; SQLite has one worker, and its write lock is not held while waiting for the broker."""
    query = select(alerts).where(alerts.c.published.is_(False)).order_by(alerts.c.id).limit(PUBLISH_BATCH)
    if engine.dialect.name != "postgresql":
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        sent = 0
        for row in rows:
            if not publish(*_message(row, prefix)):
                break
            with engine.begin() as connection:
                connection.execute(update(alerts).where(alerts.c.id == row.id).values(published=True))
            sent += 1
        return sent
    sent = 0
    with engine.begin() as connection:
        for row in connection.execute(query.with_for_update(skip_locked=True)).all():
            if not publish(*_message(row, prefix)):
                break
            connection.execute(update(alerts).where(alerts.c.id == row.id).values(published=True))
            sent += 1
    return sent


def _message(row: Any, prefix: str) -> tuple[str, bytes]:
    return f"{prefix}/central/alerts/{row.kind}", json.dumps(alert_payload(row), sort_keys=True).encode()


def refresh_open_gauge(connection: Connection) -> None:
    """`lockergw_central_alerts_open{kind}` from the table (the truth, whichever worker opened them)."""
    counts: dict[str, int] = {
        kind: int(count)
        for kind, count in connection.execute(
            select(alerts.c.kind, func.count()).where(alerts.c.state != "resolved").group_by(alerts.c.kind)
        )
    }
    for kind in set(counts) | {"gateway.offline", "chain.broken", "chain.conflict", "events.missing"}:
        metrics.ALERTS_OPEN.labels(kind=kind).set(counts.get(kind, 0))
