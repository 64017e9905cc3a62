"""Signed requests (SPEC §7): with `mqtt.hmac_key_file` set, a request that changes state or opens a door
must carry `issued_at`, `nonce` and `hmac`.

The recipe (docs/integrators.md shows it in full):

    body = the request object without its "hmac" member (issued_at and nonce included)
    hmac = hex(HMAC-SHA256(key, canonical_json(body)))

`canonical_json` is `gateway.events.canonical_json`: sorted keys at every level, no spaces, UTF-8.
The key is the content of the key file with surrounding whitespace removed, as UTF-8 bytes.
A request is refused when it is more than `window_s` (30 s) older or newer than the gateway's clock,
when its nonce was already used within that window, or when the signature does not match.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.events import canonical_json

#: Commands that change state or open a door; only these need a signature.
SIGNED_COMMANDS = frozenset(
    {
        "credentials/upsert",
        "credentials/remove",
        "credentials/set_status",
        "credentials/replace",
        "credentials/snapshot",
        "lockers/open",
        "lockers/set_service",
        "lockers/assign",
        "lockers/release",
    }
)
SIGNATURE_FIELDS = ("issued_at", "nonce", "hmac")
WINDOW_S = 30.0
NONCE_MAX_LEN = 128
#: More nonces than this inside one window means a flood; refuse rather than grow without bound.
MAX_REMEMBERED_NONCES = 200_000


class SignatureError(Exception):
    """A signed request that must be refused; the message says why in one line."""


def signature(body: dict[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 of the canonical JSON of `body` (the request without "hmac")."""
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


def sign(
    request: dict[str, Any],
    key: bytes,
    *,
    issued_at: float | str | None = None,
    nonce: str | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """A copy of `request` with issued_at (integer epoch seconds by default), nonce and hmac added.

    `topic` (the request topic it is published to, e.g. "lockers/north-school/gw-01/request/lockers/open")
    is covered by the signature but not added to the payload: a request signed for one command, or for
    one gateway, is refused as any other."""
    body = {k: v for k, v in request.items() if k != "hmac"}
    body["issued_at"] = int(time.time()) if issued_at is None else issued_at
    body["nonce"] = nonce or secrets.token_hex(16)
    return {**body, "hmac": signature(_signed_content(body, topic), key)}


def _signed_content(body: dict[str, Any], topic: str | None) -> dict[str, Any]:
    return body if topic is None else {**body, "topic": topic}


def issued_at_seconds(value: Any) -> float:
    """`issued_at` as epoch seconds: a number of seconds, or an ISO 8601 date-time with an offset or Z."""
    if isinstance(value, bool):
        raise SignatureError("issued_at: must be epoch seconds or an ISO 8601 date-time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise SignatureError("issued_at: must be a finite number of seconds")
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise SignatureError("issued_at: not an ISO 8601 date-time or epoch seconds") from None
        if moment.tzinfo is None:
            raise SignatureError("issued_at: needs a UTC offset or Z")
        return moment.timestamp()
    raise SignatureError("issued_at: must be epoch seconds or an ISO 8601 date-time")


class RequestVerifier:
    """Checks signatures, freshness and nonces. One per gateway run (nonces are held in memory)."""

    def __init__(self, key: bytes, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        if not key:
            raise ValueError("the request signing key is empty")
        self._key = key
        self._window = window_s
        self._clock = clock
        self._nonces: dict[str, float] = {}  # nonce → when it may be forgotten
        self._swept_at = 0.0
        # Nonces are remembered in memory only, so a request issued before this run started could be
        # replayed after a restart: such requests are refused (with a second's grace for rounding).
        self._started = clock()

    def verify(self, request: dict[str, Any], topic: str | None = None) -> None:
        """Raise SignatureError unless `request` is signed with the key (for the request `topic` it
        arrived on), fresh and not seen before."""
        missing = [name for name in SIGNATURE_FIELDS if name not in request]
        if missing:
            raise SignatureError(f"unsigned request: missing {', '.join(missing)} (signing is required)")
        mac, nonce = request["hmac"], request["nonce"]
        if not isinstance(mac, str):
            raise SignatureError("hmac: must be a hex string")
        if not isinstance(nonce, str) or not nonce or len(nonce) > NONCE_MAX_LEN:
            raise SignatureError(f"nonce: must be a non-empty string of at most {NONCE_MAX_LEN} characters")
        issued = issued_at_seconds(request["issued_at"])
        body = {k: v for k, v in request.items() if k != "hmac"}
        if not hmac.compare_digest(signature(_signed_content(body, topic), self._key), mac.lower()):
            raise SignatureError("bad signature (hmac does not match the request)")
        now = self._clock()
        skew = now - issued
        if abs(skew) > self._window:
            direction = "old" if skew > 0 else "in the future"
            raise SignatureError(
                f"stale request: issued_at is {abs(skew):.0f} s {direction} (limit {self._window:.0f} s)"
            )
        if issued < self._started - 1.0:
            raise SignatureError("issued before the gateway (re)started: sign it again and resend")
        self._forget_expired(now)
        if nonce in self._nonces:
            raise SignatureError("replayed request: this nonce was already used")
        if len(self._nonces) >= MAX_REMEMBERED_NONCES:
            raise SignatureError("too many signed requests within the freshness window; try again shortly")
        # Once issued_at is outside the window the request is stale anyway; until then, remember it.
        self._nonces[nonce] = issued + self._window + 1

    def _forget_expired(self, now: float) -> None:
        if now - self._swept_at < 1.0:
            return
        self._swept_at = now
        expired = [n for n, until in self._nonces.items() if until < now]
        for nonce in expired:
            del self._nonces[nonce]
