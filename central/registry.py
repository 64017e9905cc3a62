"""The gateway registry (SPEC §11 Gateways): `state`, `info` and `lockers/{id}` as idempotent upserts, and
the `gateway.offline` alert of a gateway offline for longer than `gateway_offline_s`.

Every worker receives these retained topics and applies them; applying one twice changes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, exists, select

from central.alerts import open_alert, resolve_alerts
from central.schema import alerts, gateways, lockers
from central.sql import storable, upsert

GATEWAY_OFFLINE = "gateway.offline"
STATES = ("online", "offline")
#: The `lockers` columns a `lockers/{locker}` message sets.
LOCKER_VALUES = ("door", "service", "occupied", "ts", "updated_at")


class RegistryError(ValueError):
    """A state, info or locker payload central cannot use; the message is one line."""


def parse_ts(value: Any) -> datetime | None:
    """An envelope or payload `ts` (ISO 8601, `Z`) as an aware datetime; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def apply_state(connection: Connection, site: str, gateway: str, payload: dict[str, Any], at: datetime) -> None:
    state = payload.get("state")
    if state not in STATES:
        raise RegistryError(f"state: must be one of {', '.join(STATES)} (got {state!r})")
    changed_at = parse_ts(payload.get("ts")) or at
    insert = upsert(connection, gateways).values(
        site=site,
        gateway=gateway,
        state=state,
        boot_id=storable(payload.get("boot_id")),
        version=storable(payload.get("version")),
        last_seen=at,
        state_changed_at=changed_at,
    )
    excluded = insert.excluded
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[gateways.c.site, gateways.c.gateway],
            set_={
                "state": excluded.state,
                "boot_id": excluded.boot_id,
                "version": excluded.version,
                "last_seen": excluded.last_seen,
                "state_changed_at": case(
                    (gateways.c.state == excluded.state, gateways.c.state_changed_at), else_=excluded.state_changed_at
                ),
            },
        )
    )
    if state == "online":
        resolve_alerts(
            connection, site=site, gateway=gateway, kind=GATEWAY_OFFLINE, at=at, resolution="gateway back online"
        )


def apply_info(
    connection: Connection, site: str, gateway: str, payload: dict[str, Any], text_: str, at: datetime
) -> None:
    credentials = payload.get("credentials")
    credentials = credentials if isinstance(credentials, dict) else {}
    values = {
        "info": text_,
        "version": storable(payload.get("version")),
        "credentials_version": storable(credentials.get("version")),
        "credentials_digest": storable(credentials.get("digest")),
        "last_seen": at,
    }
    insert = upsert(connection, gateways).values(site=site, gateway=gateway, **values)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[gateways.c.site, gateways.c.gateway], set_={k: insert.excluded[k] for k in values}
        )
    )


def locker_row(site: str, gateway: str, locker: str, payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The `lockers` row a `lockers/{locker}` message says; raises RegistryError for a payload central
    cannot use."""
    door = payload.get("door", "unknown")
    if door not in ("open", "closed", "unknown"):
        raise RegistryError(f"door: must be open, closed or unknown (got {door!r})")
    occupied = payload.get("occupied")
    return {
        "site": site,
        "gateway": gateway,
        "locker": storable(locker),
        "door": door,
        "service": storable(payload.get("service")) or "in_service",
        "occupied": occupied if isinstance(occupied, bool) else None,
        "ts": parse_ts(payload.get("ts")),
        "updated_at": at,
    }


def write_lockers(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert `lockers` rows in one statement. Rows of one key collapse to the last (what applying them one
    by one would leave), and they are written in key order: two workers writing the same lockers wait for
    each other instead of deadlocking."""
    last = {(row["site"], row["gateway"], row["locker"]): row for row in rows}
    if not last:
        return
    insert = upsert(connection, lockers).values([last[key] for key in sorted(last)])
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[lockers.c.site, lockers.c.gateway, lockers.c.locker],
            set_={k: insert.excluded[k] for k in LOCKER_VALUES},
        )
    )


def raise_offline_alerts(connection: Connection, at: datetime, offline_s: float) -> int:
    """Open `gateway.offline` for every gateway offline for longer than `offline_s` (idempotent)."""
    alerted = exists().where(
        alerts.c.site == gateways.c.site,
        alerts.c.gateway == gateways.c.gateway,
        alerts.c.kind == GATEWAY_OFFLINE,
        alerts.c.state != "resolved",
    )
    rows = connection.execute(
        select(gateways.c.site, gateways.c.gateway, gateways.c.state_changed_at).where(
            gateways.c.state == "offline",
            gateways.c.state_changed_at < at - timedelta(seconds=offline_s),
            ~alerted,
        )
    ).all()
    opened = 0
    for row in rows:
        since = row.state_changed_at
        detail = {"offline_since": since.isoformat() if since else None}
        opened += open_alert(connection, site=row.site, gateway=row.gateway, kind=GATEWAY_OFFLINE, at=at, detail=detail)
    return opened


def payload_object(payload: bytes) -> tuple[dict[str, Any], str]:
    """A retained payload as a JSON object and its text; RegistryError when it is neither."""
    try:
        text_ = payload.decode("utf-8")
        value = json.loads(text_)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RegistryError("not a JSON object")
    return value, text_
