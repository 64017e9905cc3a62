"""docs/asyncapi.yaml as a validator: find the channel a topic belongs to and check a payload against it.

contract = Contract.load()
contract.validate(topic, payload)   # raises jsonschema.ValidationError, or AssertionError for an unknown topic
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ASYNCAPI = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
DOCUMENT_URI = "urn:lockergw:asyncapi"


@dataclass
class Channel:
    name: str
    address: str
    pattern: re.Pattern[str]
    validator: Draft202012Validator

    @property
    def fixed_segments(self) -> int:
        return sum(1 for part in self.address.split("/") if not part.startswith("{"))


class Contract:
    def __init__(self, document: dict[str, Any], prefix: str = "lockers") -> None:
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self.channels: list[Channel] = []
        for name, channel in document["channels"].items():
            address = str(channel["address"])
            assert address.startswith("lockers/")
            address = prefix + address.removeprefix("lockers")
            regex = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(address)) + "$"
            if address.endswith("{command}"):
                regex = regex.replace("[^/]+$", ".+$")  # a command may have several levels
            (message,) = channel["messages"].values()
            payload = self.resolve(message["$ref"])["payload"]
            self.channels.append(Channel(name, address, re.compile(regex), self.validator(payload)))
        # The most specific address wins (response/credentials/get before response/{command}).
        self.channels.sort(key=lambda c: -c.fixed_segments)

    @classmethod
    def load(cls, path: Path = ASYNCAPI, prefix: str = "lockers") -> Contract:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")), prefix)

    def resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
        return node

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        if "$ref" in schema:
            schema = {"$ref": DOCUMENT_URI + schema["$ref"]}
        return Draft202012Validator(schema, registry=self.registry)

    def schema(self, name: str) -> Draft202012Validator:
        return self.validator({"$ref": f"#/components/schemas/{name}"})

    def channel_for(self, topic: str) -> Channel:
        for channel in self.channels:
            if channel.pattern.match(topic):
                return channel
        raise AssertionError(f"{topic}: no channel of docs/asyncapi.yaml has this address")

    def validate(self, topic: str, payload: Any) -> str:
        """Validate; return the channel's name."""
        channel = self.channel_for(topic)
        channel.validator.validate(payload)
        return channel.name
