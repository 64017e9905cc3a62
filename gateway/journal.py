"""The durable, hash-chained event journal and the gateway's runtime state (SPEC §7–§8).

One SQLite file, `journal.db` in `state_dir`, WAL mode, `synchronous=FULL`: an `append` has reached
the disk when it returns, so the caller may then energise a lock. The daemon is its only writer;
the CLI's reports and `events/replay` read it.

Appends go through a connection of their own, behind a lock, so that the daemon may run them on a
dedicated writer thread (group commit, gateway.journal_writer) while the event loop keeps reading
through the other connection — which never sees an event before its transaction has committed.

Runtime state that must survive a restart and must change atomically with the events that
announce it lives here too: shared-locker occupants, locker service state, reader lockouts.

The chain: every envelope carries `prev_hash` (the previous event's `hash`; 64 zeros before seq 1)
and its own `hash` (gateway.events.event_hash). The journal keeps the tail (last seq and hash) in
memory after opening, so an append costs one transaction and no lookups. Pruning deletes a prefix
of sent events only and records a chain anchor — the first kept seq and its `prev_hash` — so what
is kept still verifies, and seq never restarts even when every old event is gone.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.events import EVENT_KINDS, GENESIS_HASH, SCHEMA, canonical_json, event_hash, format_ts, uuid7
from gateway.sqlite import open_database, write_transaction

#: The envelope fields every event has (None when they do not apply), besides the chain fields.
STANDARD_FIELDS = ("reader", "locker", "credential", "reason", "override", "unlock")

DATABASE_FILE = "journal.db"
#: The journal is written at the tail and read near it: a small page cache (SQLite's default is
#: 2 MB per connection; KiB when negative) is plenty.
JOURNAL_PRAGMAS = ("cache_size = -1024",)

#: Envelope fields the journal fills in; a record must not carry them.
CHAIN_FIELDS = frozenset(
    {"schema", "event_id", "site", "gateway", "seq", "boot_id", "ts", "prev_hash", "hash", "historical"}
)
_KINDS = frozenset(EVENT_KINDS)
#: Events verified per read while walking the chain (bounds memory on a large journal).
_VERIFY_BATCH = 2000

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts TEXT NOT NULL,
            envelope TEXT NOT NULL,
            hash TEXT NOT NULL,
            sent INTEGER NOT NULL DEFAULT 0,
            sent_at TEXT
        )""",
        "CREATE INDEX events_unsent ON events (seq) WHERE sent = 0",
        "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)


class JournalError(Exception):
    """The journal cannot be opened (unreadable file, a schema from a newer version)."""


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


@dataclass(frozen=True, slots=True)
class Group:
    """Records of one moment (one tap, one door report) and the state that changes with them."""

    records: Sequence[Mapping[str, Any]]
    at: datetime
    state: Sequence[StateWrite] = ()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A journaled event as stored: its envelope is canonical JSON text (gateway.events.canonical_json)."""

    seq: int
    kind: str
    text: str
    hash: str


@dataclass(frozen=True, slots=True)
class _Anchor:
    """Where the kept chain starts: the first kept seq and the hash it links to."""

    seq: int
    prev_hash: str


class Journal:
    """Open with `Journal.open(state_dir, site=..., gateway=..., boot_id=...)`; use as a context manager."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        *,
        site: str,
        gateway: str,
        boot_id: str,
        append_db: sqlite3.Connection | None = None,
    ) -> None:
        self._db = db
        #: The connection appends commit through (any thread, one at a time: `_append_lock`).
        self._append_db = append_db or db
        self._append_lock = threading.Lock()
        self.path = path
        self.site = site
        self.gateway = gateway
        self.boot_id = boot_id
        self._last_seq, self._last_hash = self._read_tail()

    @classmethod
    def open(cls, state_dir: Path, *, site: str, gateway: str, boot_id: str) -> Journal:
        path = Path(state_dir) / DATABASE_FILE
        db = open_database(path, _MIGRATIONS, JournalError, pragmas=JOURNAL_PRAGMAS)
        try:
            append_db = open_database(path, _MIGRATIONS, JournalError, pragmas=JOURNAL_PRAGMAS)
        except BaseException:
            db.close()
            raise
        try:
            return cls(db, path, site=site, gateway=gateway, boot_id=boot_id, append_db=append_db)
        except sqlite3.Error as exc:
            db.close()
            append_db.close()
            raise JournalError(f"cannot open {path}: {exc}") from None

    def close(self) -> None:
        with self._append_lock:
            if self._append_db is not self._db:
                self._append_db.close()
            self._db.close()

    def set_busy_timeout(self, milliseconds: int) -> None:
        """How long a commit waits for another process's write lock before it fails."""
        for db in {id(self._db): self._db, id(self._append_db): self._append_db}.values():
            db.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")

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
        Raises ValueError (and journals nothing) for an unknown kind, a chain field in a record,
        or a value that is not a string, integer, boolean, null, list or object (floats included).
        """
        return self.append_groups([Group(records, at, state)])[0]

    def append_groups(self, groups: Sequence[Group]) -> list[list[dict[str, Any]]]:
        """Group commit: journal several groups (each with its own time) in one durable transaction,
        seq following the order of `groups`; return each group's envelopes. Safe to call from any
        thread; appends never interleave."""
        with self._append_lock:
            seq, prev_hash = self._last_seq, self._last_hash
            result: list[list[dict[str, Any]]] = []
            rows: list[tuple[int, str, str, str, str, str]] = []
            writes: list[tuple[str, str | None]] = []
            for group in groups:
                ts = format_ts(group.at)
                envelopes: list[dict[str, Any]] = []
                for record in group.records:
                    seq += 1
                    envelope = self._envelope(record, seq=seq, ts=ts, prev_hash=prev_hash)
                    prev_hash = envelope["hash"]
                    envelopes.append(envelope)
                    text = canonical_json(envelope).decode("utf-8")
                    rows.append((seq, envelope["event_id"], envelope["kind"], ts, text, envelope["hash"]))
                writes.extend(
                    (write.key, None if write.value is None else _json_text(write.value, write.key))
                    for write in group.state
                )
                result.append(envelopes)
            db = self._append_db
            with write_transaction(db):
                db.executemany(
                    "INSERT INTO events (seq, event_id, kind, ts, envelope, hash) VALUES (?, ?, ?, ?, ?, ?)", rows
                )
                _write_state(db, writes)
            if rows:
                self._last_seq, self._last_hash = seq, prev_hash
            return result

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """The first kept seq (1, or the chain anchor after retention pruned earlier ones)."""
        row = self._db.execute("SELECT min(seq) FROM events").fetchone()
        return int(row[0]) if row and row[0] is not None else self._last_seq + 1

    def read(self, from_seq: int, limit: int = 500) -> list[dict[str, Any]]:
        """Envelopes with seq >= from_seq, in order (without `historical`)."""
        rows = self._db.execute(
            "SELECT envelope FROM events WHERE seq >= ? ORDER BY seq LIMIT ?", (from_seq, max(0, limit))
        )
        return [json.loads(row[0]) for row in rows]

    def unsent(self, after_seq: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """Envelopes not yet acknowledged by the broker, seq > after_seq, in order."""
        rows = self._db.execute(
            "SELECT envelope FROM events WHERE sent = 0 AND seq > ? ORDER BY seq LIMIT ?", (after_seq, max(0, limit))
        )
        return [json.loads(row[0]) for row in rows]

    def unsent_text(self, after_seq: int = 0, limit: int = 500) -> list[StoredEvent]:
        """`unsent` as stored — canonical JSON text, not decoded — for the publisher (no parse per event)."""
        rows = self._db.execute(
            "SELECT seq, kind, envelope, hash FROM events WHERE sent = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, max(0, limit)),
        )
        return [StoredEvent(int(seq), str(kind), str(text), str(hash_)) for seq, kind, text, hash_ in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        """Record broker acknowledgements. Not forced to disk: a mark lost in a power cut only means
        the event is published once more, and `event_id` makes that harmless."""
        sent_at = format_ts(datetime.now(UTC))
        rows = [(sent_at, seq) for seq in seqs]
        if not rows:
            return
        self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            with write_transaction(self._db):
                self._db.executemany("UPDATE events SET sent = 1, sent_at = ? WHERE seq = ? AND sent = 0", rows)
        finally:
            self._db.execute("PRAGMA synchronous = FULL")

    def backlog(self) -> int:
        """How many events wait for the broker."""
        count: int = self._db.execute("SELECT count(*) FROM events WHERE sent = 0").fetchone()[0]
        return count

    def prune(self, now: datetime, retention_days: int, max_bytes: int, *, unsent_too: bool = False) -> int:
        """Delete sent events older than the retention period (and the oldest sent ones beyond max_bytes).
        Never deletes an unsent event — unless `unsent_too`: a gateway with no broker configured has
        nobody to send to, so nothing is waiting and the same rules apply to every event. Returns how
        many were deleted. The chain stays verifiable from the first kept event (its prev_hash is kept)."""
        with write_transaction(self._db):
            first = self._db.execute("SELECT min(seq) FROM events").fetchone()[0]
            if first is None or first >= self._last_seq:
                return 0
            # Only a prefix goes, and never the newest event: the chain and seq carry on from it.
            limit = self._last_seq
            first_unsent = self._db.execute("SELECT min(seq) FROM events WHERE sent = 0").fetchone()[0]
            if first_unsent is not None and not unsent_too:
                limit = min(limit, first_unsent)
            expiry = format_ts(now - timedelta(days=retention_days))
            keep_from = self._db.execute(
                "SELECT seq FROM events WHERE seq >= ? AND seq < ? AND ts >= ? ORDER BY seq LIMIT 1",
                (first, limit, expiry),
            ).fetchone()
            cutoff = limit if keep_from is None else keep_from[0]
            cutoff = min(limit, max(cutoff, self._size_cutoff(first, max_bytes)))
            if cutoff <= first:
                return 0
            prev_hash = json.loads(
                self._db.execute("SELECT envelope FROM events WHERE seq = ?", (cutoff,)).fetchone()[0]
            )["prev_hash"]
            deleted = self._db.execute("DELETE FROM events WHERE seq < ?", (cutoff,)).rowcount
            self._db.execute(
                "INSERT INTO journal_meta (key, value) VALUES ('chain_anchor', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps({"seq": cutoff, "prev_hash": prev_hash}),),
            )
        return int(deleted)

    def verify(self) -> str | None:
        """Recompute every hash and link of what is kept; None if intact, else the first fault."""
        anchor = self._anchor()
        expected_seq = anchor.seq if anchor else 1
        prev_hash = anchor.prev_hash if anchor else GENESIS_HASH
        for seq, stored_hash, envelope in self._walk():
            if seq != expected_seq:
                return f"seq {seq} follows {expected_seq - 1}: events are missing"
            if envelope.get("seq") != seq:
                return f"seq {seq}: the envelope says seq {envelope.get('seq')}"
            if envelope.get("prev_hash") != prev_hash:
                return f"seq {seq}: prev_hash does not link to the previous event"
            if event_hash(envelope) != envelope.get("hash") or stored_hash != envelope.get("hash"):
                return f"seq {seq}: hash does not match its content"
            prev_hash = stored_hash
            expected_seq = seq + 1
        return None

    def get_state(self, prefix: str) -> dict[str, Any]:
        """All runtime-state entries whose key starts with `prefix` (key → value)."""
        rows = self._db.execute(
            "SELECT key, value FROM state WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
        )
        return {key: json.loads(value) for key, value in rows}

    def put_state(self, writes: Sequence[StateWrite]) -> None:
        """Commit state changes that have no event of their own."""
        rows = [(write.key, None if write.value is None else _json_text(write.value, write.key)) for write in writes]
        with write_transaction(self._db):
            _write_state(self._db, rows)

    # -- internals
    def _envelope(self, record: Mapping[str, Any], *, seq: int, ts: str, prev_hash: str) -> dict[str, Any]:
        kind = record.get("kind")
        if kind not in _KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        reserved = CHAIN_FIELDS.intersection(record)
        if reserved:
            raise ValueError(f"{kind}: the journal sets {', '.join(sorted(reserved))}; a record must not")
        envelope: dict[str, Any] = {
            "schema": SCHEMA,
            "event_id": uuid7(),
            "site": self.site,
            "gateway": self.gateway,
            "seq": seq,
            "boot_id": self.boot_id,
            "ts": ts,
            "kind": kind,
        }
        for name in STANDARD_FIELDS:
            envelope[name] = None
        for name, value in record.items():
            if name != "kind":
                envelope[name] = _plain(value, f"{kind}.{name}")
        envelope["prev_hash"] = prev_hash
        envelope["hash"] = event_hash(envelope)
        return envelope

    def _read_tail(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        anchor = self._anchor()
        # Everything pruned (prune keeps the newest event, so only a damaged file gets here).
        return (anchor.seq - 1, anchor.prev_hash) if anchor else (0, GENESIS_HASH)

    def _anchor(self) -> _Anchor | None:
        row = self._db.execute("SELECT value FROM journal_meta WHERE key = 'chain_anchor'").fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        return _Anchor(seq=int(value["seq"]), prev_hash=str(value["prev_hash"]))

    def _walk(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        after = -1
        while True:
            rows = self._db.execute(
                "SELECT seq, hash, envelope FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, _VERIFY_BATCH)
            ).fetchall()
            if not rows:
                return
            for seq, stored_hash, envelope in rows:
                yield int(seq), str(stored_hash), json.loads(envelope)
            after = rows[-1][0]

    def _size_cutoff(self, first: int, max_bytes: int) -> int:
        """The first seq to keep so that the file's used pages fit in max_bytes (estimated)."""
        page_size, pages, free = (
            int(self._db.execute(f"PRAGMA {name}").fetchone()[0])
            for name in ("page_size", "page_count", "freelist_count")
        )
        used = (pages - free) * page_size
        if used <= max_bytes:
            return first
        count = self._last_seq - first + 1  # seqs of what is kept are contiguous
        per_event = used / count
        # Free a tenth more than needed so that prune does not run at the edge every time.
        excess = used - max_bytes * 0.9
        return first + math.ceil(excess / per_event)


# ---- helpers -----------------------------------------------------------------------------------


def _plain(value: Any, path: str) -> Any:
    """A JSON value with no floats (canonical JSON must agree with RFC 8785); tuples become lists."""
    if value is None or value.__class__ in (str, int, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)  # a StrEnum member becomes its value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        raise ValueError(f"{path}: floating-point values are not allowed in events (use an integer or text)")
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: object keys must be text, not {type(key).__name__}")
            plain[key] = _plain(item, f"{path}.{key}")
        return plain
    raise ValueError(f"{path}: {type(value).__name__} is not a JSON value")


def _json_text(value: Any, key: str) -> str:
    return canonical_json(_plain(value, key)).decode("utf-8")


def _write_state(db: sqlite3.Connection, rows: Sequence[tuple[str, str | None]]) -> None:
    for key, value in rows:
        if value is None:
            db.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
