"""The gateways central knows, with their chain's state and the seq ranges still missing (SPEC §11)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from central.schema import credential_sites, event_chain, gateway_credentials, gateways
from central.services.models import Gateway
from central.services.times import iso

#: A gateway's `missing` list stops after this many ranges (a chain this torn needs a person, not a list).
MAX_MISSING_RANGES = 1000


def list_gateways(connection: Connection, site: str | None = None) -> list[Gateway]:
    query = select(gateways).order_by(gateways.c.site, gateways.c.gateway)
    if site is not None:
        query = query.where(gateways.c.site == site)
    return [
        Gateway(
            site=row.site,
            gateway=row.gateway,
            state=row.state,
            boot_id=row.boot_id,
            version=row.version,
            last_seen=iso(row.last_seen),
            anchor_seq=row.anchor_seq,
            verified_seq=row.verified_seq,
            received_seq=row.received_seq,
            chain=row.chain,
            missing=missing_ranges(
                connection, row.site, row.gateway, row.anchor_seq, row.verified_seq, row.received_seq
            ),
            credentials=sync_state(connection, row.site, row.gateway, row.boot_id),
        )
        for row in connection.execute(query)
    ]


def missing_ranges(
    connection: Connection, site: str, gateway: str, anchor: int | None, verified: int | None, received: int | None
) -> list[tuple[int, int]]:
    """The seqs between the verified prefix and `received` that are not stored, as [from, to] ranges.

    One window query over `event_chain` above the verified prefix: each stored seq next to the next
    stored one; a difference above 1 is a hole. Its cost follows the unverified tail, not the history."""
    if received is None:
        return []
    floor = verified if verified is not None else (anchor - 1 if anchor is not None else 0)
    if floor >= received:
        return []
    stored = (
        select(
            event_chain.c.seq.label("seq"),
            func.lead(event_chain.c.seq).over(order_by=event_chain.c.seq).label("next_seq"),
        )
        .where(event_chain.c.site == site, event_chain.c.gateway == gateway, event_chain.c.seq >= floor)
        .subquery()
    )
    holes = (
        select(stored.c.seq, stored.c.next_seq)
        .where(stored.c.next_seq > stored.c.seq + 1)
        .order_by(stored.c.seq)
        .limit(MAX_MISSING_RANGES)
    )
    return [(row.seq + 1, row.next_seq - 1) for row in connection.execute(holes)]


def sync_state(connection: Connection, site: str, gateway: str, boot_id: str | None) -> str:
    """`in_sync`, `pending (N changes)` or `unknown` (SPEC §11): whether the gateway holds the credential set
    central issues for its site, by the revision it acknowledged and the digest it reported."""
    issued = connection.execute(
        select(credential_sites.c.revision, credential_sites.c.digest).where(credential_sites.c.site == site)
    ).first()
    mine = connection.execute(
        select(gateway_credentials).where(gateway_credentials.c.site == site, gateway_credentials.c.gateway == gateway)
    ).first()
    if issued is None or mine is None or mine.revision is None:
        return "unknown"
    behind = issued.revision - mine.revision
    if behind == 0 and not mine.resync and mine.boot_id == boot_id and mine.gateway_digest == issued.digest:
        return "in_sync"
    return f"pending ({max(behind, 1)} change{'s' if max(behind, 1) != 1 else ''})"
