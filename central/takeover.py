"""Workers' heartbeats and taking over a dead worker's MQTT session (SPEC §11 "No event lost when a worker dies").

Mosquitto never hands a dead member's unacknowledged or queued messages to another member of a shared
subscription: they wait in that member's session. So each worker records a heartbeat; when one's heartbeat
is older than `takeover_s` and it did not stop gracefully, one live worker claims it (its `workers` row,
locked `FOR UPDATE SKIP LOCKED`, so two never do it at once), connects with its client id and
`clean_start=False`, unsubscribes that session from everything (else the broker keeps assigning it every
other new message), stores and acknowledges what arrives until the session is quiet, and ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from central.mqtt_session import Delivery, MqttSession
from central.schema import workers
from central.sql import now, upsert

log = logging.getLogger(__name__)

#: A drained session is quiet when nothing has arrived for this long.
QUIET_S = 1.0
CONNECT_TIMEOUT_S = 10.0


def client_id_of(worker_id: str) -> str:
    """The MQTT client id of a worker: stable across restarts, so its session is resumed."""
    return f"lockergw-central-{worker_id}"


def heartbeat(connection: Connection, worker_id: str, started_at: datetime, at: datetime) -> None:
    """Record that this worker is alive (and, on its first beat, that it is running again)."""
    values = {
        "client_id": client_id_of(worker_id),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": started_at,
        "heartbeat_at": at,
        "stopped_at": None,
        "taken_over_by": None,
        "taken_over_at": None,
    }
    insert = upsert(connection, workers).values(id=worker_id, **values)
    connection.execute(
        insert.on_conflict_do_update(index_elements=[workers.c.id], set_={k: insert.excluded[k] for k in values})
    )


def mark_stopped(connection: Connection, worker_id: str, at: datetime) -> None:
    connection.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=at, heartbeat_at=at))


def other_live_workers(connection: Connection, me: str, takeover_s: float, at: datetime) -> int:
    """Workers other than `me` with a fresh heartbeat that have not stopped."""
    return int(
        connection.execute(
            select(func.count()).where(
                workers.c.id != me,
                workers.c.stopped_at.is_(None),
                workers.c.heartbeat_at >= at - timedelta(seconds=takeover_s),
            )
        ).scalar_one()
    )


def claim_dead_worker(connection: Connection, me: str, takeover_s: float, at: datetime) -> Any:
    """A worker that is neither alive nor stopped nor taken over, locked for this transaction; or None."""
    query = (
        select(workers.c.id, workers.c.client_id)
        .where(
            workers.c.id != me,
            workers.c.stopped_at.is_(None),
            workers.c.taken_over_by.is_(None),
            workers.c.heartbeat_at < at - timedelta(seconds=takeover_s),
        )
        .order_by(workers.c.heartbeat_at)
        .limit(1)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return connection.execute(query).first()


def record_takeover(connection: Connection, dead: str, me: str, at: datetime) -> None:
    connection.execute(
        update(workers).where(workers.c.id == dead).values(taken_over_by=me, taken_over_at=at, stopped_at=at)
    )


async def drain_session(
    session: MqttSession, filters: Sequence[str], commit: Callable[[list[Delivery]], Awaitable[None]]
) -> int:
    """Unsubscribe `filters`, then commit (and acknowledge) what arrives until the session is quiet."""
    await session.unsubscribe(filters)
    drained = 0
    while True:
        batch: list[Delivery] = []
        try:
            async with asyncio.timeout(QUIET_S):
                batch.append(await session.deliveries.get())
        except TimeoutError:
            return drained
        while not session.deliveries.empty():
            batch.append(session.deliveries.get_nowait())
        await commit(batch)
        drained += len(batch)


async def take_over(
    engine: Engine,
    me: str,
    takeover_s: float,
    open_session: Callable[[str], MqttSession],
    filters: Sequence[str],
    commit: Callable[[MqttSession, list[Delivery]], Awaitable[None]],
) -> str | None:
    """Take over one dead worker's session if there is one; returns its id."""
    connection = await asyncio.to_thread(engine.connect)
    try:
        transaction = connection.begin()
        dead = await asyncio.to_thread(claim_dead_worker, connection, me, takeover_s, now())
        if dead is None:
            transaction.rollback()
            return None
        log.warning("worker %s is silent for more than %.0f s: taking over its MQTT session", dead.id, takeover_s)
        session = open_session(dead.client_id)
        async with session:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await session.wait_connected()
            except TimeoutError:
                log.warning("taking over %s: the broker did not accept the connection; will try again", dead.id)
                transaction.rollback()
                return None
            drained = await drain_session(session, filters, lambda batch: commit(session, batch))
            await session.close(end_session=True)
        await asyncio.to_thread(record_takeover, connection, dead.id, me, now())
        await asyncio.to_thread(transaction.commit)
        log.warning("took over worker %s: %d messages stored from its session, session ended", dead.id, drained)
        return str(dead.id)
    finally:
        await asyncio.to_thread(connection.close)
