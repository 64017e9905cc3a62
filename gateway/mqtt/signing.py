"""Signed requests (SPEC §7): every request except `health_check` and `events/replay` — whatever changes
state, opens a door or reads a credential — must carry `issued_at`, `nonce` and `hmac` made with the key
in `mqtt.hmac_key_file` (at least 32 bytes). Without a key such requests are refused, unless
`mqtt.allow_unsigned_requests` (demo only) is set.

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
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.events import canonical_json

#: The only commands that need no signature: they change nothing and reveal no credential.
UNSIGNED_COMMANDS = frozenset({"health_check", "events/replay"})
SIGNATURE_FIELDS = ("issued_at", "nonce", "hmac")
WINDOW_S = 30.0
NONCE_MAX_LEN = 128
#: A shorter request-signing key stops start-up.
MIN_KEY_BYTES = 32
#: Epoch seconds beyond this (the year 10000) are not a time anyone signs at.
MAX_EPOCH_S = 253_402_300_800
_HEX_MAC = re.compile(r"^[0-9a-fA-F]{64}$")


def needs_signature(command: str) -> bool:
    return command not in UNSIGNED_COMMANDS


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
        if isinstance(value, float) and not math.isfinite(value):
            raise SignatureError("issued_at: must be a finite number of seconds")
        if not -MAX_EPOCH_S <= value <= MAX_EPOCH_S:
            raise SignatureError("issued_at: out of range (epoch seconds)")
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except (ValueError, OverflowError):
            raise SignatureError("issued_at: not an ISO 8601 date-time or epoch seconds") from None
        if moment.tzinfo is None:
            raise SignatureError("issued_at: needs a UTC offset or Z")
        try:
            return moment.timestamp()
        except (OverflowError, ValueError):
            raise SignatureError("issued_at: out of range") from None
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
        if not isinstance(mac, str) or not _HEX_MAC.match(mac):
            raise SignatureError("hmac: must be a hex string of 64 digits (HMAC-SHA256)")
        if not isinstance(nonce, str) or not nonce or len(nonce) > NONCE_MAX_LEN:
            raise SignatureError(f"nonce: must be a non-empty string of at most {NONCE_MAX_LEN} characters")
        issued = issued_at_seconds(request["issued_at"])
        body = {k: v for k, v in request.items() if k != "hmac"}
        try:
            expected = signature(_signed_content(body, topic), self._key)
        except (UnicodeError, ValueError, RecursionError):
            raise SignatureError("request holds text that cannot be encoded as UTF-8 (lone surrogate)") from None
        if not hmac.compare_digest(expected, mac.lower()):
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
