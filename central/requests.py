"""Requests from central to gateways (SPEC §7–§8): `GatewayRequestLink` implements
`central.context.GatewayRequests` over its own MQTT 5 connection. It is the one sender of a central
process: the worker owns it (`Worker.requests`) and the HTTP API (a remote opening), gap repair's
`events/replay` and the credential pusher all send through it.

It has its own clean-session connection rather than riding on the worker's paho session: that session is
persistent with manual acknowledgement, and what it receives passes through the batch pipeline, which
waits up to `batch_ms` and stalls while the database is unreachable; a gateway's answer needs neither
persistence nor the database, and must not wait behind a batch.

Each request is published on `{prefix}/{site}/{gateway}/request/{command}`, signed with the site's key
from `[signing]` (the request topic is covered by the signature; a command that needs a signature — all but
`health_check` and `events/replay` — is never sent unsigned), with an MQTT 5 response topic under
that gateway's `{base}/response/` — `{base}/response/central/{client id}`, which only this link
subscribes to — and random correlation data, also sent as the `transaction`. The gateway's answer is
matched by either; a request not answered within its timeout raises `GatewayTimeout`.

The link reconnects by itself; while it is down, a request fails at once rather than waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from types import TracebackType
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central import metrics
from central.config import CentralSettings
from central.context import GatewayTimeout, GatewayUnavailable
from gateway.mqtt.link import CONNECT_TIMEOUT_S, LinkError, parse_url, password, tls_context
from gateway.mqtt.signing import needs_signature, sign
from gateway.mqtt.topics import Topics

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0


class GatewayRequestLink:
    """`async with GatewayRequestLink(settings) as link: await link.request(site, gw, command, body)`."""

    def __init__(self, settings: CentralSettings) -> None:
        self._settings = settings
        self._prefix = settings.mqtt.topic_prefix
        self.client_id = f"{settings.central.id}-requests"
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def response_topic(self, site: str, gateway: str) -> str:
        return f"{Topics.of(self._prefix, site, gateway).base}/response/central/{self.client_id}"

    async def __aenter__(self) -> GatewayRequestLink:
        self._task = asyncio.create_task(self._run(), name="central-requests")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_pending("central is stopping")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        try:
            key = self._settings.signing.key_for(site)
        except OSError as exc:
            path = self._settings.signing.key_file_for(site)
            raise ValueError(f"cannot read the signing key for site {site!r} ({path}): {exc.strerror}") from None
        if key is None and needs_signature(command):
            raise ValueError(f"no signing key for site {site!r}: set [signing] hmac_key_file in central.toml")
        client = self._client
        if client is None or not self._connected.is_set():
            raise GatewayUnavailable(f"central is not connected to the broker ({self._settings.mqtt.url})")
        correlation = secrets.token_bytes(16)
        topic = Topics.of(self._prefix, site, gateway).request(command)
        payload = {**body, "transaction": correlation.hex()}
        if key is not None:  # every request is signed when a key is set; read-only ones need not be
            payload = sign(payload, key, topic=topic)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = self.response_topic(site, gateway)
        properties.CorrelationData = correlation
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = answer
        try:
            try:
                await client.publish(topic, json.dumps(payload).encode(), qos=1, properties=properties)
            except aiomqtt.MqttError as exc:
                raise GatewayUnavailable(f"cannot publish to the broker: {exc}") from None
            try:
                async with asyncio.timeout(timeout_s):
                    return await answer
            except TimeoutError:
                raise GatewayTimeout(
                    f"gateway {gateway} of site {site} did not answer {command} within {timeout_s:g} s"
                ) from None
        finally:
            self._pending.pop(correlation, None)

    async def replay(self, site: str, gateway: str, from_seq: int) -> None:
        """Ask a gateway to re-publish its journal from `from_seq` (gap repair). Signed when a key is
        configured (the gateway does not require it for this command, but accepts it). Not waited for: the
        events themselves are the answer; while the broker is away nothing is sent and repair retries."""
        client = self._client
        if client is None or not self._connected.is_set():
            log.warning("not connected to the broker: no events/replay to %s/%s this time", site, gateway)
            return
        topic = Topics.of(self._prefix, site, gateway).request("events/replay")
        body: dict[str, Any] = {"transaction": f"central-replay-{secrets.token_hex(8)}", "from_seq": from_seq}
        try:
            key = self._settings.signing.key_for(site)
        except OSError as exc:
            log.error("cannot read the signing key for site %s: %s", site, exc.strerror)
            key = None
        if key is not None:
            body = sign(body, key, topic=topic)
        try:
            await client.publish(topic, json.dumps(body).encode(), qos=1)
        except aiomqtt.MqttError as exc:
            log.warning("events/replay to %s/%s not sent: %s", site, gateway, exc)
            return
        metrics.REPLAYS_SENT.inc()
        log.info("asked %s/%s to replay from seq %d", site, gateway, from_seq)

    # ---- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                client = self._client_for_broker()
                async with client:
                    await client.subscribe(f"{self._prefix}/+/+/response/central/{self.client_id}", qos=1)
                    self._client = client
                    self._connected.set()
                    delay = RECONNECT_MIN_S
                    log.info("request link connected to %s as %s", self._settings.mqtt.url, self.client_id)
                    async for message in client.messages:
                        self._answer(message)
            except aiomqtt.MqttError as exc:
                log.warning("request link: %s; reconnecting in %.1f s", exc, delay)
            except LinkError as exc:
                log.error("request link: %s", exc)
            finally:
                self._client = None
                self._connected.clear()
            self._fail_pending("the broker connection was lost before the gateway answered")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _client_for_broker(self) -> aiomqtt.Client:
        """A fresh MQTT 5 client for `[mqtt]` (clean session: answers are not worth keeping across a restart)."""
        section = self._settings.mqtt
        address = parse_url(section.url)
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=section.username or None,
            password=password(section),
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=section.keepalive,
            tls_context=tls_context(section) if address.tls else None,
        )
        client._client.connect_timeout = CONNECT_TIMEOUT_S
        return client

    def _answer(self, message: aiomqtt.Message) -> None:
        raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        try:
            response = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("ignored a response that is not JSON on %s", message.topic)
            return
        if not isinstance(response, dict):
            return
        correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
        if not isinstance(correlation, bytes):
            transaction = response.get("transaction")
            try:
                correlation = bytes.fromhex(transaction) if isinstance(transaction, str) else None
            except ValueError:
                correlation = None
        answer = self._pending.get(correlation) if correlation is not None else None
        if answer is not None and not answer.done():
            answer.set_result(response)

    def _fail_pending(self, reason: str) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(GatewayUnavailable(reason))
