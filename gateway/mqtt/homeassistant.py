"""Home Assistant MQTT discovery (optional `[homeassistant] discovery = true`).

Ids follow Zigbee2MQTT's conventions: config topics `{prefix}/{component}/{node_id}/{object_id}/config`
with the gateway as node (`lockergw_{site}_{gateway}`, as Z2M uses the device's IEEE address) and the
property as object id (`A-01_door`, `A-01_state`, `bank-a_tag`); `unique_id` is
`{node_id}_{object_id}_lockergw` (Z2M: `{ieee}_{object_id}_zigbee2mqtt`) and device identifiers are
`lockergw_{site}_{gateway}[_{locker}]` (Z2M: `zigbee2mqtt_{ieee}`).

- each locker is a device (via the gateway's device) with a `binary_sensor` for its door and an enum
  `sensor` for its state (`free`, `occupied`, `out_of_service`), both read from the retained
  `{base}/lockers/{id}`;
- each reader is a `tag` scanner on `{base}/readers/{id}/tag`, whose payload carries the tap's
  `uid_hash` only — never a card number;
- every entity's availability is `{base}/state` (online/offline, the gateway's will).

Discovery is published at each connection and again whenever Home Assistant announces itself online
on `{prefix}/status`. Config topics of this gateway that the broker still holds but that no longer
describe a configured locker or reader are cleared (an empty retained payload removes the entity).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiomqtt

from gateway import __version__
from gateway.config import Settings
from gateway.mqtt.topics import Topics

log = logging.getLogger("lockergw.mqtt")

#: What Home Assistant accepts in a node id or object id.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
LOCKER_STATES = ["free", "occupied", "out_of_service"]


def safe_id(text: str) -> str:
    return _UNSAFE.sub("_", text)


def tag_topic(topics: Topics, reader_id: str) -> str:
    return f"{topics.base}/readers/{reader_id}/tag"


def node_id(settings: Settings) -> str:
    """The gateway's node id in discovery topics, ids and device identifiers."""
    return f"lockergw_{safe_id(settings.gateway.site)}_{safe_id(settings.gateway.id)}"


def discovery_messages(settings: Settings, version: str = __version__) -> dict[str, dict[str, Any]]:
    """Config topic → payload for every entity of this gateway (pure)."""
    g = settings.gateway
    prefix = settings.homeassistant.prefix
    topics = Topics.of(settings.mqtt.topic_prefix, g.site, g.id)
    node = node_id(settings)
    gateway_device = {
        "identifiers": [node],
        "name": f"Lockers {g.site} {g.id}",
        "manufacturer": "lockergw",
        "model": "Locker gateway",
        "sw_version": version,
    }
    availability = [
        {
            "topic": topics.state,
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    messages: dict[str, dict[str, Any]] = {}

    def add(component: str, object_id: str, payload: dict[str, Any]) -> None:
        messages[f"{prefix}/{component}/{node}/{object_id}/config"] = payload

    for locker in settings.lockers:
        lid = safe_id(locker.id)
        device = {
            "identifiers": [f"{node}_{lid}"],
            "name": f"Locker {locker.id}",
            "manufacturer": "lockergw",
            "model": f"{locker.mode} locker" if locker.board else "keyed locker",
            "via_device": node,
        }
        if locker.section:
            device["suggested_area"] = locker.section
        state_topic = topics.locker(locker.id)
        common = {"state_topic": state_topic, "availability": availability, "device": device}
        add(
            "binary_sensor",
            f"{lid}_door",
            {
                **common,
                "name": "Door",
                "unique_id": f"{node}_{lid}_door_lockergw",
                "object_id": f"{node}_{lid}_door",
                "device_class": "door",
                "value_template": "{{ {'open': 'ON', 'closed': 'OFF'}.get(value_json.door, 'None') }}",
                "payload_on": "ON",
                "payload_off": "OFF",
            },
        )
        add(
            "sensor",
            f"{lid}_state",
            {
                **common,
                "name": "State",
                "unique_id": f"{node}_{lid}_state_lockergw",
                "object_id": f"{node}_{lid}_state",
                "device_class": "enum",
                "options": LOCKER_STATES,
                "value_template": (
                    "{{ 'out_of_service' if value_json.service == 'out_of_service' "
                    "else ('occupied' if value_json.occupied else 'free') }}"
                ),
                "json_attributes_topic": state_topic,
                "icon": "mdi:locker",
            },
        )
    for reader in settings.readers:
        rid = safe_id(reader.id)
        add(
            "tag",
            f"{rid}_tag",
            {
                "topic": tag_topic(topics, reader.id),
                "value_template": "{{ value_json.uid_hash }}",
                "device": gateway_device,
            },
        )
    return messages


class Discovery:
    """Publishes discovery on connection and on Home Assistant's birth message; clears stale configs;
    sends each tap's hashed uid to the reader's tag topic (live only: not sent while disconnected)."""

    def __init__(self, settings: Settings, version: str = __version__) -> None:
        self.settings = settings
        self.prefix = settings.homeassistant.prefix
        self.topics = Topics.of(settings.mqtt.topic_prefix, settings.gateway.site, settings.gateway.id)
        self.messages = discovery_messages(settings, version)
        self.node = node_id(settings)
        self.status_topic = f"{self.prefix}/status"
        #: Every config topic this gateway may have published, configured now or not.
        self.own_configs = f"{self.prefix}/+/{self.node}/+/config"
        self._client: aiomqtt.Client | None = None
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return (self.status_topic, self.own_configs)

    async def connected(self, client: aiomqtt.Client) -> None:
        self._client = client
        await self.publish_all(client)

    def disconnected(self) -> None:
        self._client = None

    async def publish_all(self, client: aiomqtt.Client) -> None:
        for topic, payload in self.messages.items():
            await client.publish(topic, json.dumps(payload, sort_keys=True).encode(), qos=1, retain=True)
        log.info("Home Assistant discovery published (%d entities)", len(self.messages))

    def is_own_config(self, topic: str) -> bool:
        parts = topic.split("/")
        return len(parts) == 5 and parts[0] == self.prefix and parts[2] == self.node and parts[4] == "config"

    async def on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> bool:
        """Handle Home Assistant's status and our own retained configs; False for anything else."""
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        if topic == self.status_topic:
            if payload.strip() == b"online":
                await self.publish_all(client)
            return True
        if self.is_own_config(topic):
            if payload and topic not in self.messages:  # a locker or reader that is configured no more
                await client.publish(topic, b"", qos=1, retain=True)
                log.info("Home Assistant discovery: removed %s", topic)
            return True
        return False

    def tag_scanned(self, reader_id: str, uid_hash: str | None, at: str) -> None:
        """Publish a tap's hashed uid on the reader's tag topic (QoS 0: a scan is live or not at all)."""
        client = self._client
        if client is None or not uid_hash:
            return
        payload = json.dumps({"uid_hash": uid_hash, "ts": at}, sort_keys=True).encode()
        task = asyncio.get_running_loop().create_task(self._send(client, tag_topic(self.topics, reader_id), payload))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=0)
        except aiomqtt.MqttError as exc:
            log.debug("tag scan not published: %s", exc)
