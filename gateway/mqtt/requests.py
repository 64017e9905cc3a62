"""Requests from central systems (SPEC §7): `{base}/request/{command}` → `{base}/response/{command}`.

Every request is answered — an unknown command, bad JSON, a wrong field or an oversized payload
too — with `{"transaction", "status": "ok"|"error", "data", "error"}` at QoS 1. The transaction is
echoed when it could be read, else null. An error response means nothing changed. An `ok` to a
credential change means the change is committed and in force for the next tap: the handler calls
`ops.credentials_changed()` before it answers. An MQTT 5 response topic and correlation data are
honoured, the response topic only when it lies under `{base}/response/` (any other is ignored: a
requester must not make the gateway publish on its own event or state topics).

Every request except `health_check` and `events/replay` must be signed (gateway.mqtt.signing); with no
key configured they are refused unless `mqtt.allow_unsigned_requests` is set. Free text that arrives
here (operator, reason, by, authorizers) may not hold control characters, and a payload nested deeper
than MAX_DEPTH levels is refused as bad input.

No response, log line or topic ever carries a raw card number: `credentials/get` answers with
`uid_hash`, and error messages show uids masked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from gateway.config import Settings
from gateway.credential_input import CredentialFields, FieldError, parse_credential_fields
from gateway.events import format_ts
from gateway.model import Credential, Status
from gateway.mqtt.ops import GatewayOps, RequestError
from gateway.mqtt.request_models import (
    Assign,
    Get,
    HealthCheck,
    Open,
    Release,
    Remove,
    Replace,
    Replay,
    RequestModel,
    SetService,
    SetStatus,
    Snapshot,
    Upsert,
    error_message,
)
from gateway.mqtt.signing import RequestVerifier, SignatureError, needs_signature
from gateway.mqtt.snapshot_pages import SnapshotAssembler, SnapshotRefused
from gateway.mqtt.store_worker import StoreWorker
from gateway.mqtt.topics import Topics
from gateway.sitekey import uid_hash
from gateway.storage import JournalUnavailable, describe_storage_error
from gateway.store import Store, StoreError
from gateway.uid import UidError, mask_uid, normalise_uid

log = logging.getLogger("lockergw.mqtt")

#: Every command a gateway answers (SPEC §7), in the order docs/asyncapi.yaml lists them.
COMMANDS = (
    "health_check",
    "credentials/upsert",
    "credentials/remove",
    "credentials/set_status",
    "credentials/replace",
    "credentials/snapshot",
    "credentials/get",
    "lockers/open",
    "lockers/set_service",
    "lockers/assign",
    "lockers/release",
    "events/replay",
)

#: JSON nested deeper than this is bad input (no request needs more than a few levels).
MAX_DEPTH = 32


class Replayer(Protocol):
    """What the handlers need of the publisher."""

    def replay(self, from_seq: int) -> dict[str, Any]: ...

    def info_changed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Response:
    """What goes back: the payload and where it goes (the MQTT 5 response topic when one was given)."""

    command: str
    topic: str
    payload: dict[str, Any]
    correlation_data: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.payload.get("status") == "ok"


class _Refused(Exception):
    """A request that is answered with an error; the message is the response's `error`."""


def credential_data(credential: Credential, site_key: bytes) -> dict[str, Any]:
    """A credential as `credentials/get` returns it: every field, `uid_hash` in place of `uid`."""

    def when(value: datetime | None) -> str | None:
        return format_ts(value) if value is not None else None

    return {
        "id": credential.id,
        "uid_hash": uid_hash(site_key, credential.uid) if credential.uid else None,
        "holder": credential.holder,
        "role": str(credential.role),
        "scope": list(credential.scope),
        "status": str(credential.status),
        "kind": str(credential.kind),
        "valid_from": when(credential.valid_from),
        "valid_until": when(credential.valid_until),
        "schedule": credential.schedule,
        "key_code": credential.key_code,
        "deposit": credential.deposit,
        "approved_by": credential.approved_by,
        "issue_no": credential.issue_no,
        "issued_at": when(credential.issued_at),
        "issued_by": credential.issued_by,
        "single_use": credential.single_use,
    }


def _uids_in(request: Mapping[str, Any]) -> list[str]:
    """Every card number a request carries (as sent and canonical), to keep them out of messages."""
    found: list[str] = []
    candidates: list[Any] = [request.get("new_uid")]
    items = request.get("credentials")
    if isinstance(items, list):
        candidates += [item.get("uid") for item in items if isinstance(item, dict)]
    for value in candidates:
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
            with contextlib.suppress(UidError):
                found.append(normalise_uid(value))
    return sorted(set(found), key=len, reverse=True)


def scrub(message: str, uids: Sequence[str]) -> str:
    for uid in uids:
        if len(uid) >= 4 and uid in message:
            message = message.replace(uid, mask_uid(uid))
    return message


class RequestHandler:
    """Answers requests. `handle()` is broker-free (tests call it directly); `on_message()` plugs it
    into the publisher's session."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ops: GatewayOps,
        site_key: bytes,
        publisher: Replayer,
        *,
        verifier: RequestVerifier | None = None,
        allow_unsigned: bool = False,
        writer: StoreWorker | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`store` is the daemon's (read on the event loop); changes go through `writer`, a private
        connection on a worker thread (one is made for `settings.gateway.state_dir` if not given)."""
        self.topics = Topics.of(settings.mqtt.topic_prefix, settings.gateway.site, settings.gateway.id)
        self._max_bytes = settings.mqtt.max_request_bytes
        self._zone = settings.gateway.zone()
        self._store = store
        self._state_dir = settings.gateway.state_dir
        self.writer = writer or StoreWorker(settings.gateway.state_dir, self._zone)
        self._ops = ops
        self._site_key = site_key
        self._publisher = publisher
        self._verifier = verifier
        self._allow_unsigned = allow_unsigned
        self._clock = clock
        self._snapshots = SnapshotAssembler()
        self._commands: dict[str, tuple[type[RequestModel], Callable[[Any], Awaitable[dict[str, Any]]]]] = {
            "health_check": (HealthCheck, self._health_check),
            "credentials/upsert": (Upsert, self._upsert),
            "credentials/remove": (Remove, self._remove),
            "credentials/set_status": (SetStatus, self._set_status),
            "credentials/replace": (Replace, self._replace),
            "credentials/snapshot": (Snapshot, self._snapshot_page),
            "credentials/get": (Get, self._get),
            "lockers/open": (Open, self._open),
            "lockers/set_service": (SetService, self._set_service),
            "lockers/assign": (Assign, self._assign),
            "lockers/release": (Release, self._release),
            "events/replay": (Replay, self._replay),
        }
        assert tuple(self._commands) == COMMANDS

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self._commands)

    # ---- transport ---------------------------------------------------------------------------

    async def on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        command = self.topics.command_of(str(message.topic))
        if command is None:
            return
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        response_topic = getattr(message.properties, "ResponseTopic", None) if message.properties else None
        correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
        response = await self.handle(command, payload, response_topic=response_topic, correlation_data=correlation)
        properties: Properties | None = None
        if response.correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = response.correlation_data
        await client.publish(response.topic, json.dumps(response.payload).encode(), qos=1, properties=properties)

    # ---- the request pipeline ----------------------------------------------------------------

    async def handle(
        self,
        command: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> Response:
        """Check, authenticate, validate and carry out one request; always returns a response."""
        topic = self.topics.response(command)
        if response_topic and self._response_topic_allowed(response_topic):
            topic = response_topic
        transaction: Any = None
        request: Any = None
        try:
            if len(payload) > self._max_bytes:
                raise _Refused(f"request is {len(payload)} bytes, more than mqtt.max_request_bytes ({self._max_bytes})")
            request = _parse_json(payload)
            if not isinstance(request, dict):
                raise _Refused("payload must be a JSON object")
            transaction = request.get("transaction")
            entry = self._commands.get(command)
            if entry is None:
                raise _Refused(f"unknown command {command!r} (one of: {', '.join(self._commands)})")
            if needs_signature(command):
                self._authenticate(command, request)
            model, run = entry
            try:
                arguments = model.model_validate(request)
            except ValidationError as exc:
                raise _Refused(error_message(exc)) from None
            data = await run(arguments)
        except (_Refused, RequestError, StoreError, FieldError, JournalUnavailable) as exc:
            message = scrub(str(exc), _uids_in(request) if isinstance(request, dict) else [])
            log.info("request %s: error: %s", command, message)
            return Response(command, topic, _payload(transaction, "error", {}, message), correlation_data)
        except Exception as exc:
            log.error("request %s failed: %s", command, type(exc).__name__, exc_info=exc)
            message = f"internal error handling {command} ({type(exc).__name__}); see the gateway log"
            return Response(command, topic, _payload(transaction, "error", {}, message), correlation_data)
        log.info("request %s: ok", command)
        return Response(command, topic, _payload(transaction, "ok", data, None), correlation_data)

    def _response_topic_allowed(self, topic: str) -> bool:
        prefix = self.topics.response("")
        if topic.startswith(prefix) and len(topic) > len(prefix) and not any(c in topic for c in "#+\x00"):
            return True
        log.warning("ignored a response topic outside %s (answering on the default topic)", prefix)
        return False

    def _authenticate(self, command: str, request: dict[str, Any]) -> None:
        if self._verifier is None:
            if self._allow_unsigned:
                return
            log.warning("refused %s request: signing is required and no mqtt.hmac_key_file is set", command)
            raise _Refused(
                f"{command}: signing is required; this gateway has no mqtt.hmac_key_file and refuses "
                "unsigned requests (see docs/integrators.md)"
            )
        try:
            self._verifier.verify(request, self.topics.request(command))
        except SignatureError as exc:
            log.warning("refused %s request: %s", command, exc)
            raise _Refused(str(exc)) from None

    # ---- helpers -----------------------------------------------------------------------------

    def _parse_items(self, items: Sequence[dict[str, Any]], where: str = "credentials") -> list[CredentialFields]:
        parsed: list[CredentialFields] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                fields = parse_credential_fields(item, self._zone)
            except FieldError as exc:
                raise _Refused(f"{where}[{index}].{exc.field}: {exc.problem}") from None
            first = seen.setdefault(fields["id"], index)
            if first != index:
                raise _Refused(f"{where}[{index}].id: {fields['id']!r} also appears at {where}[{first}]")
            parsed.append(fields)
        return parsed

    async def _change(self, job: Callable[[Store], dict[str, Any]]) -> dict[str, Any]:
        """Commit a change on the worker thread; then bring the running policy up to date, then answer."""

        def committed(store: Store) -> dict[str, Any]:
            data = job(store)
            version, digest = store.version_and_digest()
            return {**data, "version": version, "digest": digest}

        try:
            data = await self.writer.run(committed)
        except (sqlite3.Error, OSError) as exc:  # a full or read-only disk: say so, never "internal error"
            cause = describe_storage_error(exc, self._state_dir)
            log.warning("credential change not committed: %s", cause)
            raise _Refused(f"the credential store cannot commit ({cause}); nothing changed") from None
        await self._ops.credentials_changed()
        self._publisher.info_changed()
        return data

    # ---- commands ----------------------------------------------------------------------------

    async def _health_check(self, _: HealthCheck) -> dict[str, Any]:
        return self._ops.health()

    async def _upsert(self, request: Upsert) -> dict[str, Any]:
        now = self._clock()

        def upsert(store: Store) -> dict[str, Any]:
            items = self._parse_items(request.credentials)
            return {"count": len(store.upsert([dict(item) for item in items], by=request.by, now=now))}

        return await self._change(upsert)

    async def _remove(self, request: Remove) -> dict[str, Any]:
        now = self._clock()

        def remove(store: Store) -> dict[str, Any]:
            store.remove(request.id, by=request.by, now=now, force=request.force)
            return {"id": request.id}

        return await self._change(remove)

    async def _set_status(self, request: SetStatus) -> dict[str, Any]:
        now = self._clock()

        def set_status(store: Store) -> dict[str, Any]:
            credential = store.set_status(
                request.id, Status(request.status), by=request.by, now=now, reason=request.reason
            )
            return {"id": credential.id, "status": str(credential.status)}

        return await self._change(set_status)

    async def _replace(self, request: Replace) -> dict[str, Any]:
        new_uid = ""
        if request.new_uid.strip():
            try:
                normalise_uid(request.new_uid)
                new_uid = request.new_uid.strip()  # the store keeps the form (a printed fob number) too
            except UidError:
                raise _Refused("new_uid: not a card number (hex, a 10-digit fob number or FFF,CCCCC)") from None
        now = self._clock()

        def replace(store: Store) -> dict[str, Any]:
            credential = store.replace(request.id, new_uid, by=request.by, now=now, new_id=request.new_id)
            return {"id": credential.id, "replaced": request.id, "issue_no": credential.issue_no}

        return await self._change(replace)

    async def _snapshot_page(self, request: Snapshot) -> dict[str, Any]:
        if request.page > request.pages:
            raise _Refused(f"page: {request.page} is beyond pages ({request.pages})")
        items = await self.writer.run(lambda _: self._parse_items(request.credentials))
        try:
            assembled = self._snapshots.add_page(request.version, request.page, request.pages, items)
        except SnapshotRefused as exc:
            raise _Refused(str(exc)) from None
        if isinstance(assembled, dict):
            return assembled
        now = self._clock()

        def replace_all(store: Store) -> dict[str, Any]:
            return {"count": store.replace_all([dict(item) for item in assembled], by=request.by, now=now)}

        data = await self._change(replace_all)
        return {"snapshot": request.version, "pages": request.pages, "complete": True, **data}

    async def _get(self, request: Get) -> dict[str, Any]:
        credential = self._store.get(request.id)
        if credential is None:
            raise _Refused(f"unknown credential {request.id!r}")
        return credential_data(credential, self._site_key)

    async def _open(self, request: Open) -> dict[str, Any]:
        authorizers = [a.model_dump(exclude_none=True) for a in request.authorizers]
        return await self._ops.open_locker(request.locker, request.operator, request.reason, authorizers)

    async def _set_service(self, request: SetService) -> dict[str, Any]:
        return await self._ops.set_locker_service(request.locker, request.service, request.by)

    async def _assign(self, request: Assign) -> dict[str, Any]:
        return await self._ops.assign_locker(request.locker, request.credential, request.by)

    async def _release(self, request: Release) -> dict[str, Any]:
        return await self._ops.release_locker(request.locker, request.by)

    async def _replay(self, request: Replay) -> dict[str, Any]:
        return self._publisher.replay(request.from_seq)


def _parse_json(payload: bytes) -> Any:
    """The request as JSON, refused as bad input when it is not JSON or is nested too deeply."""
    try:
        value = json.loads(payload)
    except RecursionError:
        raise _Refused(f"payload is nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(f"payload is not valid JSON: {exc}") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise _Refused(f"payload is nested more than {MAX_DEPTH} levels deep")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _payload(transaction: Any, status: str, data: dict[str, Any], error: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"transaction": transaction, "status": status, "data": data}
    if error is not None:
        payload["error"] = error
    return payload
