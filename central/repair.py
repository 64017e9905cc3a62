"""Gap repair (SPEC §11 Gap repair): ask a gateway to re-publish what is missing, and say when it never comes.

A missing range still missing `gap_grace_s` after the seq just above it was stored makes central send a
signed `events/replay {from_seq}`; one request is outstanding per gateway (a row in `replays`), resent
with back-off while the gateway is not known to be offline. A range still missing `repair_timeout_s`
after the first request opens `events.missing`; the range arriving resolves it with the time of repair.
`plan_repair` runs in the verification pass's transaction (the gateway's row is already claimed) and
only decides: the worker publishes the request after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from central.alerts import open_alert, resolve_alerts
from central.schema import event_chain, replays
from central.sql import utc
from central.verify import ChainState, first_missing_range

EVENTS_MISSING = "events.missing"
#: Longest wait between two requests for the same range.
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    site: str
    gateway: str
    from_seq: int


@dataclass(frozen=True, slots=True)
class RepairPolicy:
    gap_grace_s: float
    repair_timeout_s: float

    def backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(MAX_BACKOFF_S, max(1.0, self.gap_grace_s) * 2 ** (attempts - 1)))


def plan_repair(connection: Connection, chain: ChainState, policy: RepairPolicy, at: datetime) -> ReplayRequest | None:
    """What to send for this gateway now (or None); updates `replays` and the `events.missing` alert."""
    site, gateway = chain.site, chain.gateway
    if chain.chain == "broken":
        return None  # verification has stopped at the break; a replay cannot mend it (chain.broken says so)
    where = (replays.c.site == site, replays.c.gateway == gateway)
    pending = connection.execute(select(replays).where(*where)).first()
    above = chain.checked_up_to
    first = first_missing_range(connection, site, gateway, above) if chain.chain == "gap" else None
    if pending is not None and (first is None or first[0] > pending.to_seq):
        connection.execute(delete(replays).where(*where))
        resolve_alerts(
            connection,
            site=site,
            gateway=gateway,
            kind=EVENTS_MISSING,
            at=at,
            resolution=f"seq {pending.from_seq}-{pending.to_seq} repaired",
        )
        pending = None
    if first is None:
        return None
    start, end = first
    if pending is None:
        stored_at = connection.execute(
            select(event_chain.c.stored_at).where(
                event_chain.c.site == site, event_chain.c.gateway == gateway, event_chain.c.seq == end + 1
            )
        ).scalar()
        later = utc(stored_at)
        if later is None or (at - later).total_seconds() < policy.gap_grace_s:
            return None
        connection.execute(
            replays.insert().values(
                site=site,
                gateway=gateway,
                from_seq=start,
                to_seq=end,
                first_sent_at=at,
                sent_at=at,
                attempts=1,
                next_attempt_at=at + policy.backoff(1),
            )
        )
        return ReplayRequest(site, gateway, start)
    first_sent = utc(pending.first_sent_at)
    if first_sent is not None and (at - first_sent).total_seconds() >= policy.repair_timeout_s:
        open_alert(
            connection,
            site=site,
            gateway=gateway,
            kind=EVENTS_MISSING,
            at=at,
            seq=start,
            detail={"from_seq": start, "to_seq": end, "replays_sent": pending.attempts},
        )
    next_attempt = utc(pending.next_attempt_at)
    if chain.state == "offline" or (next_attempt is not None and at < next_attempt):
        return None
    attempts = pending.attempts + 1
    connection.execute(
        update(replays)
        .where(*where)
        .values(
            from_seq=start, to_seq=end, sent_at=at, attempts=attempts, next_attempt_at=at + policy.backoff(attempts)
        )
    )
    return ReplayRequest(site, gateway, start)
