"""The event envelope (SPEC §7): canonical JSON, the hash chain, ids and timestamps."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

SCHEMA = "lockergw.event/1"
GENESIS_HASH = "0" * 64

#: Envelope fields excluded from the hash: `hash` itself and `historical` (a delivery attribute).
UNHASHED_FIELDS = frozenset({"hash", "historical"})

EVENT_KINDS = (
    "access.granted",
    "access.denied",
    "override.pending",
    "credential.lost_presented",
    "reader.lockout",
    "locker.allocated",
    "locker.released",
    "locker.service",
    "door.opened",
    "door.closed",
    "door.left_open",
    "door.forced_open",
    "unlock.failed",
    "reader.online",
    "reader.offline",
    "reader.fault",
    "board.online",
    "board.offline",
    "credentials.changed",
    "gateway.started",
    "gateway.stopped",
    "journal.unavailable",
)


def canonical_json(obj: Any) -> bytes:
    """The byte form every hash is taken over (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(envelope: dict[str, Any]) -> str:
    """SHA-256 of the envelope minus `hash` and `historical`."""
    body = {k: v for k, v in envelope.items() if k not in UNHASHED_FIELDS}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562) as text; Python 3.11 has no uuid.uuid7."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def format_ts(at: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: 2026-11-28T10:11:12.345Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def verify_chain(envelopes: list[dict[str, Any]], prev_hash: str = GENESIS_HASH) -> str | None:
    """Check hashes and links of consecutive envelopes; return a description of the first fault or None."""
    expected_seq: int | None = None
    for env in envelopes:
        seq = env.get("seq")
        if expected_seq is not None and seq != expected_seq:
            return f"seq {seq} follows {expected_seq - 1}: gap or reorder"
        if env.get("prev_hash") != prev_hash:
            return f"seq {seq}: prev_hash does not link to the previous event"
        if event_hash(env) != env.get("hash"):
            return f"seq {seq}: hash does not match its content"
        prev_hash = env["hash"]
        expected_seq = int(seq) + 1 if isinstance(seq, int) else None
    return None
