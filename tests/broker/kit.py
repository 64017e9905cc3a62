"""What MQTT tests need around a broker: a recording subscriber, gateway settings, and a small gateway
(`LockerBank`) that implements GatewayOps over a real journal and store with the daemon's own locker
operations — the part of the daemon the request handlers talk to, without readers or lock boards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.mosquitto import TlsFiles
from gateway.config import Settings
from gateway.credential_view import CredentialView
from gateway.daemon import Clock, policy_settings
from gateway.events import format_ts, uuid7
from gateway.journal import Journal, StateWrite
from gateway.locker_operations import LockerOperations
from gateway.model import Locker, LockerMode
from gateway.mqtt.service import MqttService
from gateway.mqtt.signing import needs_signature, sign
from gateway.sitekey import load_or_create_site_key, uid_hash
from gateway.store import Store

SITE = "test-site"
#: The request-signing key every test gateway is given unless a test says otherwise (SPEC §7: signed
#: requests are the default); `Capture.request` signs with it.
TEST_SIGNING_KEY = b"test-signing-key-0123456789abcdef0123456789"


def write_signing_key(path: Path, key: bytes = TEST_SIGNING_KEY) -> Path:
    path.write_bytes(key)
    path.chmod(0o600)
    return path


def signed(topic: str, payload: dict[str, Any], key: bytes = TEST_SIGNING_KEY) -> dict[str, Any]:
    """`payload` signed for `topic` ({base}/request/{command}) when that command needs a signature."""
    command = topic.split("/request/", 1)[1]
    return sign(payload, key, topic=topic) if needs_signature(command) else payload


def gateway_settings(
    state_dir: Path,
    url: str,
    *,
    gateway: str = "gw-01",
    site: str = SITE,
    lockers: tuple[str, ...] = ("A-01", "A-02", "S-01"),
    two_person: bool = True,
    **mqtt: Any,
) -> Settings:
    raw: dict[str, Any] = {
        "gateway": {"id": gateway, "site": site, "state_dir": str(state_dir), "timezone": "Europe/London"},
        "mqtt": {"url": url, "keepalive": 5, **mqtt},
        "policy": {"emergency_two_person": two_person},
        # A board the MQTT-only tests never open (LockerBank counts it online): the lockers are not keyed.
        "boards": [{"id": "board-a", "driver": "kerong-cu16", "port": str(state_dir.parent / "rs485")}],
        "lockers": [
            {
                "id": locker,
                "board": "board-a",
                "lock": number,
                "section": "A",
                "department": "sports",
                "mode": "shared" if locker.startswith("S") else "assigned",
            }
            for number, locker in enumerate(lockers, start=1)
        ],
    }
    return Settings(**raw)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None

    @functools.cached_property
    def parsed(self) -> Any:
        return json.loads(self.payload)

    def json(self) -> Any:
        return self.parsed


class Capture:
    """A subscriber that records every message it receives; tests wait on what they expect to see."""

    def __init__(
        self,
        url: str,
        *filters: str,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        client_cert: bool = True,
        identifier: str | None = None,
        persistent: bool = False,
        signing_key: bytes | None = TEST_SIGNING_KEY,
    ) -> None:
        self.signing_key = signing_key
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        context = None
        if url.startswith("mqtts://"):
            assert tls is not None
            context = ssl.create_default_context(cafile=str(tls.ca_cert))
            if client_cert:
                context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        properties = None
        if persistent:  # keep the session (and queued QoS 1 messages) while disconnected
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 600
        self.client = aiomqtt.Client(
            host,
            int(port),
            username=username,
            password=password,
            identifier=identifier or f"capture-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=context,
            clean_start=not persistent,
            properties=properties,
        )
        self.filters = filters
        self.messages: list[Received] = []
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Capture:
        await self.client.__aenter__()
        for topic_filter in self.filters:
            await self.client.subscribe(topic_filter, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
            self.messages.append(Received(str(message.topic), payload, bool(message.retain), correlation))
            self._arrived.set()

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 10.0) -> Received:
        """The first message so far or from now on that matches."""
        found = await self.wait_count(predicate, 1, timeout)
        return found[0]

    async def wait_count(
        self, predicate: Callable[[Received], bool], count: int, timeout: float = 10.0
    ) -> list[Received]:
        """The first `count` messages so far or from now on that match (each message is looked at once)."""
        matching: list[Received] = []
        index = 0
        async with asyncio.timeout(timeout):
            while True:
                while index < len(self.messages):
                    message = self.messages[index]
                    index += 1
                    if predicate(message):
                        matching.append(message)
                if len(matching) >= count:
                    return matching
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_until(self, condition: Callable[[list[Received]], bool], timeout: float = 10.0) -> None:
        """Return once `condition(all messages so far)` holds."""
        async with asyncio.timeout(timeout):
            while not condition(self.messages):
                self._arrived.clear()
                await self._arrived.wait()

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    async def publish(
        self, topic: str, payload: dict[str, Any] | bytes, *, properties: Properties | None = None, retain: bool = False
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(topic, body, qos=1, retain=retain, properties=properties)

    async def request(self, base: str, command: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a request with a fresh transaction and wait for its response on `{base}/response/{command}`."""
        transaction = uuid.uuid4().hex
        topic = f"{base}/request/{command}"
        body = {**payload, "transaction": transaction}
        if self.signing_key is not None:
            body = signed(topic, body, self.signing_key)
        await self.publish(topic, body)

        def answers(m: Received) -> bool:
            return m.topic == f"{base}/response/{command}" and m.json().get("transaction") == transaction

        found = await self.wait_for(answers, timeout)
        response: dict[str, Any] = found.json()
        return response


def is_event(message: Received) -> bool:
    """`{prefix}/{site}/{gateway}/events/{kind}` (not a request or response about events)."""
    parts = message.topic.split("/")
    return len(parts) >= 5 and parts[3] == "events"


def events_of(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if is_event(m)]


class LockerBank:
    """GatewayOps over a real journal and store, for MQTT tests that need no readers or lock boards.

    The locker operations are the daemon's own (gateway.locker_operations), over lockers held in
    memory: every board counts as online, and an unlock is recorded in `opened`. Tests of these
    operations against the whole daemon are in test_mqtt_asyncapi.py and test_gateway_mqtt_e2e.py.
    """

    def __init__(self, settings: Settings, journal: Journal, store: Store, *, boot_id: str) -> None:
        self.settings = settings
        self.journal = journal
        self._store = store
        self.boot_id = boot_id
        self.notify: Callable[[], None] = lambda: None
        self.on_locker: Callable[[str, dict[str, Any]], None] = lambda locker, payload: None
        self.lockers: dict[str, Locker] = {
            section.id: Locker(
                id=section.id,
                board=section.board,
                lock=section.lock,
                section=section.section,
                department=section.department,
                mode=LockerMode(section.mode),
            )
            for section in settings.lockers
        }
        self.policy = policy_settings(settings)
        self.credentials = CredentialView()
        self.credentials.load(store)
        self.clock = Clock()
        self._site_key = load_or_create_site_key(settings.gateway.state_dir)
        self.credential_changes = 0
        self.opened: list[str] = []
        self.operations = LockerOperations(
            self,
            append=self.append_async,
            energise=self.opened.append,
            board_online=lambda board: True,
            locker_changed=lambda locker: self.on_locker(locker, self.locker_payload(locker)),
        )

    @property
    def store(self) -> Store:
        return self._store

    def hash_uid(self, uid: str) -> str:
        hashed: str = uid_hash(self._site_key, uid)
        return hashed

    def append(self, records: list[dict[str, Any]], state: Sequence[StateWrite] = ()) -> list[dict[str, Any]]:
        envelopes = self.journal.append(records, datetime.now(UTC), state)
        self.notify()
        return envelopes

    async def append_async(
        self, records: list[dict[str, Any]], at: datetime, state: Sequence[StateWrite] = ()
    ) -> list[dict[str, Any]]:
        return self.append(records, state)

    # ---- GatewayOps ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        version, digest = self.store.version_and_digest()
        return {
            "state": "online",
            "boot_id": self.boot_id,
            "journal": {"last_seq": self.journal.last_seq, "backlog": self.journal.backlog()},
            "credentials": {"version": version, "digest": digest, "count": self.store.count()},
        }

    def journal_status(self) -> dict[str, Any]:
        return {"status": "ok"}

    def info(self) -> dict[str, Any]:
        version, digest = self.store.version_and_digest()
        return {
            "version": "test",
            "site": self.settings.gateway.site,
            "gateway": self.settings.gateway.id,
            "boot_id": self.boot_id,
            "readers": [],
            "boards": [],
            "lockers": [
                {"id": s.id, "section": s.section, "department": s.department, "mode": s.mode, "board": s.board}
                for s in self.settings.lockers
            ],
            "credentials": {"version": version, "digest": digest},
        }

    def locker_payload(self, locker_id: str) -> dict[str, Any]:
        locker = self.lockers[locker_id]
        return {
            "door": "closed",
            "service": str(locker.service),
            "occupied": locker.occupant is not None,
            "ts": format_ts(datetime.now(UTC)),
        }

    def locker_states(self) -> dict[str, dict[str, Any]]:
        return {locker_id: self.locker_payload(locker_id) for locker_id in self.lockers}

    async def credentials_changed(self) -> None:
        self.credential_changes += 1
        self.credentials.refresh(self.store)
        version, digest = self.store.version_and_digest()
        self.append([{"kind": "credentials.changed", "reason": None, "version": version, "digest": digest}])

    async def open_locker(
        self, locker: str, operator: str, reason: str, authorizers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return await self.operations.open_locker(locker, operator, reason, authorizers)

    async def set_locker_service(self, locker: str, service: str, by: str) -> dict[str, Any]:
        return await self.operations.set_locker_service(locker, service, by)

    async def assign_locker(self, locker: str, credential_id: str, by: str) -> dict[str, Any]:
        return await self.operations.assign_locker(locker, credential_id, by)

    async def release_locker(self, locker: str, by: str) -> dict[str, Any]:
        return await self.operations.release_locker(locker, by)


@dataclass
class Rig:
    """A running MQTT side of a gateway: real journal and store in `state_dir`, LockerBank as ops."""

    settings: Settings
    journal: Journal
    store: Store
    bank: LockerBank
    service: MqttService
    site_key: bytes

    @property
    def base(self) -> str:
        return self.settings.base_topic()

    def journal_events(self, count: int, kind: str = "door.opened") -> list[dict[str, Any]]:
        return self.bank.append([{"kind": kind, "locker": "A-01", "door": "open"} for _ in range(count)])


@contextlib.asynccontextmanager
async def running_gateway(
    state_dir: Path, url: str, *, ready: bool = True, connect: bool = True, **options: Any
) -> AsyncIterator[Rig]:
    """Start MqttService for a fresh gateway in `state_dir`; wait for its first session unless told not to."""
    if "hmac_key_file" not in options and not options.get("allow_unsigned_requests"):
        key_file = write_signing_key(state_dir.parent / f"{state_dir.name}-signing.key")
        options = {**options, "hmac_key_file": str(key_file)}
    settings = gateway_settings(state_dir, url, **options)
    boot_id = uuid7()
    site_key = load_or_create_site_key(state_dir)
    with (
        Store.open(state_dir) as store,
        Journal.open(state_dir, site=settings.gateway.site, gateway=settings.gateway.id, boot_id=boot_id) as journal,
    ):
        bank = LockerBank(settings, journal, store, boot_id=boot_id)
        async with MqttService(settings, journal, store, bank, site_key) as service:
            bank.notify = service.notify
            bank.on_locker = service.locker_changed
            if ready:
                service.set_ready()
            if connect:
                assert await service.publisher.wait_connected(10), "the publisher did not connect"
            yield Rig(settings, journal, store, bank, service, site_key)
