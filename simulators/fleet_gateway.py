"""One simulated gateway of `lockergw fleet-sim`: its journal (in memory), its bank of lockers and its
credential set, answering requests as a real gateway does.

Events are chained exactly as `gateway.journal` chains them (envelope fields, `gateway.events`'
hash, seq from 1, `prev_hash` of seq 1 = 64 zeros); the journal keeps the last `keep` of them as
canonical JSON, which is what `events/replay` re-publishes. Requests are answered by the gateway's
own `RequestHandler` over a real credential store (SQLite, made in the fleet's scratch directory on
the first request) with this class as its `GatewayOps` and `Replayer` — so validation, signatures,
responses and the credential-set digest in `info` are the gateway's, not an imitation.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import BoardSection, GatewaySection, LockerSection, MqttSection, ReaderSection, Settings
from gateway.credential_digest import set_digest
from gateway.events import GENESIS_HASH, SCHEMA, canonical_json, event_hash, format_ts, uuid7
from gateway.journal import STANDARD_FIELDS
from gateway.mqtt.ops import RequestError
from gateway.mqtt.requests import RequestHandler
from gateway.mqtt.signing import RequestVerifier
from gateway.mqtt.topics import Topics
from gateway.records import credential_summary, remote_open_record
from gateway.sitekey import uid_hash
from gateway.store import Store
from simulators.fleet_story import (
    ASSIGNED_LOCKERS,
    ASSIGNED_READER,
    BOARD,
    SHARED_LOCKERS,
    SHARED_READER,
    BankStory,
    Person,
    Record,
)

#: Events kept for `events/replay` per gateway (a real gateway keeps 30 days).
DEFAULT_KEEP = 100_000
#: Made-up card holders tapping at a gateway whose credential set is still empty.
SYNTHETIC_PEOPLE = 24


class SimulatedGateway:
    def __init__(
        self,
        site: str,
        gateway: str,
        *,
        prefix: str,
        rng: random.Random,
        state_dir: Path,
        verifier: RequestVerifier | None = None,
        keep: int = DEFAULT_KEEP,
        max_request_bytes: int = MqttSection().max_request_bytes,
    ) -> None:
        self.site = site
        self.gateway = gateway
        self.topics = Topics.of(prefix, site, gateway)
        self.boot_id = uuid7()
        self.running = True
        self.seq = 0
        self.last_hash = GENESIS_HASH
        self._journal: deque[bytes] = deque(maxlen=keep)
        self._rng = rng
        self._site_key = rng.randbytes(32)
        self._state_dir = state_dir
        self._verifier = verifier
        self._settings = _settings(site, gateway, prefix, state_dir, max_request_bytes)
        self._store: Store | None = None
        self._handler: RequestHandler | None = None
        self._people = self._synthetic_people()
        self._credentials = (0, set_digest([]))
        self.story = BankStory(rng, lambda: self._people, self._unknown_uid_hash)
        #: Events journaled outside the story (remote opens, service changes): published at once.
        self.outbox: list[dict[str, Any]] = []
        #: Called when `outbox` or the retained topics have something new; `(gateway, replay_from)`
        #: with replay_from set when a replay was asked for.
        self.on_change: Callable[[SimulatedGateway, int | None], None] = lambda gateway, replay_from: None
        self.info_dirty = False

    def __repr__(self) -> str:
        return f"<SimulatedGateway {self.site}/{self.gateway} seq={self.seq}>"

    # ---- the journal -------------------------------------------------------------------------

    def journal(self, record: Record, at: datetime | None = None) -> dict[str, Any]:
        """Append one record as the next event of the chain; return its envelope (without `historical`)."""
        self.seq += 1
        envelope: dict[str, Any] = {
            "schema": SCHEMA,
            "event_id": uuid7(),
            "site": self.site,
            "gateway": self.gateway,
            "seq": self.seq,
            "boot_id": self.boot_id,
            "ts": format_ts(at or datetime.now(UTC)),
            "kind": record["kind"],
        }
        for name in STANDARD_FIELDS:
            envelope[name] = None
        envelope.update((name, value) for name, value in record.items() if name != "kind")
        envelope["prev_hash"] = self.last_hash
        envelope["hash"] = self.last_hash = event_hash(envelope)
        self._journal.append(canonical_json(envelope))
        return envelope

    def next_event(self) -> dict[str, Any]:
        """The next thing that happens at this bank, journaled."""
        return self.journal(self.story.next_record())

    @property
    def first_kept_seq(self) -> int:
        return self.seq - len(self._journal) + 1

    def read(self, from_seq: int, to_seq: int) -> list[dict[str, Any]]:
        """Journaled envelopes from_seq…to_seq (those still kept)."""
        first = self.first_kept_seq
        start, stop = max(from_seq, first) - first, min(to_seq, self.seq) - first + 1
        return [json.loads(line) for line in itertools.islice(self._journal, start, max(start, stop))]

    # ---- retained topics ---------------------------------------------------------------------

    def state(self, state: str) -> dict[str, Any]:
        payload = {"state": state, "boot_id": self.boot_id, "version": __version__, "ts": format_ts(datetime.now(UTC))}
        if state == "online":
            payload["journal"] = "ok"  # a simulated journal never fails to commit
        return payload

    def info(self) -> dict[str, Any]:
        version, digest = self._credentials
        settings = self._settings
        return {
            "version": __version__,
            "site": self.site,
            "gateway": self.gateway,
            "boot_id": self.boot_id,
            "readers": [{"id": r.id, "driver": r.driver, "lockers": list(r.lockers)} for r in settings.readers],
            "boards": [{"id": b.id, "driver": b.driver, "address": b.address} for b in settings.boards],
            "lockers": [
                {"id": x.id, "section": x.section, "department": x.department, "mode": x.mode, "board": x.board}
                for x in settings.lockers
            ],
            "credentials": {"version": version, "digest": digest},
        }

    def locker_states(self) -> dict[str, dict[str, Any]]:
        now = format_ts(datetime.now(UTC))
        return {
            locker: {"door": state.door, "service": state.service, "occupied": state.occupant is not None, "ts": now}
            for locker, state in self.story.lockers.items()
        }

    def restart(self) -> None:
        """A new run of the same gateway: a new boot_id; seq and chain continue."""
        self.boot_id = uuid7()

    # ---- requests ----------------------------------------------------------------------------

    def requests(self) -> RequestHandler:
        """The gateway's request handler over this gateway's credential store (opened on first use)."""
        if self._handler is None:
            self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._store = Store.open(self._state_dir, zone=UTC)
            self._handler = RequestHandler(
                self._settings,
                self._store,
                self,
                self._site_key,
                self,
                verifier=self._verifier,
                allow_unsigned=self._verifier is None,
            )
        return self._handler

    def close(self) -> None:
        if self._handler is not None:
            self._handler.writer.close()
        if self._store is not None:
            self._store.close()

    # GatewayOps ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        version, digest = self._credentials
        return {
            "state": "online",
            "status": "ok",
            "boot_id": self.boot_id,
            "version": __version__,
            "journal": {"last_seq": self.seq, "backlog": 0, **self.journal_status()},
            "credentials": {"version": version, "digest": digest, "count": len(self._people)},
        }

    def journal_status(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def credentials_changed(self) -> None:
        assert self._store is not None
        self._credentials = self._store.version_and_digest()
        people = [
            Person(
                credential_summary(c, c.uid, self._hash_uid),
                next((x for x in c.scope if x in ASSIGNED_LOCKERS), None),
            )
            for c in self._store.all()
            if str(c.status) == "active" and str(c.role) == "user" and c.uid
        ]
        self._people = people or self._synthetic_people()

    async def open_locker(
        self, locker: str, operator: str, reason: str, authorizers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self._locker(locker)
        record = remote_open_record(locker, operator, reason, authorizers, "sent")
        envelope = self._journal_now(record)
        self.story.open_door_later(locker)
        return {"locker": locker, "unlock": "sent", "seq": envelope["seq"]}

    async def set_locker_service(self, locker: str, service: str, by: str) -> dict[str, Any]:
        state = self._locker(locker)
        if service not in ("in_service", "out_of_service"):
            raise RequestError(f"service must be one of: in_service, out_of_service (got {service!r})")
        if state.service != service:
            state.service = service
            self.story.changed.add(locker)
            self._journal_now({"kind": "locker.service", "locker": locker, "service": service, "by": by})
        return {"locker": locker, "service": service}

    async def assign_locker(self, locker: str, credential_id: str, by: str) -> dict[str, Any]:
        state = self._locker(locker)
        if locker not in SHARED_LOCKERS:
            raise RequestError(
                f"locker {locker!r} is an assigned locker: assign it by putting it in the credential's scope"
            )
        if state.occupant == credential_id:
            return {"locker": locker, "occupant": credential_id}
        if state.occupant is not None:
            raise RequestError(f"locker {locker!r} is held by another credential; release it first")
        return self._set_occupant(locker, credential_id, "locker.allocated", by)

    async def release_locker(self, locker: str, by: str) -> dict[str, Any]:
        state = self._locker(locker)
        if locker not in SHARED_LOCKERS:
            raise RequestError(f"locker {locker!r} is not a shared locker")
        if state.occupant is None:
            raise RequestError(f"locker {locker!r} is not held by anyone")
        return self._set_occupant(locker, None, "locker.released", by)

    def _set_occupant(self, locker: str, occupant: str | None, kind: str, by: str) -> dict[str, Any]:
        self._journal_now({"kind": kind, "locker": locker, "credential": None, "reason": "remote", "by": by})
        self.story.lockers[locker].occupant = occupant
        self.story.changed.add(locker)
        return {"locker": locker, "occupant": occupant}

    # Replayer -----------------------------------------------------------------------------------

    def replay(self, from_seq: int) -> dict[str, Any]:
        if from_seq > self.seq + 1:
            raise RequestError(f"from_seq {from_seq} is after the last journaled event (seq {self.seq})")
        start = max(from_seq, self.first_kept_seq)
        if start > self.seq:
            return {"from_seq": from_seq, "to_seq": self.seq, "count": 0}
        self.on_change(self, start)
        data: dict[str, Any] = {"from_seq": start, "to_seq": self.seq, "count": self.seq - start + 1}
        if start > from_seq:
            data["pruned_before"] = start
        return data

    def info_changed(self) -> None:
        self.info_dirty = True
        self.on_change(self, None)

    # ---- helpers -----------------------------------------------------------------------------

    def _journal_now(self, record: Record) -> dict[str, Any]:
        envelope = self.journal(record)
        self.outbox.append(envelope)
        self.on_change(self, None)
        return envelope

    def _locker(self, locker: str) -> Any:
        state = self.story.lockers.get(locker)
        if state is None:
            raise RequestError(f"unknown locker {locker!r}")
        return state

    def _hash_uid(self, uid: str) -> str:
        return uid_hash(self._site_key, uid)

    def _unknown_uid_hash(self) -> str:
        return self._hash_uid(f"{self._rng.getrandbits(40):010X}")

    def _synthetic_people(self) -> list[Person]:
        """Card holders of a gateway that has no credentials yet: half with an assigned locker."""
        people: list[Person] = []
        for n in range(1, SYNTHETIC_PEOPLE + 1):
            locker = ASSIGNED_LOCKERS[n - 1] if n <= len(ASSIGNED_LOCKERS) else None
            uid = f"{self._rng.getrandbits(40):010X}"
            credential = {"id": f"C-{n:04d}", "holder": f"u-{n:04d}", "role": "user", "uid_hash": self._hash_uid(uid)}
            people.append(Person(credential, locker))
        return people


def _settings(site: str, gateway: str, prefix: str, state_dir: Path, max_request_bytes: int) -> Settings:
    """The configuration this gateway would have: one bank reader for the assigned lockers, one for the
    shared ones, one Kerong board. Built without the environment (`LOCKERGW_*` is for real gateways)."""
    lockers = [
        LockerSection(
            id=locker,
            board=BOARD,
            lock=channel,
            section="A",
            department="main",
            mode="shared" if locker in SHARED_LOCKERS else "assigned",
        )
        for channel, locker in enumerate((*ASSIGNED_LOCKERS, *SHARED_LOCKERS), start=1)
    ]
    return Settings.model_construct(
        gateway=GatewaySection(id=gateway, site=site, state_dir=state_dir, timezone="UTC"),
        mqtt=MqttSection(topic_prefix=prefix, max_request_bytes=max_request_bytes),
        readers=[
            ReaderSection(id=ASSIGNED_READER, driver="rdm6300", port="/dev/null", lockers=list(ASSIGNED_LOCKERS)),
            ReaderSection(id=SHARED_READER, driver="rdm6300", port="/dev/null", lockers=list(SHARED_LOCKERS)),
        ],
        boards=[BoardSection(id=BOARD, driver="kerong-cu16", port="/dev/null")],
        lockers=lockers,
    )
