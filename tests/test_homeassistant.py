"""Home Assistant MQTT discovery: payloads held against what Home Assistant's MQTT integration
requires, and the real daemon publishing, re-sending and removing them on a private Mosquitto."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from broker.contract import Contract
from broker.kit import Capture, Received
from broker.mosquitto import Mosquitto
from gateway_world import running, write_site

from gateway.config import load_config
from gateway.mqtt.homeassistant import discovery_messages
from gateway.store import Store
from simulators.site import SimulatedSite

pytestmark = pytest.mark.timeout(120)

BASE = "lockers/test-site/gw-e2e"
NODE = "lockergw_test-site_gw-e2e"
HA_ON = "\n[homeassistant]\ndiscovery = true\n"

# ---- what Home Assistant's MQTT integration requires (homeassistant/components/mqtt/: the discovery
# topic format, the shared entity and device schema, and each platform's required keys) --------------

TOPIC = re.compile(r"^homeassistant/(binary_sensor|sensor|tag)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$")
TEMPLATE = {"type": "string", "pattern": r"^\{\{.*\}\}$"}
MQTT_TOPIC = {"type": "string", "minLength": 1, "pattern": r"^[^#+]+$"}
DEVICE = {
    "type": "object",
    "properties": {
        "identifiers": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "connections": {"type": "array"},
        "name": {"type": "string"},
        "manufacturer": {"type": "string"},
        "model": {"type": "string"},
        "sw_version": {"type": "string"},
        "suggested_area": {"type": "string"},
        "via_device": {"type": "string"},
    },
    "anyOf": [{"required": ["identifiers"]}, {"required": ["connections"]}],
    "additionalProperties": False,
}
AVAILABILITY = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["topic"],
        "properties": {
            "topic": MQTT_TOPIC,
            "value_template": TEMPLATE,
            "payload_available": {"type": "string"},
            "payload_not_available": {"type": "string"},
        },
        "additionalProperties": False,
    },
}
ENTITY = {
    "state_topic": MQTT_TOPIC,
    "value_template": TEMPLATE,
    "availability": AVAILABILITY,
    "device": DEVICE,
    "name": {"type": ["string", "null"]},
    "unique_id": {"type": "string", "minLength": 1},
    "object_id": {"type": "string", "pattern": r"^[a-zA-Z0-9_-]+$"},
    "icon": {"type": "string", "pattern": r"^mdi:"},
    "json_attributes_topic": MQTT_TOPIC,
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "binary_sensor": {
        "type": "object",
        "required": ["state_topic", "unique_id", "device"],
        "properties": {
            **ENTITY,
            "device_class": {"enum": ["door", "opening", "lock", "occupancy", "problem"]},
            "payload_on": {"type": "string"},
            "payload_off": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "sensor": {
        "type": "object",
        "required": ["state_topic", "unique_id", "device"],
        "properties": {
            **ENTITY,
            "device_class": {"const": "enum"},
            "options": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        },
        # An enum sensor lists its options and has no unit or state class (sensor/__init__.py).
        "if": {"properties": {"device_class": {"const": "enum"}}, "required": ["device_class"]},
        "then": {"required": ["options"], "not": {"anyOf": [{"required": ["unit_of_measurement"]}]}},
        "additionalProperties": False,
    },
    "tag": {  # tag/__init__.py: topic and device are required, value_template optional, nothing else
        "type": "object",
        "required": ["topic", "device"],
        "properties": {"topic": MQTT_TOPIC, "value_template": TEMPLATE, "device": DEVICE},
        "additionalProperties": False,
    },
}


def check_discovery(messages: dict[str, dict[str, Any]]) -> None:
    unique_ids = []
    for topic, payload in messages.items():
        match = TOPIC.match(topic)
        assert match, topic
        jsonschema.validate(payload, SCHEMAS[match.group(1)])
        if "unique_id" in payload:
            unique_ids.append(payload["unique_id"])
            assert payload["availability"][0]["topic"] == f"{BASE}/state"
    assert len(unique_ids) == len(set(unique_ids))


def test_every_payload_is_what_home_assistant_requires(tmp_path: Path) -> None:
    _, settings = write_site(tmp_path, extra=HA_ON)
    messages = discovery_messages(settings)
    check_discovery(messages)
    lockers = {s.id for s in settings.lockers}
    readers = {s.id for s in settings.readers}
    assert {t for t in messages if "/binary_sensor/" in t} == {
        f"homeassistant/binary_sensor/{NODE}/{locker}_door/config" for locker in lockers
    }
    assert {t for t in messages if "/sensor/" in t and "binary" not in t} == {
        f"homeassistant/sensor/{NODE}/{locker}_state/config" for locker in lockers
    }
    assert {t for t in messages if "/tag/" in t} == {f"homeassistant/tag/{NODE}/{r}_tag/config" for r in readers}
    door = messages[f"homeassistant/binary_sensor/{NODE}/A-01_door/config"]
    # Zigbee2MQTT's id conventions, with lockergw in place of zigbee2mqtt.
    assert door["unique_id"] == f"{NODE}_A-01_door_lockergw"
    assert door["device"]["identifiers"] == [f"{NODE}_A-01"] and door["device"]["via_device"] == NODE


def test_a_schema_violation_would_be_caught() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unique_id": "x", "device": {"identifiers": ["d"]}}, SCHEMAS["binary_sensor"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"state_topic": "t", "unique_id": "x", "device": {}, "device_class": "enum"}, SCHEMAS["sensor"]
        )


# ---- end to end ------------------------------------------------------------------------------------


def configs(messages: list[Received]) -> dict[str, bytes]:
    """The latest payload of each discovery config topic."""
    latest: dict[str, bytes] = {}
    for message in messages:
        if message.topic.endswith("/config"):
            latest[message.topic] = message.payload
    return latest


async def test_the_daemon_publishes_resends_and_removes_discovery(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    config, settings = write_site(tmp_path, broker.url, extra=HA_ON)
    settings.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    with Store.open(settings.gateway.state_dir) as store:
        person = {"id": "C-1", "uid": "3C00CE754C", "holder": "amira", "role": "user", "scope": ["A-03"]}
        store.upsert([person], by="test", now=datetime.now(UTC))
    expected = discovery_messages(settings)
    ha_capture = Capture(broker.url, "homeassistant/#", f"{BASE}/readers/#", f"{BASE}/state")
    async with ha_capture as ha, SimulatedSite(settings) as site, running(config) as gw:
        await ha.wait_until(lambda m: set(expected) <= set(configs(m)))
        check_discovery({t: json.loads(p) for t, p in configs(ha.messages).items()})
        await ha.wait_for(lambda m: m.topic == f"{BASE}/state" and m.json()["state"] == "online")

        # Home Assistant restarts and announces itself: discovery is sent again.
        before = len(ha.messages)
        await ha.publish("homeassistant/status", b"online")
        await ha.wait_until(lambda m: set(expected) <= set(configs(m[before:])))

        # A tap reaches the reader's tag scanner as a hashed uid only.
        await gw.wait_for("reader.online", reader="bank-a")
        await site.tap("bank-a", "3C00CE754C")
        granted = await gw.wait_for("access.granted", reader="bank-a")
        tag = await ha.wait_for(lambda m: m.topic == f"{BASE}/readers/bank-a/tag")
        assert tag.json()["uid_hash"] == granted["credential"]["uid_hash"]
        assert b"3C00CE754C" not in tag.payload
        assert Contract.load().validate(tag.topic, tag.json()) == "readerTag"  # docs/asyncapi.yaml

    # The site loses locker B-02: its entities are removed at the next start.
    text = config.read_text(encoding="utf-8")
    text = text.replace('lockers = ["B-01", "B-02"]', 'lockers = ["B-01"]')
    text = text.replace('[[lockers]]\nid = "B-02"\nboard = "board-a"\nlock = 10\nsection = "B"\nmode = "shared"\n', "")
    config.write_text(text, encoding="utf-8")
    smaller = load_config(config)
    assert "B-02" not in {locker.id for locker in smaller.lockers}
    gone = set(expected) - set(discovery_messages(smaller))
    assert gone == {
        f"homeassistant/binary_sensor/{NODE}/B-02_door/config",
        f"homeassistant/sensor/{NODE}/B-02_state/config",
    }
    async with Capture(broker.url, "homeassistant/#") as ha, SimulatedSite(smaller), running(config):
        await ha.wait_until(lambda m: all(configs(m).get(topic) == b"" for topic in gone))
    async with Capture(broker.url, "homeassistant/#") as ha:  # what a new Home Assistant would find
        await ha.wait_until(lambda m: set(discovery_messages(smaller)) <= set(configs(m)))
        assert not gone & set(configs(ha.messages))
