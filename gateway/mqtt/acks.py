"""Publishing journal events straight through paho and counting their PUBACKs (SPEC §8).

aiomqtt's `publish()` costs a task, an `asyncio.Event`, a `wait_for` and two scans of every pending call
per message; at a few thousand events a second that was most of what the drain added to paho itself.
`PubackWindow` hands each event to the aiomqtt client's own paho client (the same connection, the same
socket callbacks on the event loop) and is told of each PUBACK by wrapping paho's `on_publish`: a PUBACK
for a message id it did not publish goes on to aiomqtt's handler, so aiomqtt's own publishes (retained
topics, replies, replays) are unaffected.

An event counts as acknowledged only when its PUBACK has been read and says success; what is still in
flight when the connection breaks is simply never acknowledged, and the journal sends it again in the
next session. A PUBACK with a failure reason code (MQTT 5: 0x80 and above, e.g. 0x87 "Not authorized"
from an ACL that does not let this gateway publish its events) is a refusal: the event stays unsent,
and `BrokerRefused` ends the session so that nothing behind it is marked sent either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho


class BrokerRefused(aiomqtt.MqttError):
    """The broker answered an event's PUBACK with a failure reason code; the event was not delivered."""


class PubackWindow:
    """Events in flight on one session's client: `publish()` them in order, `wait_below()` for room,
    collect the acknowledged seqs from `acked`. Install with `with PubackWindow(client) as window:`."""

    def __init__(
        self,
        client: aiomqtt.Client,
        on_ack: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._aiomqtt = client
        # aiomqtt has no public way to reach its paho client; gateway.mqtt.link uses it too.
        self._paho: paho.Client = client._client
        self._previous: Any = None
        self._on_ack = on_ack
        self._on_refused = on_refused
        #: Why the broker refused an event (the first refusal of this session), None while it refuses none.
        self.refusal: str | None = None
        self._in_flight: dict[int, int] = {}  # paho message id → journal seq
        self._room = asyncio.Event()
        #: seqs whose PUBACK arrived, in arrival order; the caller takes them (and clears the list).
        self.acked: list[int] = []

    def __enter__(self) -> PubackWindow:
        self._previous = self._paho.on_publish
        self._paho.on_publish = self._on_publish
        return self

    def __exit__(self, *_: object) -> None:
        self._paho.on_publish = self._previous

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def publish(self, topic: str, payload: bytes, seq: int) -> None:
        """Queue one event at QoS 1 (paho writes it when the event loop next runs its socket callback)."""
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        # No PUBACK can be read before this line: paho reads only in the event loop's socket callback.
        self._in_flight[info.mid] = seq

    async def wait_below(self, limit: int, timeout: float) -> None:
        """Return once fewer than `limit` events are in flight; MqttError if no PUBACK came for `timeout` s
        (as an aiomqtt publish would time out: the session is then dropped and the events sent again)."""
        while len(self._in_flight) >= limit:
            self.raise_if_refused()
            self._room.clear()
            try:
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for in Python 3.11
                    await self._room.wait()
            except TimeoutError:
                raise aiomqtt.MqttError(f"no PUBACK within {timeout:g} s ({self.in_flight} in flight)") from None
        self.raise_if_refused()

    def raise_if_refused(self) -> None:
        """BrokerRefused if the broker has refused an event of this session."""
        if self.refusal is not None:
            raise BrokerRefused(self.refusal)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:  # pragma: no branch
        seq = self._in_flight.pop(mid, None)
        if seq is None:
            self._previous(client, userdata, mid, reason, properties)
            return
        if getattr(reason, "is_failure", False):
            if self.refusal is None:
                self.refusal = f"the broker refused event seq {seq}: {reason} (reason code {reason.value:#04x})"
            self._room.set()
            if self._on_refused is not None:
                self._on_refused()
            return
        self.acked.append(seq)
        self._room.set()
        if self._on_ack is not None:
            self._on_ack()


class ReceiveMaximum:
    """The broker's MQTT 5 Receive Maximum, read from its CONNACK: how many QoS 1 publishes it accepts
    unacknowledged (65,535 when it announces none). paho does not keep to it; the drain does. Install
    on a client before connecting it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.value = 65535
        paho_client: paho.Client = client._client
        previous: Any = paho_client.on_connect

        def on_connect(connected: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
            announced = getattr(properties, "ReceiveMaximum", None)
            if isinstance(announced, int) and announced > 0:
                self.value = announced
            previous(connected, userdata, flags, reason, properties)

        paho_client.on_connect = on_connect
