"""Reading the gateways' topics (SPEC §7) back: `{prefix}/{site}/{gateway}/{rest}` → its parts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GatewayTopic:
    site: str
    gateway: str
    #: What follows the gateway: `state`, `info`, `events/door.opened`, `lockers/A-01`, `response/…`.
    rest: str

    @property
    def channel(self) -> str:
        """The first level of `rest`: state, info, events, lockers, response."""
        return self.rest.split("/", 1)[0]

    @property
    def tail(self) -> str:
        """What follows the channel: the event kind, the locker id, the command."""
        return self.rest.split("/", 1)[1] if "/" in self.rest else ""


def parse_topic(prefix: str, topic: str) -> GatewayTopic | None:
    """The parts of a gateway topic under `prefix`, or None for any other topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        return None
    return GatewayTopic(parts[0], parts[1], parts[2])


def subscriptions(prefix: str, share_group: str) -> tuple[str, list[str]]:
    """The shared events filter and the non-shared ones every worker holds (retained state, info, lockers).
    Responses to central's requests go to `central.requests.GatewayRequestLink`'s own connection."""
    shared = f"$share/{share_group}/{prefix}/+/+/events/#"
    own = [f"{prefix}/+/+/state", f"{prefix}/+/+/info", f"{prefix}/+/+/lockers/+"]
    return shared, own
