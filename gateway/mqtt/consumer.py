"""What a consumer of `{base}/events/#` must do, as a small pure state machine (docs/integrators.md).

`EventFollower.receive(envelope)` de-duplicates by `event_id`, puts events back in `seq` order per
gateway, checks every hash and every link of the chain, and says when a gap needs an
`events/replay`. It does no I/O: `lockergw events tail` wires it to a broker, and integrators can
read it as the reference for their own consumer.

An event's `site` and `gateway` are trusted only when they match the topic it arrived on
(`{prefix}/{site}/{gateway}/events/{kind}`): the broker's ACL says who may publish there, while the
hash chain proves order and completeness, not authorship. An event that claims another gateway than
its topic's is refused before it can enter (and poison) that gateway's chain.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.events import GENESIS_HASH, event_hash

#: How many event ids (per gateway) are remembered for de-duplication.
REMEMBERED_IDS = 100_000
#: How many out-of-order events are held while a gap is being filled, per gateway.
MAX_HELD = 10_000


@dataclass(frozen=True, slots=True)
class Delivered:
    """An event in order. `fault` says what is wrong with its hash or link (None when it checks out)."""

    envelope: dict[str, Any]
    fault: str | None = None
    chained: bool = True  # False for the first event seen from a gateway (nothing to link it to)


@dataclass(frozen=True, slots=True)
class Duplicate:
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Gap:
    """Events `first`…`last` of a gateway are missing: ask it for `events/replay` from `first`."""

    site: str
    gateway: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Fault:
    """Something a replay cannot mend: a reused seq, or a gap that was given up on."""

    site: str
    gateway: str
    message: str


Outcome = Delivered | Duplicate | Gap | Fault


@dataclass
class _Feed:
    expected: int | None = None  # the next seq to deliver
    last_hash: str | None = None
    ids: OrderedDict[str, int] = field(default_factory=OrderedDict)  # event_id → seq
    seqs: dict[int, str] = field(default_factory=dict)  # seq → event_id (same window)
    held: dict[int, dict[str, Any]] = field(default_factory=dict)
    replay_asked_from: int | None = None


class EventFollower:
    """Follow the event streams of any number of gateways. Not thread-safe; one per consumer."""

    def __init__(self, start_seq: int | None = None) -> None:
        """`start_seq`: the seq each gateway's stream is expected to start at (None: the first one seen)."""
        self._start = start_seq
        self._feeds: dict[tuple[str, str], _Feed] = {}

    def expected(self, site: str, gateway: str) -> int | None:
        feed = self._feeds.get((site, gateway))
        return feed.expected if feed else None

    def held(self, site: str, gateway: str) -> int:
        """How many events of this gateway wait for a gap before them to be filled."""
        feed = self._feeds.get((site, gateway))
        return len(feed.held) if feed else 0

    def receive(self, envelope: dict[str, Any], topic: str | None = None) -> list[Outcome]:
        """Take one delivered event; with `topic` (where it arrived), one whose payload claims another
        site, gateway or kind than the topic is refused as a Fault and does not enter any chain."""
        site, gateway = str(envelope.get("site")), str(envelope.get("gateway"))
        if topic is not None:
            mismatch = topic_mismatch(topic, envelope)
            if mismatch is not None:
                return [Fault(site, gateway, mismatch)]
        seq, event_id = envelope.get("seq"), envelope.get("event_id")
        if not isinstance(seq, int) or not isinstance(event_id, str):
            return [Fault(site, gateway, "an event without an integer seq and an event_id")]
        feed = self._feeds.setdefault((site, gateway), _Feed(expected=self._start))
        if event_id in feed.ids or feed.held.get(seq, {}).get("event_id") == event_id:
            return [Duplicate(envelope)]
        known = feed.seqs.get(seq) or feed.held.get(seq, {}).get("event_id")
        if known is not None:
            return [Fault(site, gateway, f"seq {seq} arrived again with another event_id: seq reused")]
        if feed.expected is None:
            feed.expected = seq
        if seq < feed.expected:
            # Older than where this consumer started following: deliver, but it cannot be linked.
            self._remember(feed, envelope)
            return [Delivered(envelope, _hash_fault(envelope), chained=False)]
        if seq > feed.expected:
            return self._hold(feed, site, gateway, envelope)
        outcomes: list[Outcome] = [self._deliver(feed, envelope)]
        while feed.expected in feed.held:
            outcomes.append(self._deliver(feed, feed.held.pop(feed.expected)))
        if feed.replay_asked_from is not None and not feed.held:
            feed.replay_asked_from = None
        return outcomes

    def _hold(self, feed: _Feed, site: str, gateway: str, envelope: dict[str, Any]) -> list[Outcome]:
        assert feed.expected is not None
        feed.held[int(envelope["seq"])] = envelope
        if len(feed.held) > MAX_HELD:
            # Give up on the gap: carry on from the oldest held event.
            missing_from, resume = feed.expected, min(feed.held)
            feed.expected, feed.last_hash, feed.replay_asked_from = resume, None, None
            outcomes: list[Outcome] = [
                Fault(site, gateway, f"seq {missing_from}-{resume - 1} never arrived; following on from {resume}")
            ]
            while feed.expected in feed.held:
                outcomes.append(self._deliver(feed, feed.held.pop(feed.expected)))
            return outcomes
        if feed.replay_asked_from == feed.expected:
            return []
        feed.replay_asked_from = feed.expected
        return [Gap(site, gateway, feed.expected, min(feed.held) - 1)]

    def _deliver(self, feed: _Feed, envelope: dict[str, Any]) -> Delivered:
        fault = _hash_fault(envelope)
        previous = feed.last_hash if feed.last_hash is not None else (GENESIS_HASH if envelope["seq"] == 1 else None)
        chained = previous is not None
        if fault is None and chained and envelope.get("prev_hash") != previous:
            fault = f"seq {envelope['seq']}: prev_hash does not link to seq {envelope['seq'] - 1}"
        feed.last_hash = str(envelope.get("hash"))
        feed.expected = int(envelope["seq"]) + 1
        self._remember(feed, envelope)
        return Delivered(envelope, fault, chained)

    def _remember(self, feed: _Feed, envelope: dict[str, Any]) -> None:
        event_id, seq = str(envelope["event_id"]), int(envelope["seq"])
        feed.ids[event_id] = seq
        feed.seqs[seq] = event_id
        while len(feed.ids) > REMEMBERED_IDS:
            _, old_seq = feed.ids.popitem(last=False)
            feed.seqs.pop(old_seq, None)


def topic_mismatch(topic: str, envelope: dict[str, Any]) -> str | None:
    """Why an event may not be trusted on `topic` (`…/{site}/{gateway}/events/{kind}`), or None."""
    head, separator, kind = topic.rpartition("/events/")
    parts = head.split("/")
    if not separator or len(parts) < 3:
        return f"{topic} is not an events topic"
    site, gateway = parts[-2], parts[-1]
    claimed = (envelope.get("site"), envelope.get("gateway"), envelope.get("kind"))
    if claimed != (site, gateway, kind):
        return (
            f"event on {topic} claims {claimed[0]}/{claimed[1]} {claimed[2]}: refused "
            "(site, gateway and kind must match the topic)"
        )
    return None


def _hash_fault(envelope: dict[str, Any]) -> str | None:
    if event_hash(envelope) != envelope.get("hash"):
        return f"seq {envelope.get('seq')}: hash does not match its content (altered?)"
    return None
