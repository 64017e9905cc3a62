"""Alerts as people see them (SPEC §11): listed by state, kind and site; acknowledged by an operator."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from central.schema import alerts
from central.services import audit
from central.services.errors import BadInput, Conflict, NotFound
from central.services.models import Alert
from central.services.times import iso

MAX_LIMIT = 1000


def _detail(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


def _alert(row: Any) -> Alert:
    return Alert(
        id=row.id,
        site=row.site,
        gateway=row.gateway,
        kind=row.kind,
        state=row.state,
        opened_at=iso(row.opened_at) or "",
        seq=row.seq,
        acknowledged_by=row.acknowledged_by,
        resolved_at=iso(row.resolved_at),
        detail=_detail(row.detail),
    )


def list_alerts(
    connection: Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    site: str | None = None,
    limit: int = MAX_LIMIT,
) -> list[Alert]:
    """The newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput("limit", f"must be between 1 and {MAX_LIMIT}")
    query = select(alerts).order_by(alerts.c.opened_at.desc(), alerts.c.id.desc()).limit(limit)
    for column, value in ((alerts.c.state, state), (alerts.c.kind, kind), (alerts.c.site, site)):
        if value is not None:
            query = query.where(column == value)
    return [_alert(row) for row in connection.execute(query)]


def acknowledge(connection: Connection, alert_id: int, by: str, *, actor: str, now: datetime) -> Alert:
    """Mark an open alert acknowledged by `by`; NotFound / Conflict (already acknowledged, resolved)."""
    row = connection.execute(select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    if row.state == "acknowledged":
        raise Conflict(f"alert {alert_id} is already acknowledged by {row.acknowledged_by}")
    if row.state == "resolved":
        raise Conflict(f"alert {alert_id} is resolved")
    changed = connection.execute(
        update(alerts)
        .where(alerts.c.id == alert_id, alerts.c.state == "open")
        .values(state="acknowledged", acknowledged_by=by, acknowledged_at=now)
        .returning(*alerts.c)
    ).first()
    if changed is None:  # resolved or acknowledged by someone else in between
        raise Conflict(f"alert {alert_id} changed while acknowledging it; look again")
    audit.record(
        connection,
        at=now,
        actor=actor,
        action="alert.acknowledge",
        site=row.site,
        target=str(alert_id),
        detail={"by": by, "kind": row.kind},
    )
    return _alert(changed)
