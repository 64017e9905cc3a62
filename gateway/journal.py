"""The durable, hash-chained event journal and the gateway's runtime state (SPEC §7–§8).

One SQLite file, `journal.db` in `state_dir`, WAL mode, `synchronous=FULL`: an `append` has reached
the disk when it returns, so the caller may then energise a lock. The daemon is its only writer;
the CLI's reports and `events/replay` read it.

Runtime state that must survive a restart and must change atomically with the events that
announce it lives here too: shared-locker occupants, locker service state, reader lockouts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

#: The envelope fields every event has (None when they do not apply), besides the chain fields.
STANDARD_FIELDS = ("reader", "locker", "credential", "reason", "override", "unlock")


@dataclass(frozen=True, slots=True)
class LockerState:
    service: str = "in_service"
    occupant: str | None = None  # credential id holding a shared locker


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A runtime-state change committed in the same transaction as the events it goes with.

    `key` is a namespaced name: "locker:<id>" (value: {"service", "occupant"}),
    "reader:<id>" (value: the reader's persisted lockout state as JSON-able dict), or any
    other "meta:<name>". A value of None deletes the key.
    """

    key: str
    value: Any


class Journal:
    """Open with `Journal.open(state_dir, site=..., gateway=..., boot_id=...)`; use as a context manager."""

    @classmethod
    def open(cls, state_dir: Path, *, site: str, gateway: str, boot_id: str) -> Journal:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self, records: Sequence[Mapping[str, Any]], at: datetime, state: Sequence[StateWrite] = ()
    ) -> list[dict[str, Any]]:
        """Journal events (and state changes) in one durable transaction; return their envelopes.

        Each record has "kind" plus any of STANDARD_FIELDS and kind-specific extras (e.g. "authorizers",
        "door", "bad_frames"). The journal fills schema, event_id, site, gateway, seq, boot_id, ts,
        prev_hash and hash. `seq` continues from the last committed event, also after a crash.
        """
        raise NotImplementedError

    @property
    def last_seq(self) -> int:
        raise NotImplementedError

    def read(self, from_seq: int, limit: int = 500) -> list[dict[str, Any]]:
        """Envelopes with seq >= from_seq, in order (without `historical`)."""
        raise NotImplementedError

    def unsent(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Envelopes not yet acknowledged by the broker, seq > after_seq, in order."""
        raise NotImplementedError

    def mark_sent(self, seqs: Iterable[int]) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        """How many events wait for the broker."""
        raise NotImplementedError

    def prune(self, now: datetime, retention_days: int, max_bytes: int) -> int:
        """Delete sent events older than the retention period (and the oldest sent ones beyond max_bytes).
        Never deletes an unsent event. Returns how many were deleted. The chain stays verifiable from
        the first kept event (its prev_hash is kept)."""
        raise NotImplementedError

    def verify(self) -> str | None:
        """Recompute every hash and link of what is kept; None if intact, else the first fault."""
        raise NotImplementedError

    def get_state(self, prefix: str) -> dict[str, Any]:
        """All runtime-state entries whose key starts with `prefix` (key → value)."""
        raise NotImplementedError

    def put_state(self, writes: Sequence[StateWrite]) -> None:
        """Commit state changes that have no event of their own."""
        raise NotImplementedError
