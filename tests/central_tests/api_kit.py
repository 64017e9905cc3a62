"""What the API tests need: a central context around a real database, tokens of each role, and rows put in
the tables the way the ingest worker stores them (envelopes built and hashed with gateway.events)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from central.config import CentralSettings
from central.context import CentralContext, GatewayTimeout
from central.schema import alerts, event_chain, events, gateways, lockers
from central.tokens import Role, create_token
from gateway.events import GENESIS_HASH, SCHEMA, event_hash, format_ts, uuid7

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@dataclass
class FakeGateways:
    """GatewayRequests that answers from a script: `answer` (a response payload) or `fault`."""

    answer: dict[str, Any] | None = None
    fault: Exception | None = None
    sent: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        self.sent.append((site, gateway, command, body))
        if self.fault is not None:
            raise self.fault
        if self.answer is None:
            raise GatewayTimeout(f"gateway {gateway} of site {site} did not answer {command} within {timeout_s:g} s")
        return {"transaction": "t", **self.answer}


@dataclass
class FakeStatus:
    mqtt_connected: bool = True


def context_for(engine: Engine, requests: Any = None, *, connected: bool = True) -> CentralContext:
    settings = CentralSettings(central={"database": str(engine.url)})  # type: ignore[arg-type]
    return CentralContext(settings, engine, requests or FakeGateways(), FakeStatus(connected))


def tokens(engine: Engine) -> dict[str, str]:
    """A live token of each role, by role name."""
    made: dict[str, str] = {}
    with engine.begin() as connection:
        for role in Role:
            _, made[role.name] = create_token(connection, f"test {role.name}", role, T0)
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def envelopes(
    site: str, gateway: str, records: Iterable[dict[str, Any]], *, start: datetime = T0
) -> list[dict[str, Any]]:
    """A correctly chained run of envelopes from seq 1, one second apart (each record may set `ts`)."""
    chain: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq, record in enumerate(records, start=1):
        at = record.pop("ts", start + timedelta(seconds=seq))
        envelope = {
            "schema": SCHEMA,
            "event_id": uuid7(),
            "site": site,
            "gateway": gateway,
            "seq": seq,
            "boot_id": "boot-1",
            "ts": format_ts(at),
            "reader": None,
            "locker": None,
            "credential": None,
            "reason": None,
            "override": False,
            "historical": False,
            "prev_hash": prev,
            **record,
        }
        envelope["hash"] = event_hash(envelope)
        prev = envelope["hash"]
        chain.append(envelope)
    return chain


def card(credential: str, holder: str) -> dict[str, Any]:
    return {"id": credential, "holder": holder, "role": "user", "uid_hash": "9f" * 32}


def store_events(engine: Engine, stored: Iterable[dict[str, Any]]) -> None:
    """Rows as ingest writes them: the envelope as text, its indexed columns, and the chain row."""
    now = datetime.now(UTC)
    event_rows, chain_rows = [], []
    for e in stored:
        at = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
        credential = e.get("credential") or {}
        event_rows.append(
            {
                "site": e["site"], "gateway": e["gateway"], "seq": e["seq"], "ts": at, "kind": e["kind"],
                "reader": e.get("reader"), "locker": e.get("locker"), "credential_id": credential.get("id"),
                "holder": credential.get("holder"), "reason": e.get("reason"), "override": e.get("override"),
                "boot_id": e["boot_id"], "event_id": e["event_id"], "hash": e["hash"],
                "envelope": json.dumps(e), "received_at": now,
            }
        )  # fmt: skip
        chain_rows.append(
            {
                "site": e["site"], "gateway": e["gateway"], "seq": e["seq"], "hash": e["hash"],
                "prev_hash": e["prev_hash"], "hash_ok": True, "ts": at, "stored_at": now,
            }
        )  # fmt: skip
    with engine.begin() as connection:
        if event_rows:
            connection.execute(insert(events), event_rows)
            connection.execute(insert(event_chain), chain_rows)


def store_gateway(engine: Engine, site: str, gateway: str, *, state: str = "online", **columns: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(gateways).values(site=site, gateway=gateway, state=state, last_seen=T0, boot_id="boot-1", **columns)
        )


def store_locker(engine: Engine, site: str, gateway: str, locker: str, **columns: Any) -> None:
    values = {"door": "closed", "service": "in_service", "occupied": False, **columns}
    with engine.begin() as connection:
        connection.execute(
            insert(lockers).values(site=site, gateway=gateway, locker=locker, ts=T0, updated_at=T0, **values)
        )


def store_alert(engine: Engine, site: str, gateway: str, kind: str, **columns: Any) -> int:
    values = {"opened_at": T0, "detail": json.dumps({"locker": "A-01"}), **columns}
    with engine.begin() as connection:
        alert_id: int = connection.execute(
            insert(alerts).values(site=site, gateway=gateway, kind=kind, **values).returning(alerts.c.id)
        ).scalar_one()
    return alert_id
