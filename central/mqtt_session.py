"""One MQTT 5 session of central, with manual acknowledgement: paho-mqtt 2 bridged to asyncio.

aiomqtt does not expose manual acknowledgement, so this is paho directly (`manual_ack=True`): a message
is acknowledged with `ack()` only after the batch holding it has committed, and a worker killed before
that gets it redelivered when its session resumes. The client id is stable and the session persistent
(`clean_start=False`, Session Expiry Interval), the Receive Maximum large. paho's network loop runs on its
own thread (`loop_start`), reconnecting with back-off; messages reach the asyncio side through
`call_soon_threadsafe`. Each connection has a number: a message is acknowledged only on the connection
it arrived on (after a reconnect the broker sends it again, and storing is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from central.config import CentralMqttSection
from gateway.mqtt.link import parse_url, password, tls_context

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
MAX_INFLIGHT_OUT = 100


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as received: what to store, and what to acknowledge once it is stored."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int


class MqttSession:
    """`async with MqttSession(...) as session:` connects (in the background, retrying) and disconnects.

    `deliveries` is the queue of received messages; `ack(batch)` acknowledges them."""

    def __init__(
        self,
        section: CentralMqttSection,
        client_id: str,
        *,
        session_expiry_s: int,
        receive_maximum: int,
        subscriptions: Sequence[str] = (),
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
        self._section = section
        self.client_id = client_id
        self._subscriptions = list(subscriptions)
        self._on_connected = on_connected
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._loop = asyncio.get_running_loop()
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._connection = 0
        self._connected = threading.Event()
        self._connected_async = asyncio.Event()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._closed = False
        self._subscribe_mid: int | None = None
        self._lock = threading.Lock()
        self.client = self._make_client()

    def _make_client(self) -> Client:
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if self._section.username:
            client.username_pw_set(self._section.username, password(self._section))
        if parse_url(self._section.url).tls:
            client.tls_set_context(tls_context(self._section))
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.max_inflight_messages_set(MAX_INFLIGHT_OUT)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_unsubscribe = self._handle_unsubscribe
        client.on_subscribe = self._handle_subscribe
        return client

    async def __aenter__(self) -> MqttSession:
        address = parse_url(self._section.url)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        self.client.connect_async(
            address.host, address.port, keepalive=self._section.keepalive, clean_start=False, properties=properties
        )
        self.client.loop_start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(end_session=False)

    # ---- paho's thread ---------------------------------------------------------------------------

    def _handle_connect(
        self, client: Client, _userdata: Any, flags: ConnectFlags, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT %s: connection refused: %s", self.client_id, reason)
            return
        with self._lock:
            self._connection += 1
        log.info("MQTT %s: connected (session %s)", self.client_id, "resumed" if flags.session_present else "new")
        self._connected.set()
        if self._subscriptions:  # ready once the broker has acknowledged the subscriptions
            _result, self._subscribe_mid = client.subscribe(
                [(topic, SubscribeOptions(qos=1)) for topic in self._subscriptions]
            )
        else:
            self._loop.call_soon_threadsafe(self._connected_async.set)
        if self._on_connected is not None:
            self._loop.call_soon_threadsafe(self._on_connected, True)

    def _handle_disconnect(
        self,
        _client: Client,
        _userdata: Any,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.warning("MQTT %s: disconnected (%s)", self.client_id, reason)
        self._connected.clear()
        self._loop.call_soon_threadsafe(self._connected_async.clear)
        if self._on_connected is not None:
            self._loop.call_soon_threadsafe(self._on_connected, False)

    def _handle_message(self, _client: Client, _userdata: Any, message: MQTTMessage) -> None:
        delivery = Delivery(message.topic, bytes(message.payload), message.mid, message.qos, self._connection)
        self._loop.call_soon_threadsafe(self.deliveries.put_nowait, delivery)

    def _handle_subscribe(self, _client: Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            log.error("MQTT %s: subscription refused by the broker: %s", self.client_id, ", ".join(refused))
        if mid == self._subscribe_mid:
            log.info("MQTT %s: subscribed", self.client_id)
            self._loop.call_soon_threadsafe(self._connected_async.set)

    def _handle_unsubscribe(self, _client: Client, _userdata: Any, mid: int, _reasons: Any, _p: Any) -> None:
        with self._lock:
            future = self._acks.get(mid)
        if future is not None:
            self._loop.call_soon_threadsafe(_settle, future)

    # ---- the asyncio side ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Until connected and, for a session that subscribes, until the broker has acknowledged that."""
        await self._connected_async.wait()

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Acknowledge what arrived on the current connection; returns how many were acknowledged."""
        done = 0
        for delivery in deliveries:
            if delivery.qos > 0 and delivery.connection == self._connection and self.connected:
                self.client.ack(delivery.mid, delivery.qos)
                done += 1
        return done

    async def unsubscribe(self, topics: Sequence[str], timeout_s: float = 10.0) -> bool:
        """Unsubscribe and wait for the broker's UNSUBACK; False when it did not come in time."""
        for topic in topics:
            if topic in self._subscriptions:
                self._subscriptions.remove(topic)
        if not self.connected:
            return False
        future: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            _result, mid = self.client.unsubscribe(list(topics))
            if mid is None:
                return False
            self._acks[mid] = future
        try:
            async with asyncio.timeout(timeout_s):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            self._acks.pop(mid, None)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos)

    def publish_and_wait(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> bool:
        """Publish with QoS 1 and block until the broker acknowledges it (for a worker thread)."""
        if not self.connected:
            return False
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    async def close(self, *, end_session: bool) -> None:
        """Disconnect; with `end_session` the broker discards the session (Session Expiry Interval 0)."""
        if self._closed:
            return
        self._closed = True
        properties = None
        if end_session:
            properties = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0
        self.client.disconnect(properties=properties)
        await asyncio.to_thread(self.client.loop_stop)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
