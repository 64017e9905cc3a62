"""Carrying central's credentials to the gateways (SPEC §11): the outbox, pushed in order; snapshots when
a gateway cannot be trusted to hold what central last gave it.

Per gateway of a site central issues for, `gateway_credentials` holds the site revision the gateway has
acknowledged with `ok` (a change counts as applied only then), the boot it did so in, and the version and
digest the gateway reported. Every `TICK_S` each worker looks at the online gateways that lag and claims
each one through the database (a lease: a conditional UPDATE, so two workers never push to one gateway
at once and nothing is held open across the network). A claimed gateway then receives:

* a full `credentials/snapshot` (paged) when it never acknowledged anything, restarted (a new `boot_id`),
  was marked for resync, or its set drifted: its `info` shows a newer local version whose digest is not
  the one central computes for the site, or an `ok` answered with a digest other than central's for that
  revision (a local change at the controller). Central is authoritative for a site it manages: the
  snapshot overwrites local changes, and each drift leaves a `credentials.drift` line in the audit log;
* otherwise the outbox's changes after its revision, in revision order, each one request.

State lives in the database, so a restarted or different worker carries on where another stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from central.context import GatewayRequests, GatewayUnavailable
from central.schema import credential_changes, credential_sites, gateway_credentials, gateways
from central.services import audit, issuance
from central.services.credentials import _insert_ignoring_duplicates, site_set
from central.services.times import utc

log = logging.getLogger(__name__)

TICK_S = 0.25
LEASE_S = 60.0
RETRY_S = 5.0
REQUEST_TIMEOUT_S = 10.0
#: Changes sent to one gateway per claim (then the next tick carries on).
CHANGES_PER_CLAIM = 200
#: JSON bytes of credentials per snapshot page: well under a gateway's `max_request_bytes` (default 4 MiB).
PAGE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Change:
    revision: int
    command: str
    body: dict[str, Any]
    digest: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    digest: str
    pages: list[list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Plan:
    site: str
    gateway: str
    boot_id: str | None
    work: Snapshot | list[Change]


def pages_of(items: list[dict[str, Any]], limit: int = PAGE_BYTES) -> list[list[dict[str, Any]]]:
    """Items in pages of at most `limit` JSON bytes (at least one page, possibly empty)."""
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in items:
        length = len(json.dumps(item, ensure_ascii=False).encode()) + 1
        if pages[-1] and size + length > limit:
            pages.append([])
            size = 0
        pages[-1].append(item)
        size += length
    return pages


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class CredentialPusher:
    """`await CredentialPusher(engine, requests, worker_id).run()` until cancelled; `push_once()` for tests."""

    def __init__(self, engine: Engine, requests: GatewayRequests, worker_id: str) -> None:
        self.engine = engine
        self.requests = requests
        self.worker_id = worker_id
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look again now (after a change made in this process)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.push_once()
            except SQLAlchemyError as exc:
                log.error("credential push: %s", str(exc).splitlines()[0])
            self._wake.clear()
            try:
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def push_once(self) -> int:
        """One pass over the gateways that lag; how many were pushed to."""
        plans = await asyncio.to_thread(self._plans, datetime.now(UTC))
        if plans:
            await asyncio.gather(*(self._carry_out(plan) for plan in plans))
        return len(plans)

    # ---- planning (in the database) ---------------------------------------------------------------

    def _plans(self, now: datetime) -> list[Plan]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(gateways.c.site, gateways.c.gateway, gateway_credentials.c.site.label("known"))
                .join(credential_sites, credential_sites.c.site == gateways.c.site)
                .outerjoin(
                    gateway_credentials,
                    and_(
                        gateway_credentials.c.site == gateways.c.site,
                        gateway_credentials.c.gateway == gateways.c.gateway,
                    ),
                )
                .where(gateways.c.state == "online", self._may_lag())
            ).all()
        new = [row for row in rows if row.known is None]
        if new:
            with self.engine.begin() as connection:
                for row in new:
                    _insert_ignoring_duplicates(
                        connection, gateway_credentials, {"site": row.site, "gateway": row.gateway}
                    )
        plans = []
        for row in rows:
            with self.engine.connect() as connection:
                due = self._due(connection, row.site, row.gateway, now) is not None
            if not due:
                continue
            with self.engine.begin() as connection:  # the lease first, then a fresh look under it
                plan = self._plan(connection, row.site, row.gateway, now)
            if plan is not None:
                plans.append(plan)
        return plans

    @staticmethod
    def _may_lag() -> Any:
        """Gateways that may need a push (one query for the whole estate each tick; `_due` decides)."""
        mine = gateway_credentials.c
        return or_(
            mine.site.is_(None),
            mine.revision.is_(None),
            mine.revision < credential_sites.c.revision,
            mine.resync.is_(True),
            mine.boot_id.is_distinct_from(gateways.c.boot_id),
            mine.gateway_digest.is_distinct_from(credential_sites.c.digest),
            gateways.c.credentials_digest.is_distinct_from(credential_sites.c.digest),
        )

    def _due(self, connection: Connection, site: str, gateway: str, now: datetime) -> tuple[Any, ...] | None:
        """(gateway row, site row, sync row, drift or None, snapshot?) when this gateway needs a push now."""
        g = connection.execute(select(gateways).where(gateways.c.site == site, gateways.c.gateway == gateway)).one()
        s = connection.execute(select(credential_sites).where(credential_sites.c.site == site)).one()
        mine = connection.execute(
            select(gateway_credentials).where(
                gateway_credentials.c.site == site, gateway_credentials.c.gateway == gateway
            )
        ).one()
        if g.state != "online" or (mine.next_attempt_at is not None and utc(mine.next_attempt_at) > now):
            return None
        drift = self._drift(g, s, mine)
        snapshot = drift is not None or mine.revision is None or mine.resync or mine.boot_id != g.boot_id
        if not snapshot and mine.revision >= s.revision:
            return None
        return g, s, mine, drift, snapshot

    def _plan(self, connection: Connection, site: str, gateway: str, now: datetime) -> Plan | None:
        """Under this worker's lease: what to send (None when another worker holds the gateway or did it)."""
        if not self._claim(connection, site, gateway, now):
            return None
        due = self._due(connection, site, gateway, now)
        if due is None:
            self._unclaim(connection, site, gateway)
            return None
        g, s, mine, drift, snapshot = due
        if drift is not None:
            audit.record(
                connection, at=now, actor="central", action="credentials.drift", site=site, target=gateway, detail=drift
            )
            log.warning("gateway %s of site %s: %s; a snapshot follows", gateway, site, drift["why"])
            connection.execute(
                update(gateway_credentials)
                .where(gateway_credentials.c.site == site, gateway_credentials.c.gateway == gateway)
                .values(resync=True)
            )
        if not snapshot:
            changes = [
                Change(row.revision, row.command, json.loads(row.body), row.digest)
                for row in connection.execute(
                    select(credential_changes)
                    .where(credential_changes.c.site == site, credential_changes.c.revision > mine.revision)
                    .order_by(credential_changes.c.revision)
                    .limit(CHANGES_PER_CLAIM)
                )
            ]
            if changes and changes[0].revision == mine.revision + 1:
                return Plan(site, gateway, g.boot_id, changes)
        items = [issuance.upsert_item(c) for c in sorted(site_set(connection, site).values(), key=lambda c: c.id)]
        return Plan(site, gateway, g.boot_id, Snapshot(s.revision, s.digest, pages_of(items, PAGE_BYTES)))

    @staticmethod
    def _drift(g: Any, s: Any, mine: Any) -> dict[str, Any] | None:
        """Why this gateway's set is no longer what central gave it, or None."""
        if mine.revision is None or mine.resync or mine.boot_id != g.boot_id:
            return None  # a snapshot follows anyway
        if mine.revision == s.revision and mine.gateway_digest is not None and mine.gateway_digest != s.digest:
            return {"why": "its digest differs from central's", "gateway_digest": mine.gateway_digest}
        local = _int(g.credentials_version)
        if (
            local is not None
            and mine.gateway_version is not None
            and local > mine.gateway_version
            and g.credentials_digest != s.digest
        ):
            return {
                "why": f"changed locally (its version {local} after central's {mine.gateway_version})",
                "gateway_version": local,
                "gateway_digest": g.credentials_digest,
            }
        return None

    def _claim(self, connection: Connection, site: str, gateway: str, now: datetime) -> bool:
        """Lease this gateway's push to this worker; False when another worker holds it."""
        result = connection.execute(
            update(gateway_credentials)
            .where(
                gateway_credentials.c.site == site,
                gateway_credentials.c.gateway == gateway,
                or_(
                    gateway_credentials.c.claimed_until.is_(None),
                    gateway_credentials.c.claimed_until < now,
                    gateway_credentials.c.claimed_by == self.worker_id,
                ),
            )
            .values(claimed_by=self.worker_id, claimed_until=now + timedelta(seconds=LEASE_S))
        )
        return result.rowcount == 1

    # ---- carrying out (over MQTT) -----------------------------------------------------------------

    async def _carry_out(self, plan: Plan) -> None:
        try:
            if isinstance(plan.work, Snapshot):
                await self._snapshot(plan, plan.work)
            else:
                for change in plan.work:
                    if not await self._change(plan, change):
                        break
        except (GatewayUnavailable, ValueError) as exc:
            log.warning("credentials for gateway %s of site %s: %s", plan.gateway, plan.site, exc)
            await asyncio.to_thread(self._record, plan, {"last_error": str(exc)}, retry=True)
        finally:
            await asyncio.to_thread(self._release, plan)

    async def _change(self, plan: Plan, change: Change) -> bool:
        response = await self.requests.request(
            plan.site, plan.gateway, change.command, change.body, timeout_s=REQUEST_TIMEOUT_S
        )
        answered = response.get("data")
        data: dict[str, Any] = answered if isinstance(answered, dict) else {}
        if response.get("status") != "ok":
            # The gateway's set is not what central thinks (a local change, a lost store): start again whole.
            error = str(response.get("error") or "refused")
            log.warning(
                "gateway %s of site %s refused revision %d: %s", plan.gateway, plan.site, change.revision, error
            )
            await asyncio.to_thread(self._record, plan, {"resync": True, "last_error": error})
            return False
        digest = data.get("digest")
        await asyncio.to_thread(
            self._record,
            plan,
            {
                "revision": change.revision,
                "boot_id": plan.boot_id,
                "gateway_version": _int(data.get("version")),
                "gateway_digest": digest if isinstance(digest, str) else None,
                "resync": digest != change.digest,
                "last_error": None if digest == change.digest else "its digest differs from central's after a change",
            },
        )
        return digest == change.digest

    async def _snapshot(self, plan: Plan, snapshot: Snapshot) -> None:
        version = f"central-{snapshot.revision}"
        data: dict[str, Any] = {}
        for number, page in enumerate(snapshot.pages, start=1):
            body = {
                "version": version,
                "page": number,
                "pages": len(snapshot.pages),
                "credentials": page,
                "by": "central",
            }
            response = await self.requests.request(
                plan.site, plan.gateway, "credentials/snapshot", body, timeout_s=REQUEST_TIMEOUT_S
            )
            if response.get("status") != "ok":
                error = str(response.get("error") or "refused")
                log.error("gateway %s of site %s refused a snapshot: %s", plan.gateway, plan.site, error)
                await asyncio.to_thread(self._record, plan, {"last_error": error}, retry=True)
                return
            data = response["data"] if isinstance(response.get("data"), dict) else {}
        digest = data.get("digest")
        same = digest == snapshot.digest
        if not same:
            log.error("gateway %s of site %s: digest after a snapshot differs from central's", plan.gateway, plan.site)
        await asyncio.to_thread(
            self._record,
            plan,
            {
                "revision": snapshot.revision,
                "boot_id": plan.boot_id,
                "gateway_version": _int(data.get("version")),
                "gateway_digest": digest if isinstance(digest, str) else None,
                "resync": False,
                "last_error": None if same else "its digest differs from central's after a snapshot",
                "synced_at": datetime.now(UTC),
            },
            retry=not same,
        )

    def _record(self, plan: Plan, values: dict[str, Any], *, retry: bool = False) -> None:
        at = datetime.now(UTC)
        values = {**values, "next_attempt_at": at + timedelta(seconds=RETRY_S) if retry else None}
        with self.engine.begin() as connection:
            connection.execute(
                update(gateway_credentials)
                .where(gateway_credentials.c.site == plan.site, gateway_credentials.c.gateway == plan.gateway)
                .values(**values)
            )

    def _release(self, plan: Plan) -> None:
        with self.engine.begin() as connection:
            self._unclaim(connection, plan.site, plan.gateway)

    def _unclaim(self, connection: Connection, site: str, gateway: str) -> None:
        connection.execute(
            update(gateway_credentials)
            .where(
                gateway_credentials.c.site == site,
                gateway_credentials.c.gateway == gateway,
                gateway_credentials.c.claimed_by == self.worker_id,
            )
            .values(claimed_by=None, claimed_until=None)
        )
