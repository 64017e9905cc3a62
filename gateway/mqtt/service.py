"""`MqttService`: the MQTT side of a running gateway in one `async with` (publisher + requests + retention).

async with MqttService(settings, journal, store, ops, site_key) as mqtt:
    mqtt.set_ready()                 # store open, every device opened once → state online
    ...                              # after each journal.append: mqtt.notify()
    mqtt.locker_changed("A-01", payload)
    await mqtt.flush(timeout=3)      # on stop, after journaling gateway.stopped
# leaving the block publishes state offline and disconnects cleanly
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from gateway import __version__
from gateway.config import Settings
from gateway.journal import Journal
from gateway.mqtt.homeassistant import Discovery
from gateway.mqtt.link import signing_key
from gateway.mqtt.ops import GatewayOps
from gateway.mqtt.publisher import Publisher
from gateway.mqtt.requests import RequestHandler
from gateway.mqtt.signing import RequestVerifier
from gateway.store import Store

log = logging.getLogger("lockergw.mqtt")

PRUNE_INTERVAL_S = 3600.0
STOP_TIMEOUT_S = 1.5


class MqttService:
    """The MQTT side of a gateway. Raises `LinkError` (one line naming the setting) for unusable [mqtt]
    settings: a URL without a host, an unreadable password or signing-key file, bad TLS files."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        store: Store,
        ops: GatewayOps,
        site_key: bytes,
        *,
        boot_id: str | None = None,
        version: str = __version__,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self._journal = journal
        self._prune_interval = prune_interval_s
        key = signing_key(settings.mqtt)
        verifier = RequestVerifier(key) if key is not None else None
        self.requests: RequestHandler
        self.publisher = Publisher(
            settings,
            journal,
            ops,
            boot_id=boot_id if boot_id is not None else str(ops.boot_id),
            version=version,
            on_message=self._on_message,
        )
        self.requests = RequestHandler(
            settings,
            store,
            ops,
            site_key,
            self.publisher,
            verifier=verifier,
            allow_unsigned=settings.mqtt.allow_unsigned_requests,
        )
        self.publisher.subscribe(self.requests.topics.requests)
        self.discovery: Discovery | None = None
        if settings.homeassistant.discovery:
            self.discovery = Discovery(settings, version)
            for topic_filter in self.discovery.subscriptions:
                self.publisher.subscribe(topic_filter)
            self.publisher.add_session_hooks(self.discovery)
        self._tasks: list[asyncio.Task[None]] = []

    async def _on_message(self, client: Any, message: Any) -> None:
        if self.discovery is not None and await self.discovery.on_message(client, message):
            return
        await self.requests.on_message(client, message)

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> MqttService:
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name="mqtt publisher"),
            asyncio.create_task(self._prune_periodically(), name="journal retention"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Publish `state` offline if connected, disconnect cleanly; give up after `timeout`."""
        self.publisher.stop()
        if not self._tasks:
            return
        publisher_task = self._tasks[0]
        if self.publisher.connected and not publisher_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(publisher_task), timeout)
            except TimeoutError:
                log.warning("MQTT did not stop within %.1f s; closing the connection", timeout)
            except Exception as exc:
                log.debug("publisher ended with %s", exc)
        # Not connected: nothing to say goodbye on, and no reason to wait for a connection attempt.
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            # A credential change in hand finishes (or, if the process exits first, rolls back whole).
            await asyncio.wait_for(asyncio.to_thread(self.requests.writer.close), timeout)
        except TimeoutError:
            log.warning("a credential change over MQTT was still being written at stop")

    # ---- what the daemon calls ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.publisher.connected

    @property
    def refusal(self) -> str | None:
        """Why the broker refuses this gateway's events, None while it takes them."""
        return self.publisher.refusal

    def notify(self) -> None:
        self.publisher.notify()

    def set_ready(self) -> None:
        self.publisher.set_ready()

    def locker_changed(self, locker_id: str, payload: dict[str, Any]) -> None:
        self.publisher.locker_changed(locker_id, payload)

    def info_changed(self) -> None:
        self.publisher.info_changed()

    def tag_scanned(self, reader_id: str, uid_hash: str | None, at: str) -> None:
        """A tap's hashed uid for Home Assistant's tag scanner of that reader (when discovery is on)."""
        if self.discovery is not None:
            self.discovery.tag_scanned(reader_id, uid_hash, at)

    def state_changed(self) -> None:
        self.publisher.state_changed()

    async def flush(self, timeout: float) -> bool:
        return await self.publisher.flush(timeout)

    # ---- retention ---------------------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> int:
        g = self.settings.gateway
        deleted = self._journal.prune(
            now or datetime.now(UTC), g.journal_retention_days, g.journal_max_mb * 1024 * 1024
        )
        if deleted:
            log.info("journal retention: %d sent events older than %d days pruned", deleted, g.journal_retention_days)
        return deleted

    async def _prune_periodically(self) -> None:
        while True:
            try:
                self.prune()
            except Exception as exc:
                log.error("journal retention failed: %s", exc, exc_info=exc)
            await asyncio.sleep(self._prune_interval)
