"""Topic names of the MQTT contract (SPEC §7): everything hangs off `{topic_prefix}/{site}/{gateway}`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    base: str

    @classmethod
    def of(cls, prefix: str, site: str, gateway: str) -> Topics:
        return cls(f"{prefix}/{site}/{gateway}")

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    def event(self, kind: str) -> str:
        return f"{self.base}/events/{kind}"

    def locker(self, locker_id: str) -> str:
        return f"{self.base}/lockers/{locker_id}"

    @property
    def requests(self) -> str:
        """The subscription filter for every request to this gateway."""
        return f"{self.base}/request/#"

    def request(self, command: str) -> str:
        return f"{self.base}/request/{command}"

    def response(self, command: str) -> str:
        return f"{self.base}/response/{command}"

    def command_of(self, topic: str) -> str | None:
        """`credentials/upsert` for `{base}/request/credentials/upsert`; None for any other topic."""
        prefix = f"{self.base}/request/"
        if topic.startswith(prefix) and len(topic) > len(prefix):
            return topic[len(prefix) :]
        return None
