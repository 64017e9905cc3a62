"""The publisher: one MQTT session at a time, the journal drained into it (SPEC §7–§8).

Per session it publishes the retained `{base}/info`, `{base}/lockers/{id}` and — once the gateway
is ready — `{base}/state` online (the will says offline), then drains the journal in seq order to
`{base}/events/{kind}` at QoS 1 with at most `mqtt.inflight` events awaiting their PUBACK (fewer if the
broker's Receive Maximum is lower), handed to paho directly (gateway.mqtt.acks). An event
is marked sent only after its PUBACK; whatever was in flight when a session broke is sent again in
the next one (delivery is at-least-once; consumers de-duplicate by event_id).

`historical` is a delivery attribute (outside the hash). An event goes out with `historical: false`
only when the publisher was connected and caught up — nothing unsent ahead of it, window not full —
when it was picked up; everything found waiting after a (re)connection, everything queued behind a
full window and everything re-published by `events/replay` carries `historical: true`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt

from gateway import __version__
from gateway.config import Settings
from gateway.events import canonical_json, format_ts
from gateway.journal import Journal, StoredEvent
from gateway.mqtt.acks import BrokerRefused, PubackWindow, ReceiveMaximum
from gateway.mqtt.link import LinkError, make_client, parse_url, password, tls_context
from gateway.mqtt.ops import GatewayOps, RequestError
from gateway.mqtt.topics import Topics

log = logging.getLogger("lockergw.mqtt")

MessageHandler = Callable[[aiomqtt.Client, aiomqtt.Message], Awaitable[None]]


class SessionHooks(Protocol):
    """Something that publishes at each connection (after the retained topics) and must know when the
    connection is gone."""

    async def connected(self, client: aiomqtt.Client) -> None: ...

    def disconnected(self) -> None: ...


#: Acknowledged events marked sent per journal transaction, at least (see Publisher._mark_every).
MARK_EVERY = 100

#: How long the goodbye (`state` offline) may take before the connection is simply closed.
GOODBYE_TIMEOUT_S = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def encode(payload: dict[str, Any]) -> bytes:
    """Every payload is canonical JSON (sorted keys, UTF-8), so a consumer can hash what it receives."""
    return canonical_json(payload)


def with_historical(event: StoredEvent, historical: bool) -> bytes:
    """The stored envelope with `historical` added, as `encode` would write it, without decoding it:
    the keys are sorted, so `historical` goes right after the top-level `hash` when the key that follows
    sorts after it (every envelope today); otherwise the envelope is decoded and encoded again."""
    text = event.text
    marker = f'"hash":"{event.hash}"'
    at = text.find(marker)
    if at > 0:
        end = at + len(marker)
        following = _NEXT_KEY.match(text, end)
        if text.startswith("}", end) or (following is not None and following.group(1) > "historical"):
            flag = "true" if historical else "false"
            return f'{text[:end]},"historical":{flag}{text[end:]}'.encode()
    return encode({**json.loads(text), "historical": historical})


_NEXT_KEY = re.compile(r',"([a-z0-9_]*)"')


@dataclass(slots=True)
class _ReplayRange:
    next_seq: int
    to_seq: int


class Publisher:
    """Owns the broker connection. Start `run()` as a task; stop it with `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        ops: GatewayOps,
        *,
        boot_id: str,
        version: str = __version__,
        on_message: MessageHandler | None = None,
        subscriptions: Sequence[str] = (),
        backoff_initial_s: float = 0.25,
        backoff_cap_s: float = 5.0,
        batch: int = 500,
    ) -> None:
        self.settings = settings
        self.topics = Topics.of(settings.mqtt.topic_prefix, settings.gateway.site, settings.gateway.id)
        self.address = parse_url(settings.mqtt.url)
        # Unreadable secrets or TLS files are configuration faults: say so at start-up, not per attempt.
        password(settings.mqtt)
        if self.address.tls:
            tls_context(settings.mqtt)
        self.identifier = f"lockergw-{settings.gateway.site}-{settings.gateway.id}"
        self._journal = journal
        self._ops = ops
        self._boot_id = boot_id
        self._version = version
        self._on_message = on_message
        self._subscriptions = tuple(subscriptions)
        self._backoff_initial = backoff_initial_s
        self._backoff_cap = backoff_cap_s
        self._inflight = settings.mqtt.inflight
        self._batch = max(batch, self._inflight)
        #: Acknowledged events are marked sent in one transaction per this many (and whenever the drain
        #: is idle or the session ends): a mark lost in a crash only means a duplicate (event_id).
        self._mark_every = max(MARK_EVERY, self._inflight)
        self._window = self._inflight  # this session's: mqtt.inflight, or less if the broker allows less
        self._window_logged = False

        self._wake = asyncio.Event()  # new events in the journal, or an acknowledgement arrived
        self._retained_wake = asyncio.Event()
        self._replay_wake = asyncio.Event()
        self._progress = asyncio.Event()  # events were marked sent
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()

        self._ready = False
        self._online_published = False
        self._info_dirty = False
        self._locker_updates: dict[str, dict[str, Any]] = {}
        self._replays: list[_ReplayRange] = []
        self._client: aiomqtt.Client | None = None
        #: Events with a seq above this go out live; None while disconnected or behind.
        self._live_after: int | None = None

        self.published = 0
        self.sessions = 0
        #: Why the broker refuses this gateway's events (health, metrics), None while it takes them.
        self.refusal: str | None = None
        self._session_hooks: list[SessionHooks] = []

    # ---- what the daemon calls ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def notify(self) -> None:
        """New events were journaled: drain them now (never blocks)."""
        self._wake.set()

    def set_ready(self) -> None:
        """The store is open and every device has been opened once: publish `state` online."""
        self._ready = True
        self._retained_wake.set()

    def locker_changed(self, locker_id: str, payload: dict[str, Any]) -> None:
        """Publish the retained `{base}/lockers/{locker_id}` (the latest payload wins while offline)."""
        self._locker_updates[locker_id] = payload
        self._retained_wake.set()

    def state_changed(self) -> None:
        """Re-publish the retained `{base}/state` (the journal started or stopped failing)."""
        self._online_published = False
        self._retained_wake.set()

    def info_changed(self) -> None:
        """Re-publish the retained `{base}/info` (e.g. after the credential set changed)."""
        self._info_dirty = True
        self._retained_wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged every journaled event; False if `timeout` ran out or the
        broker is not connected (then the events wait in the journal for the next session)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._wake.set()
        while self._journal.backlog() > 0:
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.connected:
                return False
            self._progress.clear()
            progress = asyncio.ensure_future(self._progress.wait())
            lost = asyncio.ensure_future(self._disconnected.wait())
            try:
                await asyncio.wait({progress, lost}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                progress.cancel()
                lost.cancel()
        return True

    def replay(self, from_seq: int) -> dict[str, Any]:
        """Queue a re-publication of the journal from `from_seq` (historical: true); returns what it covers."""
        last = self._journal.last_seq
        if from_seq > last + 1:
            raise RequestError(f"from_seq {from_seq} is after the last journaled event (seq {last})")
        first = self._journal.read(from_seq, 1)
        if not first:
            return {"from_seq": from_seq, "to_seq": last, "count": 0}
        start = int(first[0]["seq"])
        self._replays.append(_ReplayRange(start, last))
        self._replay_wake.set()
        data: dict[str, Any] = {"from_seq": start, "to_seq": last, "count": last - start + 1}
        if start > from_seq:
            data["pruned_before"] = start
        return data

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe to `topic_filter` in every session (before anything is published); messages go to on_message."""
        self._subscriptions = (*self._subscriptions, topic_filter)

    def add_session_hooks(self, hooks: SessionHooks) -> None:
        self._session_hooks.append(hooks)

    def stop(self) -> None:
        """Ask `run()` to end: it publishes `state` offline if connected, disconnects cleanly and returns."""
        self._stopping.set()

    # ---- the connection loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve sessions and reconnect with capped exponential back-off until `stop()`."""
        delay = self._backoff_initial
        outage_since: float | None = None
        while not self._stopping.is_set():
            try:
                client = make_client(
                    self.settings.mqtt,
                    identifier=self.identifier,
                    will=aiomqtt.Will(self.topics.state, encode(self._state("offline")), qos=1, retain=True),
                    # The drain keeps its own window (PubackWindow); paho's limit would only add a scan of
                    # every outstanding message on each PUBACK (`_update_inflight`). 0 = no limit in paho.
                    max_inflight=0,
                )
                receive_maximum = ReceiveMaximum(client)
                async with client:
                    self._window = self._session_window(receive_maximum.value)
                    self._log_connected(outage_since)
                    outage_since = None
                    delay = self._backoff_initial
                    await self._session(client)
                if self._stopping.is_set():
                    return
            except BrokerRefused as exc:
                # The broker is there but will not take this gateway's events (an ACL, a quota): they stay
                # in the journal. Someone must fix the broker, so say so plainly, once per episode.
                if self._stopping.is_set():
                    return
                if self.refusal is None:
                    log.error(
                        "%s; the event and those after it stay in the journal (%d waiting) and are sent again "
                        "once the broker accepts them: check its ACL for %s (docs/mosquitto-acl.md)",
                        exc,
                        self._backlog(),
                        self.topics.event("#"),
                    )
                self.refusal = str(exc)
                outage_since = outage_since or time.monotonic()
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    return
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.warning(
                        "broker %s unreachable (%s); retrying, events wait in the journal (%d waiting)",
                        self.address,
                        exc,
                        self._backlog(),
                    )
                else:
                    log.debug("broker %s still unreachable: %s", self.address, exc)
            except Exception as exc:
                if outage_since is None:
                    outage_since = time.monotonic()
                    log.error("MQTT session failed: %s; retrying", exc, exc_info=not isinstance(exc, LinkError))
                else:
                    log.debug("MQTT session failed again: %s", exc)
            finally:
                for hooks in self._session_hooks:
                    hooks.disconnected()
                self._client = None
                self._connected.clear()
                self._disconnected.set()
                self._live_after = None
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                delay = min(delay * 2, self._backoff_cap)

    def _session_window(self, receive_maximum: int) -> int:
        """`mqtt.inflight`, unless the broker's Receive Maximum is lower (MQTT 5: a client must not
        exceed it; Mosquitto announces its `max_inflight_messages`, 20 unless raised)."""
        if receive_maximum >= self._inflight:
            return self._inflight
        level = logging.DEBUG if self._window_logged else logging.INFO  # works, just fewer in flight
        self._window_logged = True
        log.log(
            level,
            "broker %s accepts %d unacknowledged publishes (Receive Maximum), fewer than mqtt.inflight = %d: "
            "keeping %d in flight; raise its max_inflight_messages (docs/mosquitto/lockergw.conf)",
            self.address,
            receive_maximum,
            self._inflight,
            receive_maximum,
        )
        return receive_maximum

    def _log_connected(self, outage_since: float | None) -> None:
        self.sessions += 1
        if outage_since is None:
            log.info("connected to broker %s as %s", self.address, self.identifier)
        else:
            log.info(
                "broker %s reachable again after %.1f s; sending %d waiting events",
                self.address,
                time.monotonic() - outage_since,
                self._backlog(),
            )

    def _backlog(self) -> int:
        try:
            return self._journal.backlog()
        except Exception:  # the count is only for the log line
            return -1

    async def _session(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._live_after = None
        self._online_published = False
        for topic_filter in self._subscriptions:
            await client.subscribe(topic_filter, qos=1)
        await self._publish_all_retained(client)
        for hooks in self._session_hooks:
            await hooks.connected(client)
        self._disconnected.clear()
        self._connected.set()
        tasks = {
            asyncio.create_task(self._drain(client), name="mqtt drain"),
            asyncio.create_task(self._retained(client), name="mqtt retained"),
            asyncio.create_task(self._replayer(client), name="mqtt replay"),
            asyncio.create_task(self._receive(client), name="mqtt receive"),
        }
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, stopping):
                task.cancel()
            await asyncio.gather(*tasks, stopping, return_exceptions=True)
        if stopping in done:
            await self._goodbye(client)
            return
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise aiomqtt.MqttError("session ended")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(
                self.topics.state, encode(self._state("offline")), qos=1, retain=True, timeout=GOODBYE_TIMEOUT_S
            )
        except aiomqtt.MqttError as exc:
            log.debug("could not publish state offline: %s", exc)

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Read incoming messages (requests); also how a broken connection is noticed at once."""
        async for message in client.messages:
            if self._on_message is None:
                continue
            try:
                await self._on_message(client, message)
            except aiomqtt.MqttError:
                raise
            except Exception as exc:
                log.error("request on %s failed: %s", message.topic, exc, exc_info=exc)

    # ---- retained topics ---------------------------------------------------------------------

    def _state(self, state: str) -> dict[str, Any]:
        payload = {"state": state, "boot_id": self._boot_id, "version": self._version, "ts": format_ts(utcnow())}
        if state == "online":
            journal = self._ops.journal_status()
            payload["journal"] = journal.get("status", "ok")
            if "since" in journal:
                payload["journal_failing_since"] = journal["since"]
        return payload

    async def _publish_retained(self, client: aiomqtt.Client, topic: str, payload: dict[str, Any]) -> None:
        await client.publish(topic, encode(payload), qos=1, retain=True)

    async def _publish_all_retained(self, client: aiomqtt.Client) -> None:
        self._info_dirty = False
        self._locker_updates.clear()
        await self._publish_retained(client, self.topics.info, self._ops.info())
        for locker_id, payload in self._ops.locker_states().items():
            await self._publish_retained(client, self.topics.locker(locker_id), payload)
        if self._ready:
            self._online_published = True  # before the await: a state_changed() meanwhile publishes again
            await self._publish_retained(client, self.topics.state, self._state("online"))

    async def _retained(self, client: aiomqtt.Client) -> None:
        while True:
            await self._retained_wake.wait()
            self._retained_wake.clear()
            if self._info_dirty:
                self._info_dirty = False
                await self._publish_retained(client, self.topics.info, self._ops.info())
            while self._locker_updates:
                locker_id = next(iter(self._locker_updates))
                payload = self._locker_updates.pop(locker_id)
                await self._publish_retained(client, self.topics.locker(locker_id), payload)
            if self._ready and not self._online_published:
                self._online_published = True  # before the await: a state_changed() meanwhile publishes again
                await self._publish_retained(client, self.topics.state, self._state("online"))

    # ---- events ------------------------------------------------------------------------------

    async def _publish_event(self, client: aiomqtt.Client, envelope: dict[str, Any], historical: bool) -> None:
        payload = {**envelope, "historical": historical}
        await self._publish_payload(client, str(envelope["kind"]), encode(payload))

    async def _publish_payload(self, client: aiomqtt.Client, kind: str, payload: bytes) -> None:
        await client.publish(self.topics.event(kind), payload, qos=1)
        self.published += 1

    def _mark_sent(self, acked: list[int]) -> None:
        if acked:
            try:
                self._journal.mark_sent(sorted(acked))
            except (sqlite3.Error, OSError) as exc:
                # The journal cannot be written (the daemon reports that fault): the marks are kept and
                # tried again; at worst these events are published once more (event_id de-duplicates).
                log.debug("could not mark %d event(s) sent: %s", len(acked), exc)
                return
            acked.clear()
            self._progress.set()
            # Cleared only once nothing is left behind: an ACL that refuses some kinds still lets others
            # through, and the refused ones must not look delivered (nor log their ERROR every session).
            if self.refusal is not None and self._backlog() == 0:
                log.info("broker %s accepts events again", self.address)
                self.refusal = None

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish unsent events in seq order, at most `inflight` awaiting their PUBACK; mark them sent
        in batches, each only after its PUBACK (and whatever was acknowledged when the session ends)."""
        cursor = 0
        with PubackWindow(client, on_ack=self._acknowledged, on_refused=self._wake.set) as window:
            try:
                while True:
                    self._wake.clear()
                    batch = self._journal.unsent_text(cursor, self._batch)
                    if not batch:
                        # Everything journaled has been handed to the broker: new events go out live.
                        if self._live_after is None:
                            self._live_after = cursor
                        self._mark_sent(window.acked)
                        await self._idle(window, client.timeout)
                        window.raise_if_refused()
                        continue
                    for event in batch:
                        if window.in_flight >= self._window:
                            self._live_after = None  # a backlog is forming behind a full window
                            await window.wait_below(self._window, client.timeout)
                            if len(window.acked) >= self._mark_every:
                                self._mark_sent(window.acked)
                        live = self._live_after is not None and event.seq > self._live_after
                        payload = with_historical(event, historical=not live)
                        window.publish(self.topics.event(event.kind), payload, event.seq)
                        cursor = event.seq
            finally:
                # Acknowledged events are delivered even if this session is ending.
                self._mark_sent(window.acked)

    async def _idle(self, window: PubackWindow, timeout: float) -> None:
        """Wait for new events or a PUBACK; if events are in flight and neither comes within `timeout`,
        the session is dropped (as an aiomqtt publish would time out) and they are sent again."""
        if not window.in_flight:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            raise aiomqtt.MqttError(f"no PUBACK within {timeout:g} s ({window.in_flight} in flight)") from None

    def _acknowledged(self) -> None:
        self.published += 1
        self._wake.set()

    async def _replayer(self, client: aiomqtt.Client) -> None:
        while True:
            await self._replay_wake.wait()
            self._replay_wake.clear()
            while self._replays:
                current = self._replays[0]
                if current.next_seq > current.to_seq:
                    self._replays.pop(0)
                    continue
                limit = min(self._window, current.to_seq - current.next_seq + 1)
                envelopes = self._journal.read(current.next_seq, limit)
                envelopes = [e for e in envelopes if int(e["seq"]) <= current.to_seq]
                if not envelopes:
                    self._replays.pop(0)
                    continue
                await asyncio.gather(*(self._publish_event(client, e, historical=True) for e in envelopes))
                current.next_seq = int(envelopes[-1]["seq"]) + 1
