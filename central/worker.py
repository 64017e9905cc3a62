"""The MQTT worker of one `lockergw central` process: the stream in, the periodic checks, the requests out.

    async with Worker(settings, engine) as worker:
        ...                       # worker.mqtt_connected, await worker.request(...)
        await worker.stop()       # graceful: store and acknowledge what is held (see `stop`)

Received messages are stored in batches (`central.batch`, one transaction, committed within `batch_ms`)
and acknowledged only after the commit. After a batch, and every second, the gateways with new rows are
verified and their gaps planned (`central.verify`, `central.repair`); every second the offline gateways,
closed doors, overdue keys and the alert outbox are looked at; credentials are pushed to the gateways
(`central.credential_push`); every few seconds a heartbeat is written and, on
PostgreSQL, a dead worker's session taken over (`central.takeover`). Requests to gateways (a remote opening,
gap repair's `events/replay`, credential pushes) go out through `self.requests`, the process's one
`central.requests.GatewayRequestLink` (its own MQTT connection, started and stopped with the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from central import metrics
from central.alerts import publish_pending, refresh_open_gauge, resolve_closed_doors
from central.batch import DatabaseUnavailable, apply_batch
from central.config import CentralSettings
from central.credential_push import CredentialPusher
from central.database import is_sqlite
from central.mqtt_session import Delivery, MqttSession
from central.registry import raise_offline_alerts
from central.repair import RepairPolicy, ReplayRequest, plan_repair
from central.requests import GatewayRequestLink
from central.schema import gateways
from central.services.credentials import raise_overdue_alerts
from central.sql import now
from central.takeover import (
    client_id_of,
    drain_session,
    heartbeat,
    mark_stopped,
    other_live_workers,
    take_over,
)
from central.topics import subscriptions
from central.verify import claim_gateways, gateways_to_check, verify_gateway

log = logging.getLogger(__name__)

#: How often the chain pass and the housekeeping pass run when nothing wakes them sooner.
TICK_S = 1.0
#: Most messages in one batch (the broker sends at most Receive Maximum unacknowledged ones anyway).
MAX_BATCH = 2000
MAX_DB_RETRY_S = 30.0
# Timeouts use `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11 wait_for can swallow a
# cancellation when the awaited thing completes at the same moment, and a stop would then never finish.


class Worker:
    """Implements `central.context.WorkerStatus` and `central.context.GatewayRequests`."""

    def __init__(self, settings: CentralSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.prefix = settings.mqtt.topic_prefix
        self.shared, self.own = subscriptions(self.prefix, settings.mqtt.share_group)
        self.policy = RepairPolicy(settings.central.gap_grace_s, settings.central.repair_timeout_s)
        self.started_at = now()
        self._chain_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: asyncio.Task[None] | None = None
        self._held: list[Delivery] = []
        self._committing = False
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self.session = self.open_session(client_id_of(settings.central.id), [self.shared, *self.own])
        self.requests = GatewayRequestLink(settings)
        self.credentials = CredentialPusher(engine, self, settings.central.id)
        self._overdue_checked_at: datetime | None = None

    def open_session(self, client_id: str, filters: list[str] | None = None) -> MqttSession:
        return MqttSession(
            self.settings.mqtt,
            client_id,
            session_expiry_s=self.settings.central.session_expiry_s,
            receive_maximum=self.settings.central.receive_maximum,
            subscriptions=filters or [],
            on_connected=(lambda up: metrics.MQTT_CONNECTED.set(1 if up else 0)) if filters else None,
        )

    async def __aenter__(self) -> Worker:
        await asyncio.to_thread(self._beat)
        await self.requests.__aenter__()
        await self.session.__aenter__()
        self._batches = asyncio.create_task(self._batch_loop(), name="central batches")
        self._tasks = [
            asyncio.create_task(self._chain_loop(), name="central chain"),
            asyncio.create_task(self._housekeeping_loop(), name="central housekeeping"),
            asyncio.create_task(self._heartbeat_loop(), name="central heartbeat"),
            asyncio.create_task(self.credentials.run(), name="central credentials"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- status and requests ---------------------------------------------------------------------

    @property
    def mqtt_connected(self) -> bool:
        return self.session.connected

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """`central.context.GatewayRequests`: see `central.requests.GatewayRequestLink.request`."""
        return await self.requests.request(site, gateway, command, body, timeout_s=timeout_s)

    # ---- the stream in ---------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        """Collect a batch for up to `batch_ms` and commit it. What is collected is held in `self._held`,
        so a stop that cancels this loop mid-collection still stores it."""
        loop = asyncio.get_running_loop()
        queue = self.session.deliveries
        while not self._stopping:
            self._held.append(await queue.get())
            deadline = loop.time() + self.settings.central.batch_ms / 1000
            while len(self._held) < MAX_BATCH:
                if not queue.empty():
                    self._held.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        self._held.append(await queue.get())
                except TimeoutError:
                    break
            await self._commit_held()

    async def _commit_held(self) -> None:
        batch, self._held = self._held, []
        self._committing = True
        try:
            await self.commit(self.session, batch)
        finally:
            self._committing = False

    async def commit(self, session: MqttSession, batch: list[Delivery]) -> None:
        """Store a batch (retrying while the database is unreachable), then acknowledge it."""
        delay = 1.0
        while True:
            try:
                result = await asyncio.to_thread(apply_batch, self.engine, self.prefix, batch)
                break
            except DatabaseUnavailable as exc:
                log.error("database unavailable, %d messages held unacknowledged: %s", len(batch), exc)
                if self._stop_requested.is_set():
                    return  # unacknowledged: the broker redelivers them when this session resumes
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop_requested.wait()
                delay = min(delay * 2, MAX_DB_RETRY_S)
        session.ack(batch)
        if result.gateways:
            self._chain_wake.set()

    # ---- verification, repair, alerts -------------------------------------------------------------

    async def _chain_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._chain_wake.wait()
            self._chain_wake.clear()
            requests = await self._guarded(self.chain_pass)
            for request in requests or []:
                await self.requests.replay(request.site, request.gateway, request.from_seq)

    def chain_pass(self) -> list[ReplayRequest]:
        """Verify every gateway with new rows, and plan their repairs.

        On PostgreSQL the pass claims its gateways up front (`FOR UPDATE SKIP LOCKED`, one transaction):
        a second worker's pass at the same moment skips them instead of verifying them again right after,
        so the workers split the chain work instead of each doing all of it. SQLite (one worker) keeps one
        transaction per gateway."""
        at = now()
        requests: list[ReplayRequest] = []
        with self.engine.connect() as connection:
            candidates = gateways_to_check(connection)
        if candidates and not is_sqlite(self.engine):
            with self.engine.begin() as connection:
                for site, gateway in claim_gateways(connection, candidates):
                    self._verify_and_plan(connection, site, gateway, at, requests)
        else:
            for site, gateway in candidates:
                with self.engine.begin() as connection:
                    self._verify_and_plan(connection, site, gateway, at, requests)
        with self.engine.connect() as connection:
            gaps = connection.execute(select(func.count()).where(gateways.c.chain == "gap")).scalar_one()
        metrics.GAPS_OPEN.set(gaps)
        return requests

    def _verify_and_plan(
        self, connection: Connection, site: str, gateway: str, at: datetime, requests: list[ReplayRequest]
    ) -> None:
        state = verify_gateway(connection, site, gateway, at)
        if state is None:
            return
        request = plan_repair(connection, state, self.policy, at)
        if request is not None:
            requests.append(request)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self._guarded(self.housekeeping_pass)

    def housekeeping_pass(self) -> None:
        at = now()
        with self.engine.begin() as connection:
            raise_offline_alerts(connection, at, self.settings.central.gateway_offline_s)
            resolve_closed_doors(connection, at)
            self._check_overdue_keys(connection, at)
            refresh_open_gauge(connection)
        publish_pending(self.engine, self.session.publish_and_wait, self.prefix)

    def _check_overdue_keys(self, connection: Connection, at: datetime) -> None:
        """`key.overdue` every `overdue_check_s` (daily by default; at start too). Idempotent, so several
        workers doing it at once open each alert once."""
        last = self._overdue_checked_at
        if last is not None and (at - last).total_seconds() < self.settings.central.overdue_check_s:
            return
        self._overdue_checked_at = at
        raise_overdue_alerts(connection, at)

    async def _guarded(self, work: Callable[[], Any]) -> Any:
        """Run a blocking pass in a thread; a database fault is one log line, and the next tick tries again."""
        try:
            return await asyncio.to_thread(work)
        except SQLAlchemyError as exc:
            log.error("%s failed: %s", getattr(work, "__name__", "pass"), str(exc).splitlines()[0])
            return None

    # ---- heartbeats, take-over, stop --------------------------------------------------------------

    def _beat(self, at: datetime | None = None) -> None:
        with self.engine.begin() as connection:
            heartbeat(connection, self.settings.central.id, self.started_at, at or now())

    async def _heartbeat_loop(self) -> None:
        interval = min(5.0, self.settings.central.takeover_s / 3)
        while True:
            await asyncio.sleep(interval)
            await self._guarded(self._beat)
            if is_sqlite(self.engine):
                continue  # one worker only: there is nobody to take over
            try:
                await take_over(
                    self.engine,
                    self.settings.central.id,
                    self.settings.central.takeover_s,
                    self.open_session,
                    [self.shared, *self.own],
                    self.commit,
                )
            except SQLAlchemyError as exc:
                log.error("take-over failed: %s", str(exc).splitlines()[0])

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): store and acknowledge everything held, then disconnect keeping the
        session (a straggler is redelivered when it resumes).

        While another worker is alive, this one first leaves the shared subscription and drains until
        quiet, and records `stopped_at`: the others carry the stream. The last worker standing keeps its
        subscription instead, so the broker queues the estate's events in its session for its restart —
        or for a worker started later, which takes the session over (leaving would drop them)."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_requested.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._batches is not None:
            if not self._committing:
                self._batches.cancel()
            await asyncio.gather(self._batches, return_exceptions=True)
        if self._held:
            await self._commit_held()
        leave = bool(await self._guarded(self._others_alive))
        if self.session.connected and leave:
            drained = await drain_session(self.session, [self.shared], lambda batch: self.commit(self.session, batch))
            log.info("stopping: %d messages drained after leaving the shared subscription", drained)
        elif self.session.connected:
            queue = self.session.deliveries
            held = [queue.get_nowait() for _ in range(queue.qsize())]
            await self.commit(self.session, held)
            log.info("stopping as the last worker: the broker keeps this session's share of events for its return")
        if leave:
            await self._guarded(self._mark_stopped)
        await self.session.close(end_session=False)
        await self.requests.__aexit__(None, None, None)
        metrics.MQTT_CONNECTED.set(0)

    def _others_alive(self) -> int:
        with self.engine.connect() as connection:
            return other_live_workers(connection, self.settings.central.id, self.settings.central.takeover_s, now())

    def _mark_stopped(self) -> None:
        with self.engine.begin() as connection:
            mark_stopped(connection, self.settings.central.id, now())
