"""Requests from central to gateways (SPEC §7), signed with the site's key, and their responses.

`GatewayRequestSender` implements `central.context.GatewayRequests` for the HTTP API (a remote opening)
and sends gap repair's `events/replay`. Responses arrive on `{base}/response/#` (every worker subscribes,
not shared) and are matched to the waiting caller by site, gateway and `transaction`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from central import metrics
from central.config import SigningSection
from central.context import GatewayUnavailable
from central.mqtt_session import Delivery, MqttSession
from central.topics import parse_topic
from gateway.events import uuid7
from gateway.mqtt.signing import needs_signature, sign
from gateway.mqtt.topics import Topics

log = logging.getLogger(__name__)


class GatewayRequestSender:
    def __init__(self, session: MqttSession, signing: SigningSection, prefix: str) -> None:
        self._session = session
        self._signing = signing
        self._prefix = prefix
        self._pending: dict[tuple[str, str, str], asyncio.Future[dict[str, Any]]] = {}

    async def request(
        self, site: str, gateway: str, command: str, body: dict[str, Any], *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Send a §7 request (signed with the site's key) and await the gateway's response."""
        if not self._session.connected:
            raise GatewayUnavailable("central is not connected to the broker")
        topic = Topics.of(self._prefix, site, gateway).request(command)
        transaction = body.get("transaction") or f"central-{uuid7()}"
        payload = self.signed(site, topic, {**body, "transaction": transaction})
        if needs_signature(command) and "hmac" not in payload:
            raise ValueError(f"no signing key for site {site!r}: set [signing] hmac_key_file")
        key = (site, gateway, json.dumps(transaction, sort_keys=True))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self._session.publish(topic, json.dumps(payload).encode())
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise GatewayUnavailable(f"{site}/{gateway} did not answer {command} within {timeout_s:g} s") from None
        finally:
            self._pending.pop(key, None)

    def replay(self, site: str, gateway: str, from_seq: int) -> None:
        """Ask a gateway to re-publish its journal from `from_seq` (signed when a key is configured: the
        gateway does not require it for this command, but accepts it). Its answer needs no waiting for:
        the events themselves are the answer."""
        topic = Topics.of(self._prefix, site, gateway).request("events/replay")
        body = self.signed(site, topic, {"transaction": f"central-replay-{uuid7()}", "from_seq": from_seq})
        self._session.publish(topic, json.dumps(body).encode())
        metrics.REPLAYS_SENT.inc()
        log.info("asked %s/%s to replay from seq %d", site, gateway, from_seq)

    def signed(self, site: str, topic: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body` signed for `topic` with the site's key; unsigned when none is configured or readable."""
        try:
            key = self._signing.key_for(site)
        except OSError as exc:
            log.error("cannot read the signing key for site %s: %s", site, exc.strerror)
            return body
        return sign(body, key, topic=topic) if key else body

    def answer(self, delivery: Delivery) -> bool:
        """Hand a response to the caller waiting for it; True for any message on a response topic."""
        where = parse_topic(self._prefix, delivery.topic)
        if where is None or where.channel != "response":
            return False
        try:
            payload = json.loads(delivery.payload)
        except ValueError:
            return True
        if isinstance(payload, dict):
            key = (where.site, where.gateway, json.dumps(payload.get("transaction"), sort_keys=True))
            future = self._pending.get(key)
            if future is not None and not future.done():
                future.set_result(payload)
        return True
