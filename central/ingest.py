"""Ingest (SPEC §11): events as published, stored once per `(site, gateway, seq)`, in batches.

`parse_event` checks one message (topic against payload, envelope shape) without touching the database;
`store_events` writes a batch in the caller's transaction: `event_chain` first (the idempotency key,
`ON CONFLICT DO NOTHING … RETURNING` tells which rows are new), then `events` for the new ones. A copy
of a stored seq with the same hash is a duplicate (dropped); with another hash it is a conflict (kept in
`event_conflicts`, alert `chain.conflict`). Rows are written in key order so that two workers storing
overlapping batches on PostgreSQL wait for each other rather than deadlock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, tuple_

from central import metrics
from central.alerts import alerts_from_events, open_alert
from central.registry import parse_ts
from central.schema import event_chain, event_conflicts, events, gateways
from central.sql import storable, upsert
from central.topics import GatewayTopic
from gateway.events import event_hash

#: Rows per INSERT statement (keeps within SQLite's and PostgreSQL's bound-parameter limits).
CHUNK = 500
CHAIN_CONFLICT = "chain.conflict"

Key = tuple[str, str, int]


class Refused(ValueError):
    """A message that is not stored; `reason` is the metric label, the message one line for the log."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """One event message that passed the checks, with the columns it will be stored under."""

    site: str
    gateway: str
    seq: int
    hash: str
    prev_hash: str
    hash_ok: bool
    ts: datetime
    kind: str
    envelope: str
    columns: dict[str, Any]

    @property
    def key(self) -> Key:
        return (self.site, self.gateway, self.seq)


@dataclass(slots=True)
class StoreOutcome:
    stored: list[IncomingEvent] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[IncomingEvent] = field(default_factory=list)

    @property
    def gateways(self) -> set[tuple[str, str]]:
        return {(e.site, e.gateway) for e in self.stored}


def parse_event(where: GatewayTopic, payload: bytes) -> IncomingEvent:
    """The event in `payload`, which arrived on `where`; raises Refused (not_json, not_an_event,
    rejected_topic_mismatch)."""
    try:
        text_ = payload.decode("utf-8")
        envelope = json.loads(text_)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused("not_json", f"not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise Refused("not_an_event", "not an event envelope: the payload is not a JSON object")
    faults = [name for name in ("site", "gateway", "hash", "prev_hash", "kind", "ts") if not _text(envelope, name)]
    seq = envelope.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        faults.append("seq")
    ts = parse_ts(envelope.get("ts"))
    if ts is None and "ts" not in faults:
        faults.append("ts")
    if faults:
        raise Refused("not_an_event", f"not an event envelope: missing or invalid {', '.join(faults)}")
    assert isinstance(seq, int) and ts is not None
    if (envelope["site"], envelope["gateway"]) != (where.site, where.gateway):
        raise Refused(
            "rejected_topic_mismatch",
            f"event of {envelope['site']}/{envelope['gateway']} seq {seq} published on "
            f"{where.site}/{where.gateway}'s topic: refused",
        )
    credential = envelope.get("credential")
    credential = credential if isinstance(credential, dict) else {}
    override = envelope.get("override")
    columns = {
        "reader": storable(envelope.get("reader")),
        "locker": storable(envelope.get("locker")),
        "credential_id": storable(credential.get("id")),
        "holder": storable(credential.get("holder")),
        "reason": storable(envelope.get("reason")),
        "override": override if isinstance(override, bool) else None,
        "boot_id": storable(envelope.get("boot_id")),
        "event_id": storable(envelope.get("event_id")),
    }
    return IncomingEvent(
        site=where.site,
        gateway=where.gateway,
        seq=seq,
        hash=str(envelope["hash"]),
        prev_hash=str(envelope["prev_hash"]),
        hash_ok=_hash_recomputes(envelope),
        ts=ts,
        kind=str(envelope["kind"]),
        envelope=text_,
        columns=columns,
    )


def _hash_recomputes(envelope: dict[str, Any]) -> bool:
    try:
        return bool(event_hash(envelope) == envelope["hash"])
    except UnicodeEncodeError:  # an unpaired surrogate (\ud800) in the JSON: no gateway hashed this
        return False


def _text(envelope: dict[str, Any], name: str) -> bool:
    value = envelope.get(name)
    return isinstance(value, str) and bool(value)


def _chunks(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]


def store_events(connection: Connection, batch: list[IncomingEvent], at: datetime) -> StoreOutcome:
    """Store a batch in the caller's transaction; see the module docstring."""
    outcome = StoreOutcome()
    firsts: dict[Key, IncomingEvent] = {}
    copies: list[IncomingEvent] = []
    for event in batch:
        if event.key in firsts:
            copies.append(event)
        else:
            firsts[event.key] = event
    if not firsts:
        return outcome
    ordered = [firsts[key] for key in sorted(firsts)]
    known = sorted({(e.site, e.gateway) for e in ordered})
    connection.execute(
        upsert(connection, gateways).values([{"site": s, "gateway": g} for s, g in known]).on_conflict_do_nothing()
    )
    inserted: set[Key] = set()
    chain_rows = [
        {
            "site": e.site,
            "gateway": e.gateway,
            "seq": e.seq,
            "hash": storable(e.hash),
            "prev_hash": storable(e.prev_hash),
            "hash_ok": e.hash_ok,
            "ts": e.ts,
            "stored_at": at,
        }
        for e in ordered
    ]
    for chunk in _chunks(chain_rows):
        statement = (
            upsert(connection, event_chain)
            .values(chunk)
            .on_conflict_do_nothing()
            .returning(event_chain.c.site, event_chain.c.gateway, event_chain.c.seq)
        )
        inserted.update((row.site, row.gateway, int(row.seq)) for row in connection.execute(statement))
    outcome.stored = [e for e in ordered if e.key in inserted]
    event_rows = [
        {
            "site": e.site,
            "gateway": e.gateway,
            "seq": e.seq,
            "ts": e.ts,
            "kind": storable(e.kind),
            "hash": storable(e.hash),
            "envelope": e.envelope,
            "received_at": at,
            **e.columns,
        }
        for e in outcome.stored
    ]
    for chunk in _chunks(event_rows):
        connection.execute(insert(events), chunk)
    # Copies of seqs stored before this batch, and second copies inside it: duplicates or conflicts.
    others = [e for e in ordered if e.key not in inserted] + copies
    stored_hashes = _stored_hashes(connection, sorted({e.key for e in others} - inserted))
    stored_hashes.update({e.key: storable(e.hash) for e in outcome.stored})
    for event in sorted(others, key=lambda e: e.key):
        if stored_hashes.get(event.key) == storable(event.hash):
            outcome.duplicates += 1
        elif _keep_conflict(connection, event, at):
            outcome.conflicts.append(event)
        else:
            outcome.duplicates += 1  # this conflicting copy was already kept
    alerts_from_events(
        connection,
        ({"site": e.site, "gateway": e.gateway, "seq": e.seq, "kind": e.kind, **e.columns} for e in outcome.stored),
        at,
    )
    _count(outcome, at)
    return outcome


def _stored_hashes(connection: Connection, keys: list[Key]) -> dict[Key, str | None]:
    found: dict[Key, str | None] = {}
    for start in range(0, len(keys), CHUNK):
        part = keys[start : start + CHUNK]
        rows = connection.execute(
            select(event_chain.c.site, event_chain.c.gateway, event_chain.c.seq, event_chain.c.hash).where(
                tuple_(event_chain.c.site, event_chain.c.gateway, event_chain.c.seq).in_(part)
            )
        )
        found.update({(r.site, r.gateway, int(r.seq)): r.hash for r in rows})
    return found


def _keep_conflict(connection: Connection, event: IncomingEvent, at: datetime) -> bool:
    """Keep a conflicting copy (once per distinct hash) and open `chain.conflict` for its seq."""
    kept = connection.execute(
        upsert(connection, event_conflicts)
        .values(
            site=event.site,
            gateway=event.gateway,
            seq=event.seq,
            hash=storable(event.hash),
            envelope=event.envelope,
            received_at=at,
        )
        .on_conflict_do_nothing()
        .returning(event_conflicts.c.id)
    ).first()
    if kept is None:
        return False
    open_alert(
        connection,
        site=event.site,
        gateway=event.gateway,
        kind=CHAIN_CONFLICT,
        at=at,
        subject=str(event.seq),
        seq=event.seq,
        detail={"seq": event.seq, "hash": storable(event.hash)},
    )
    return True


def _count(outcome: StoreOutcome, at: datetime) -> None:
    for event in outcome.stored:
        metrics.EVENTS_INGESTED.labels(site=event.site).inc()
        metrics.LAG_SECONDS.observe(max(0.0, (at - event.ts).total_seconds()))
    if outcome.duplicates:
        metrics.DUPLICATES.inc(outcome.duplicates)
    if outcome.conflicts:
        metrics.CONFLICTS.inc(len(outcome.conflicts))
