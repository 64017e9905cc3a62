"""Chain verification (SPEC §11 Verification): per gateway, how far its hash chain is proven.

`anchor_seq` is the lowest stored seq, `verified_seq` the highest seq up to which every seq is stored,
every hash recomputes (`event_chain.hash_ok`) and every `prev_hash` links to its predecessor's hash,
`received_seq` the highest stored. Each pass starts from `verified_seq` and reads only rows above it, so
its cost is linear in new events. The gateway's row is claimed with `FOR UPDATE SKIP LOCKED` on
PostgreSQL: a gateway being verified by one worker is skipped by the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, tuple_, update

from central.alerts import open_alert
from central.schema import event_chain, gateways

#: Rows read per query while walking the chain.
WALK = 5000
CHAIN_BROKEN = "chain.broken"


@dataclass(frozen=True, slots=True)
class ChainState:
    site: str
    gateway: str
    state: str  # the gateway's online | offline | unknown
    anchor_seq: int | None
    verified_seq: int | None
    received_seq: int | None
    chain: str  # ok | gap | broken
    broken_seq: int | None

    @property
    def checked_up_to(self) -> int | None:
        """The seq below which nothing is missing: verified_seq, or just below the anchor."""
        if self.verified_seq is not None:
            return self.verified_seq
        return None if self.anchor_seq is None else self.anchor_seq - 1


def _same_gateway(site: str, gateway: str) -> Any:
    return and_(event_chain.c.site == site, event_chain.c.gateway == gateway)


def gateways_to_check(connection: Connection) -> list[tuple[str, str]]:
    """Gateways with work: a chain not ok, or rows stored above `received_seq` or below `anchor_seq`."""
    newer = exists().where(
        event_chain.c.site == gateways.c.site,
        event_chain.c.gateway == gateways.c.gateway,
        or_(
            gateways.c.received_seq.is_(None),
            event_chain.c.seq > gateways.c.received_seq,
            event_chain.c.seq < gateways.c.anchor_seq,
        ),
    )
    rows = connection.execute(
        select(gateways.c.site, gateways.c.gateway).where(or_(gateways.c.chain != "ok", newer))
    ).all()
    return [(row.site, row.gateway) for row in rows]


def claim_gateways(connection: Connection, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """PostgreSQL: lock the candidates' rows for this transaction, skipping those another worker holds;
    in key order. The caller then verifies the claimed ones in the same transaction."""
    claimed: list[tuple[str, str]] = []
    ordered = sorted(candidates)
    for start in range(0, len(ordered), WALK):
        part = ordered[start : start + WALK]
        rows = connection.execute(
            select(gateways.c.site, gateways.c.gateway)
            .where(tuple_(gateways.c.site, gateways.c.gateway).in_(part))
            .order_by(gateways.c.site, gateways.c.gateway)
            .with_for_update(skip_locked=True)
        )
        claimed.extend((row.site, row.gateway) for row in rows)
    return claimed


def verify_gateway(connection: Connection, site: str, gateway: str, at: datetime) -> ChainState | None:
    """Advance the gateway's verification over newly stored rows; None when another worker holds it."""
    query = select(gateways).where(gateways.c.site == site, gateways.c.gateway == gateway)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = connection.execute(query).first()
    if row is None:
        return None
    bounds = connection.execute(
        select(func.min(event_chain.c.seq), func.max(event_chain.c.seq)).where(_same_gateway(site, gateway))
    ).one()
    anchor, received = bounds[0], bounds[1]
    verified_seq, verified_hash, broken_seq = row.verified_seq, row.verified_hash, row.broken_seq
    broken_reason = ""
    if anchor is not None and (row.anchor_seq is None or anchor < row.anchor_seq):
        verified_seq, verified_hash, broken_seq = None, None, None  # an earlier anchor: prove from it again
    if anchor is not None and broken_seq is None:
        verified_seq, verified_hash, broken_seq, broken_reason = _walk(
            connection, site, gateway, anchor, verified_seq, verified_hash
        )
    if anchor is None:
        chain = "ok"
    elif broken_seq is not None:
        chain = "broken"
    else:
        chain = "ok" if verified_seq == received else "gap"
    values: dict[str, Any] = {
        "anchor_seq": anchor,
        "verified_seq": verified_seq,
        "verified_hash": verified_hash,
        "received_seq": received,
        "chain": chain,
        "broken_seq": broken_seq,
    }
    if received is not None and received != row.received_seq:
        values["last_seen"] = at
    connection.execute(update(gateways).where(gateways.c.site == site, gateways.c.gateway == gateway).values(**values))
    if broken_seq is not None and broken_seq != row.broken_seq:
        open_alert(
            connection,
            site=site,
            gateway=gateway,
            kind=CHAIN_BROKEN,
            at=at,
            seq=broken_seq,
            detail={"seq": broken_seq, "reason": broken_reason or "hash chain broken"},
        )
    return ChainState(site, gateway, row.state, anchor, verified_seq, received, chain, broken_seq)


def _walk(
    connection: Connection,
    site: str,
    gateway: str,
    anchor: int,
    verified_seq: int | None,
    verified_hash: str | None,
) -> tuple[int | None, str | None, int | None, str]:
    """Follow the chain from the last verified row; stop at a gap or a break.
    Returns (verified_seq, verified_hash, broken_seq, why it broke)."""
    expected = anchor if verified_seq is None else verified_seq + 1
    while True:
        rows = connection.execute(
            select(event_chain.c.seq, event_chain.c.hash, event_chain.c.prev_hash, event_chain.c.hash_ok)
            .where(_same_gateway(site, gateway), event_chain.c.seq >= expected)
            .order_by(event_chain.c.seq)
            .limit(WALK)
        ).all()
        for row in rows:
            if row.seq != expected:
                return verified_seq, verified_hash, None, ""
            if not row.hash_ok:
                return verified_seq, verified_hash, row.seq, f"seq {row.seq}: hash does not match its content"
            if verified_hash is not None and row.prev_hash != verified_hash:
                reason = f"seq {row.seq}: prev_hash does not link to seq {row.seq - 1}'s hash"
                return verified_seq, verified_hash, row.seq, reason
            verified_seq, verified_hash, expected = row.seq, row.hash, row.seq + 1
        if len(rows) < WALK:
            return verified_seq, verified_hash, None, ""


def first_missing_range(connection: Connection, site: str, gateway: str, above: int | None) -> tuple[int, int] | None:
    """The lowest missing range above `above` (the verified seq, so `above + 1` is missing when anything
    is stored beyond it): one index lookup, whatever the history."""
    if above is None:
        return None
    after = connection.execute(
        select(func.min(event_chain.c.seq)).where(_same_gateway(site, gateway), event_chain.c.seq > above)
    ).scalar()
    if after is None or after == above + 1:
        return None
    return (above + 1, int(after) - 1)


def missing_ranges(
    connection: Connection, site: str, gateway: str, above: int | None, limit: int = 100
) -> list[tuple[int, int]]:
    """The seq ranges `[first, last]` missing above `above` (the gateway's verified seq), lowest first."""
    if above is None:
        return []
    previous = func.lag(event_chain.c.seq).over(order_by=event_chain.c.seq)
    stored = (
        select(event_chain.c.seq.label("seq"), previous.label("previous"))
        .where(_same_gateway(site, gateway), event_chain.c.seq > above)
        .subquery()
    )
    rows = connection.execute(
        select(stored.c.previous, stored.c.seq)
        .where(
            or_(
                and_(stored.c.previous.is_(None), stored.c.seq > above + 1),
                stored.c.seq - stored.c.previous > 1,
            )
        )
        .order_by(stored.c.seq)
        .limit(limit)
    ).all()
    return [((above if row.previous is None else row.previous) + 1, row.seq - 1) for row in rows]
