"""The credential store: SQLite `credentials.db` in `state_dir`, shared by the daemon and the CLI.

The running daemon looks each presented card up here (`by_key`, by the unique index on uid), so a
change is in force once committed. Every change bumps a revision and leaves a row in the change log,
which the daemon follows (`change_log(rev)`; it polls `rev`, one indexed read) and journals as
`credentials.changed`.

Several processes may write (the daemon's MQTT handlers, the CLI): every change is one
`BEGIN IMMEDIATE` transaction that reads what it checks against and writes in the same lock, so two
writers never both pass a duplicate check. WAL mode lets the daemon read while the CLI writes.

The SPEC §4 issuance rules (issue numbers, duplicates, uid clashes) live in gateway.issuance and
the set digest's recipe in gateway.credential_digest; the store loads what they need inside its
transaction, applies them and writes the outcome, keeping each row's share of the digest beside it.
A large upsert (a streamed CSV import) does this batch by batch inside its one transaction, so neither
the file nor the store is ever held in memory whole; a refused batch anywhere rolls everything back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from itertools import islice
from pathlib import Path
from typing import Any

from gateway.credential_digest import digest_text, share_hex, utc_text
from gateway.credential_input import CredentialFields, FieldError, parse_credential_fields
from gateway.credential_rows import (
    COLUMNS,
    MIGRATIONS,
    OUTSTANDING_SQL,
    SELECT,
    UPSERT_ROW,
    RowReader,
    row_of,
)
from gateway.credential_rows import credential_from_row as credential_from_row
from gateway.issuance import (
    BatchOutcome,
    IssuanceError,
    KnownCredentials,
    check_replaceable,
    issue_batch,
    replacement_id,
    successor,
)
from gateway.model import OUTSTANDING_STATUSES, Credential, Status
from gateway.sqlite import open_database, write_transaction
from gateway.uid import answer_keys, mask_uid

DATABASE_FILE = "credentials.db"
#: Page cache per connection: an import's batch touches a few tens of MB of table and index pages
#: (the pages it writes spill to the WAL file, not to memory, when the cache is full).
CACHE_KIB = 32_768

#: Items checked and written per step of an upsert: a large import is read, checked and written this
#: many at a time inside its one transaction, so its memory does not grow with the file.
BATCH_ITEMS = 20_000
#: Problems an UpsertRefused keeps (the first, in item order); it still counts every bad item.
MAX_PROBLEMS = 100

#: Called as progress(phase, done, total) while a large upsert runs; each batch goes through the phases
#: "checking" (each item's fields), "matching" (against the store: uids, duplicates, issue numbers)
#: and "writing". `done` counts items from the start of the upsert; `total` is 0 when the items are
#: streamed and their number is not known yet.
Progress = Callable[[str, int, int], None]


class StoreError(Exception):
    """A user error against the store (unknown id, duplicate without approval, ...): one plain line."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one item of an upsert cannot be applied. `index` is its position in the batch."""

    index: int
    field: str
    message: str


class UpsertRefused(StoreError):
    """An upsert that was refused as a whole; `problems` holds the first problem of each bad item, in
    item order, up to MAX_PROBLEMS of them; `count` is how many items were bad."""

    def __init__(self, problems: Sequence[Problem], ids: Mapping[int, str], count: int | None = None) -> None:
        self.problems = tuple(problems)
        self.count = len(self.problems) if count is None else count
        first = self.problems[0]
        who = ids.get(first.index) or f"item {first.index + 1}"
        more = self.count - 1
        tail = f" (and {more} more bad item{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{who}: {first.field}: {first.message}{tail}")


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item its source could not read (a CSV row with too many cells, a broken quote): the upsert
    refuses it as it stands, like an item with a bad field, and goes on checking the others."""

    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ChangeLogEntry:
    rev: int
    at: datetime
    by: str
    action: str  # "upsert" | "set_status" | "replace" | "remove" | "snapshot" | "import"
    ids: tuple[str, ...]  # every id the change touched, or the first `ids_limit` of them (`change_log`)
    reason: str | None
    count: int  # how many ids the change touched


@dataclass(frozen=True, slots=True)
class RawChanges:
    """What changed since a revision: credentials as database rows (see `Store.changed_rows`), removed
    ids, and the change log."""

    rev: int
    rows: list[tuple[Any, ...]]
    removed: tuple[str, ...]
    log: tuple[ChangeLogEntry, ...]


@dataclass(frozen=True, slots=True)
class ChangeLog:
    """The change log since a revision, up to `rev` (what the daemon journals as credentials.changed)."""

    rev: int
    log: tuple[ChangeLogEntry, ...]


#: Rows a change must touch before `changed_rows` scans the table instead of walking the rev index.
BULK_ROWS = 5000


@dataclass(frozen=True, slots=True)
class KeyHolding:
    """One outstanding key for a locker or key code: who holds it and under which issue number."""

    credential_id: str
    holder: str
    kind: str
    status: str
    issue_no: int


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert did. `credentials` are the items as stored, in batch order."""

    credentials: tuple[Credential, ...]
    added: int
    updated: int
    unchanged: int
    removed: int
    rev: int


#: SQLite's default limit on host parameters is 32766 (999 before 3.32); stay well under either.
_CHUNK = 900


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# ---- the store ---------------------------------------------------------------------------------


class Store:
    """Open with `Store.open(state_dir, zone=...)`; use as a context manager.

    `zone` is the gateway's time zone, in which upsert items' times without an offset are read
    (default UTC; the CLI and the MQTT handlers pass `settings.gateway.zone()`).
    """

    def __init__(self, connection: sqlite3.Connection, path: Path, zone: tzinfo) -> None:
        self._db = connection
        self.path = path
        self.zone = zone

    @classmethod
    def open(cls, state_dir: Path, *, zone: tzinfo | None = None, cache_kib: int = CACHE_KIB) -> Store:
        """`cache_kib`: the connection's page cache (the daemon's look-ups need far less than an import)."""
        path = Path(state_dir) / DATABASE_FILE
        connection = open_database(path, MIGRATIONS, StoreError, pragmas=[f"cache_size = -{cache_kib}"])
        return cls(connection, path, zone or UTC)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading
    def get(self, credential_id: str) -> Credential | None:
        row = self._db.execute(f"{SELECT} WHERE id = ?", (credential_id,)).fetchone()
        return None if row is None else credential_from_row(row)

    def has(self, credential_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM credentials WHERE id = ?", (credential_id,)).fetchone() is not None

    def by_uid(self, uid: str) -> Credential | None:
        """The credential with exactly this canonical uid (the policy's fob-number match rule aside)."""
        if not uid:
            return None
        row = self._db.execute(f"{SELECT} WHERE uid = ? AND uid != ''", (uid,)).fetchone()
        return None if row is None else credential_from_row(row)

    def by_key(self, key: str) -> Credential | None:
        """The credential a tap's look-up key finds (gateway.uid): a canonical uid, whatever form the
        credential was enrolled in, or a printed-form key (`dec:00CE754C`, `fc:CE754C`), which finds
        only a credential enrolled in that form. One look-up in the unique index on uid."""
        form, _, uid = key.rpartition(":")
        if not form:
            return self.by_uid(key)
        row = self._db.execute(f"{SELECT} WHERE uid = ? AND uid != '' AND uid_form = ?", (uid, form)).fetchone()
        return None if row is None else credential_from_row(row)

    def all(self) -> Iterator[Credential]:
        """Every credential, ordered by id (read as one consistent snapshot)."""
        cursor = self._db.execute(f"{SELECT} ORDER BY id")
        read = RowReader()
        try:
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    yield read(row)
        finally:
            cursor.close()

    def count(self, *, with_uid: bool = False) -> int:
        """How many credentials there are (`with_uid`: only those a card can find)."""
        query = "SELECT count(*) FROM credentials" + (" WHERE uid != ''" if with_uid else "")
        value: int = self._db.execute(query).fetchone()[0]
        return value

    def ids(self) -> Iterator[str]:
        """Every credential id, in order (streamed)."""
        return self._column("SELECT id FROM credentials ORDER BY id")

    def uids(self) -> Iterator[str]:
        """Every uid a card can be found by, in order (streamed)."""
        return self._column("SELECT uid FROM credentials WHERE uid != '' ORDER BY uid")

    def _column(self, query: str) -> Iterator[str]:
        cursor = self._db.execute(query)
        try:
            while rows := cursor.fetchmany(1000):
                for (value,) in rows:
                    yield value
        finally:
            cursor.close()

    @property
    def rev(self) -> int:
        return _current_rev(self._db)

    def changed_rows(self, rev: int, columns: Sequence[str] = COLUMNS) -> RawChanges:
        """What changed after `rev`, with credentials as raw rows (`credential_from_row` turns one
        into a Credential)."""
        with _read_transaction(self._db):
            current = _current_rev(self._db)
            changed: int = self._db.execute("SELECT count(*) FROM credentials WHERE rev > ?", (rev,)).fetchone()[0]
            # Few changed rows: by the rev index. Many (an import, a snapshot): one table scan.
            source = "credentials" if changed < BULK_ROWS else "credentials NOT INDEXED"
            rows = self._db.execute(f"SELECT {', '.join(columns)} FROM {source} WHERE rev > ?", (rev,)).fetchall()
            removed = tuple(
                row[0] for row in self._db.execute("SELECT id FROM removals WHERE rev > ? ORDER BY rev, id", (rev,))
            )
            log = self._log_since(rev)
        return RawChanges(rev=current, rows=rows, removed=removed, log=log)

    def change_log(self, rev: int, ids_limit: int = 50) -> ChangeLog:
        """The change log after `rev`, read in one transaction with the revision it reaches; each entry
        with only its first `ids_limit` ids (a million-row import's entry lists them all, and is cut
        down by SQLite, which does not hold Python's GIL meanwhile)."""
        with _read_transaction(self._db):
            return ChangeLog(rev=_current_rev(self._db), log=self._log_since(rev, ids_limit))

    def _log_since(self, rev: int, ids_limit: int | None = None) -> tuple[ChangeLogEntry, ...]:
        ids = "ids"
        if ids_limit is not None:
            ids = (
                f"CASE WHEN json_array_length(ids) <= {int(ids_limit)} THEN ids ELSE (SELECT json_group_array(value) "
                f"FROM (SELECT value FROM json_each(change_log.ids) LIMIT {int(ids_limit)})) END"
            )
        return tuple(
            ChangeLogEntry(
                rev=row[0],
                at=datetime.fromisoformat(row[1]),
                by=row[2],
                action=row[3],
                ids=tuple(json.loads(row[4])),
                reason=row[5],
                count=row[6],
            )
            for row in self._db.execute(
                f"SELECT rev, at, by, action, {ids}, reason, json_array_length(ids) FROM change_log "
                "WHERE rev > ? ORDER BY rev",
                (rev,),
            )
        )

    def version_and_digest(self) -> tuple[int, str]:
        """The credential-set version (the revision) and a SHA-256-based digest over the set's content."""
        with _read_transaction(self._db):
            current = _current_rev(self._db)
            digest: str = self._db.execute("SELECT value FROM set_digest WHERE id = 1").fetchone()[0]
        return current, digest

    def keys_for_locker(self, locker_id: str) -> list[KeyHolding]:
        """Outstanding user keys (active, suspended, lost) whose scope names this locker."""
        rows = self._db.execute(
            "SELECT c.id, c.holder, c.kind, c.status, c.issue_no FROM credential_scope s "
            "JOIN credentials c ON c.id = s.credential_id "
            f"WHERE s.item = ? AND c.role = 'user' AND c.status IN ({OUTSTANDING_SQL}) ORDER BY c.issue_no, c.id",
            (locker_id,),
        )
        return [KeyHolding(*row) for row in rows]

    def keys_for_code(self, key_code: str) -> list[KeyHolding]:
        """Outstanding physical keys cut to this key code."""
        rows = self._db.execute(
            "SELECT id, holder, kind, status, issue_no FROM credentials "
            f"WHERE key_code = ? AND kind = 'physical_key' AND status IN ({OUTSTANDING_SQL}) ORDER BY issue_no, id",
            (key_code,),
        )
        return [KeyHolding(*row) for row in rows]

    # -- changing (each call is one transaction: all or nothing)
    def upsert(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        by: str,
        now: datetime,
        action: str = "upsert",
        progress: Progress | None = None,
    ) -> list[Credential]:
        """Add or update credentials by id, all or nothing; raise UpsertRefused naming the bad items."""
        return list(self.merge(items, by=by, now=now, action=action, progress=progress).credentials)

    def merge(
        self,
        items: Iterable[Mapping[str, Any] | BadItem],
        *,
        by: str,
        now: datetime,
        action: str = "upsert",
        progress: Progress | None = None,
        dry_run: bool = False,
        keep: bool = True,
        batch_items: int | None = None,
    ) -> UpsertResult:
        """`upsert`, telling how many items were added, updated or unchanged.

        `items` may be streamed (a CSV file read row by row): they are checked and written
        `batch_items` (default BATCH_ITEMS) at a time in one transaction, which is rolled back if any
        item is refused, so the outcome is the same as for one batch. With `keep=False` the result's
        `credentials` is empty (a million-row import does not keep what it wrote). With `dry_run`
        every check is made (UpsertRefused as usual) and nothing is written.
        """
        return self._apply(
            items,
            by=by,
            now=_utc(now),
            action=action,
            progress=progress,
            whole_set=False,
            dry_run=dry_run,
            keep=keep,
            batch_items=batch_items,
        )

    def set_status(
        self, credential_id: str, status: Status | str, *, by: str, now: datetime, reason: str | None = None
    ) -> Credential:
        new_status = _status(status)
        with write_transaction(self._db, _busy):
            old = self._require(credential_id)
            updated = replace(old, status=new_status)
            rev = _next_rev(self._db)
            self._write([updated], rev, existing={old.id})
            _log(self._db, rev, _utc(now), by, "set_status", [old.id], reason)
        return updated

    def replace(
        self, credential_id: str, new_uid: str, *, by: str, now: datetime, new_id: str | None = None
    ) -> Credential:
        """Retire a key as `replaced` and issue its successor (issue_no + 1) to the same holder.

        The successor inherits holder, role, kind, scope, validity, schedule and (for a physical key,
        which takes an empty `new_uid`) the key code; it is named `new_id` or `{id}-{issue_no}`.
        """
        moment = _utc(now)
        with write_transaction(self._db, _busy):
            old = self._require(credential_id)
            try:
                check_replaceable(old)
                successor_id = replacement_id(old, new_id)
                if self.get(successor_id) is not None:
                    hint = "" if new_id else " (choose another with new_id)"
                    raise StoreError(f"{successor_id} already exists{hint}")
                new = successor(old, new_uid, successor_id=successor_id, by=by, now=moment)
            except IssuanceError as exc:
                raise StoreError(str(exc)) from None
            if new.uid:
                owner = self._db.execute("SELECT id FROM credentials WHERE uid = ?", (new.uid,)).fetchone()
                if owner is not None:
                    raise StoreError(f"uid {mask_uid(new.uid)} is already on credential {owner[0]}")
            rev = _next_rev(self._db)
            self._write([replace(old, status=Status.REPLACED), new], rev, existing={old.id})
            _log(self._db, rev, moment, by, "replace", [old.id, new.id], None)
        return new

    def remove(self, credential_id: str, *, by: str, now: datetime, force: bool = False) -> None:
        """Delete a credential (its history stays in the journal); an outstanding key needs `force`."""
        with write_transaction(self._db, _busy):
            old = self._require(credential_id)
            if old.status in OUTSTANDING_STATUSES and not force:
                raise StoreError(
                    f"{old.id} is still {old.status.value}: set it to returned or revoked first, or force the removal"
                )
            rev = _next_rev(self._db)
            self._delete([old.id], rev)
            _log(self._db, rev, _utc(now), by, "remove", [old.id], None)

    def replace_all(self, items: Sequence[Mapping[str, Any]], *, by: str, now: datetime) -> int:
        """Make the credential set exactly `items` (a snapshot), atomically; returns how many there are.

        Ids the snapshot leaves out are removed whatever their status; duplicate control applies
        within the snapshot. Ids that stay keep their issue number and issue details.
        """
        result = self._apply(items, by=by, now=_utc(now), action="snapshot", progress=None, whole_set=True)
        return len(result.credentials)

    # -- internals
    def _require(self, credential_id: str) -> Credential:
        found = self.get(credential_id)
        if found is None:
            raise StoreError(f"no credential with id {credential_id!r}")
        return found

    def _select_in(self, column: str, values: Iterable[str], skip: Mapping[str, Credential]) -> list[Credential]:
        """Credentials whose `column` is one of `values`, except ids in `skip` (already loaded)."""
        wanted = sorted(set(values).difference(skip) if column == "id" else set(values))
        # The partial indexes on uid and key_code serve only queries that imply their condition.
        condition = {"uid": " AND uid != ''", "key_code": " AND key_code IS NOT NULL"}.get(column, "")
        found: list[Credential] = []
        read = RowReader()
        for chunk in _chunks(wanted):
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(f"{SELECT} WHERE {column} IN ({marks}){condition}", chunk)
            found += [read(row) for row in rows if row[0] not in skip]
        return found

    def _same_card_candidates(
        self, items: Iterable[CredentialFields], skip: Mapping[str, Credential], *, printed_forms: bool = True
    ) -> list[Credential]:
        """Stored credentials that may be the same card as one of `items`: the same uid, a credential
        enrolled from a printed form that an item's card answers to (only when `printed_forms`: the
        store may hold such credentials), and — for items in a printed form — EM4100 uids whose low 32
        or 24 bits are the item's number (a table scan; printed forms are rare)."""
        uids: set[str] = set()
        dec: set[str] = set()
        fc: set[str] = set()
        for fields in items:
            uid, form = fields["uid"], fields["uid_form"]
            if not uid:
                continue
            uids.add(uid)
            if printed_forms:
                uids.update(key.split(":", 1)[1] for key in answer_keys(uid, form))
            if form == "dec":
                dec.add(uid)
            elif form == "fc":
                fc.add(uid)
        found = self._select_in("uid", uids, skip)
        seen = {c.id for c in found}
        for values, start, lengths in ((sorted(dec), 3, (10,)), (sorted(fc), 5, (10,)), (sorted(fc), 3, (8,))):
            for chunk in _chunks(values):
                marks = ", ".join("?" * len(chunk))
                query = f"{SELECT} WHERE length(uid) = ? AND substr(uid, ?) IN ({marks})"
                for row in self._db.execute(query, (lengths[0], start, *chunk)):
                    if row[0] not in skip and row[0] not in seen:
                        seen.add(row[0])
                        found.append(credential_from_row(row))
        return found

    def _apply(
        self,
        items: Iterable[Mapping[str, Any] | BadItem],
        *,
        by: str,
        now: datetime,
        action: str,
        progress: Progress | None,
        whole_set: bool,
        dry_run: bool = False,
        keep: bool = True,
        batch_items: int | None = None,
    ) -> UpsertResult:
        """Check and write `items` batch by batch in one write transaction, all or nothing.

        Each batch is checked against the store as the batches before it left it (their accepted items
        are written before the next batch is loaded) and against the ids they gave (a TEMP table), which
        is exactly what checking all items as one batch against the store would see. A refused upsert,
        or a dry run, rolls the whole transaction back.
        """
        total = len(items) if isinstance(items, Sized) else 0
        tally = _Tally(keep)
        refused = _Refusals()
        try:
            with write_transaction(self._db, _busy):
                rev = _current_rev(self._db) + 1
                seen = _SeenIds(self._db)
                stored = _Stored(self._db)
                # A snapshot is checked against nothing but itself: it is one batch (an MQTT request).
                size = max(total, 1) if whole_set else batch_items or BATCH_ITEMS
                start = 0
                for batch in _batches(items, size):
                    step = _Step(start, total, progress)
                    self._apply_batch(
                        batch, step, seen, stored, refused, tally, by=by, now=now, rev=rev, whole_set=whole_set
                    )
                    start += len(batch)
                seen.close()
                if refused.count:
                    raise refused.error()
                if dry_run or not tally.touched:
                    raise _NothingToCommit
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'rev'", (rev,))
                _log(self._db, rev, now, by, action, tally.ids_json(), None)
        except _NothingToCommit:
            rev = _current_rev(self._db)
        return UpsertResult(
            credentials=tuple(tally.stored),
            added=tally.added,
            updated=tally.updated,
            unchanged=tally.unchanged,
            removed=len(tally.removed),
            rev=rev,
        )

    def _apply_batch(
        self,
        batch: Sequence[Mapping[str, Any] | BadItem],
        step: _Step,
        seen: _SeenIds,
        stored: _Stored,
        refused: _Refusals,
        tally: _Tally,
        *,
        by: str,
        now: datetime,
        rev: int,
        whole_set: bool,
    ) -> None:
        problems: dict[int, tuple[Problem, str | None]] = {}
        parsed = self._parse(batch, step, seen, problems)
        ids = {index: fields["id"] for index, fields in parsed.items()}
        if whole_set:
            existing = {credential.id: credential for credential in self._select_in("id", ids.values(), {})}
            known = KnownCredentials()
        else:
            holders = {fields["holder"] for fields in parsed.values()}
            codes = {fields["key_code"] for fields in parsed.values() if fields["key_code"] is not None}
            loaded = {credential.id: credential for credential in self._select_in("holder", holders, {})}
            loaded.update((c.id, c) for c in self._select_in("key_code", codes, loaded))
            if not stored.empty_at_start:
                loaded.update((c.id, c) for c in self._select_in("id", ids.values(), loaded))
            existing = {ident: loaded[ident] for ident in ids.values() if ident in loaded}
            candidates = self._same_card_candidates(
                parsed.values(), loaded, printed_forms=stored.printed_forms(len(batch))
            )
            loaded.update((c.id, c) for c in candidates)
            known = KnownCredentials(loaded.values())
        outcome = issue_batch(
            parsed, known, existing, by=by, now=now, whole_set=whole_set, progress=step.phase("matching")
        )
        for index, reason in outcome.refusals.items():
            problems[index] = (Problem(index, reason.field, reason.message), ids[index])
        refused.add(problems)
        if whole_set and refused.count:
            return  # the only batch: nothing to check after it
        # Written even when an earlier item was refused (the transaction is rolled back at the end):
        # the next batches are checked against the store as these items leave it.
        if whole_set:
            self._clear_for_snapshot(outcome, existing, set(ids.values()), rev, tally)
        if outcome.changed:
            step.report("writing", 0)
            self._write(outcome.changed, rev, existing=set(existing))
            stored.written(outcome.changed)
        step.report("writing", len(batch))
        tally.add(outcome, existing)

    def _clear_for_snapshot(
        self, outcome: BatchOutcome, existing: Mapping[str, Credential], keep: set[str], rev: int, tally: _Tally
    ) -> None:
        """Remove the ids a snapshot leaves out, and free the uids of the rows it rewrites: a snapshot
        may move a uid from one kept credential to another in any order, and the unique index must see
        only the result."""
        removed = [row[0] for row in self._db.execute("SELECT id FROM credentials") if row[0] not in keep]
        if removed:
            self._delete(removed, rev)
            tally.removed = removed
        self._db.executemany(
            "UPDATE credentials SET uid = '' WHERE id = ?", ((c.id,) for c in outcome.changed if c.id in existing)
        )

    def _parse(
        self,
        batch: Sequence[Mapping[str, Any] | BadItem],
        step: _Step,
        seen: _SeenIds,
        problems: dict[int, tuple[Problem, str | None]],
    ) -> dict[int, CredentialFields]:
        """Each item's fields, keyed by its index in the upsert; the bad ones go to `problems`."""
        parsed: dict[int, CredentialFields] = {}
        first_index: dict[str, int] = {}
        for offset, item in enumerate(batch):
            index = step.start + offset
            if offset % 2000 == 0:
                step.report("checking", offset)
            if isinstance(item, BadItem):
                problems[index] = (Problem(index, item.field, item.message), None)
                continue
            if not isinstance(item, Mapping):
                problems[index] = (Problem(index, "credential", "must be an object of credential fields"), None)
                continue
            try:
                fields = parse_credential_fields(item, self.zone)
            except FieldError as exc:
                problems[index] = (Problem(index, exc.field, exc.problem), _name(item))
                continue
            earlier = first_index.setdefault(fields["id"], index)
            if earlier != index:
                problems[index] = (Problem(index, "id", f"{fields['id']} is given twice in one batch"), fields["id"])
                continue
            parsed[index] = fields
        for ident in seen.earlier(first_index):
            index = first_index[ident]
            del parsed[index]
            problems[index] = (Problem(index, "id", f"{ident} is given twice in one batch"), ident)
        seen.add(first_index)
        step.report("checking", len(batch))
        return parsed

    def _write(self, credentials: Sequence[Credential], rev: int, *, existing: set[str]) -> None:
        """Insert or update rows (with their scope index and their share of the set digest)."""
        updated = [credential.id for credential in credentials if credential.id in existing]
        delta = -self._stored_hashes(updated)
        self._db.executemany("DELETE FROM credential_scope WHERE credential_id = ?", ((ident,) for ident in updated))
        rows = []
        for credential in credentials:
            share = share_hex(credential)
            delta += int(share, 16)
            rows.append((*row_of(credential), share, rev))
        self._db.executemany(UPSERT_ROW, rows)
        self._db.executemany(
            "INSERT OR IGNORE INTO credential_scope (item, credential_id) VALUES (?, ?)",
            ((item, credential.id) for credential in credentials for item in credential.scope),
        )
        if self._db.execute("SELECT EXISTS (SELECT 1 FROM removals)").fetchone()[0]:
            self._db.executemany("DELETE FROM removals WHERE id = ?", ((c.id,) for c in credentials))
        self._add_to_digest(delta)

    def _delete(self, credential_ids: Sequence[str], rev: int) -> None:
        self._add_to_digest(-self._stored_hashes(credential_ids))
        rows = [(ident,) for ident in credential_ids]
        self._db.executemany("DELETE FROM credential_scope WHERE credential_id = ?", rows)
        self._db.executemany("DELETE FROM credentials WHERE id = ?", rows)
        self._db.executemany(
            "INSERT INTO removals (id, rev) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET rev = excluded.rev",
            ((ident, rev) for ident in credential_ids),
        )

    def _stored_hashes(self, credential_ids: Sequence[str]) -> int:
        """The sum of these rows' shares of the digest, as stored."""
        total = 0
        for chunk in _chunks(credential_ids):
            marks = ", ".join("?" * len(chunk))
            for (share,) in self._db.execute(f"SELECT record_hash FROM credentials WHERE id IN ({marks})", chunk):
                total += int(share, 16)
        return total

    def _add_to_digest(self, delta: int) -> None:
        if delta:
            current = int(self._db.execute("SELECT value FROM set_digest WHERE id = 1").fetchone()[0], 16)
            self._db.execute("UPDATE set_digest SET value = ? WHERE id = 1", (digest_text(current + delta),))


# ---- helpers -----------------------------------------------------------------------------------


@contextmanager
def _read_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One consistent snapshot across several SELECTs (WAL readers never block writers)."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


def _busy(exc: Exception) -> StoreError:
    return StoreError(f"the credential store is busy ({exc}); try again")


def _current_rev(db: sqlite3.Connection) -> int:
    value: int = db.execute("SELECT value FROM meta WHERE key = 'rev'").fetchone()[0]
    return value


def _next_rev(db: sqlite3.Connection) -> int:
    rev = _current_rev(db) + 1
    db.execute("UPDATE meta SET value = ? WHERE key = 'rev'", (rev,))
    return rev


def _log(
    db: sqlite3.Connection, rev: int, at: datetime, by: str, action: str, ids: Sequence[str] | str, reason: str | None
) -> None:
    """One change-log row; `ids` as a list, or already as its JSON text (a large import builds it batch by batch)."""
    text = ids if isinstance(ids, str) else json.dumps(list(ids), ensure_ascii=False)
    db.execute(
        "INSERT INTO change_log (rev, at, by, action, ids, reason) VALUES (?, ?, ?, ?, ?, ?)",
        (rev, utc_text(at), by, action, text, reason),
    )


def _name(item: Mapping[str, Any]) -> str | None:
    """An item that failed to parse is still named by its id in messages when it is readable."""
    ident = item.get("id")
    if isinstance(ident, str) and 0 < len(ident.strip()) <= 128:
        return ident.strip()
    return None


def _status(value: Status | str) -> Status:
    if isinstance(value, Status):
        return value
    try:
        return Status(value.strip().lower())
    except ValueError:
        names = ", ".join(status.value for status in Status)
        raise StoreError(f"unknown status {value!r} (one of: {names})") from None


# ---- one upsert, batch by batch ----------------------------------------------------------------


class _NothingToCommit(Exception):
    """Leaves an upsert's transaction by rolling it back: a dry run, or nothing changed."""


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True, slots=True)
class _Step:
    """Where a batch starts in its upsert, for progress counted from the upsert's start."""

    start: int
    total: int
    progress: Progress | None

    def report(self, phase: str, done: int) -> None:
        if self.progress is not None:
            self.progress(phase, self.start + done, self.total)

    def phase(self, phase: str) -> Callable[[int, int], None] | None:
        """A `progress(done, total)` for one phase of this batch (what issue_batch calls)."""
        if self.progress is None:
            return None
        return lambda done, _: self.report(phase, done)


class _Refusals:
    """The bad items of an upsert: every one counted, the first MAX_PROBLEMS kept (in item order,
    since batches come in order) with the ids that name them."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.names: dict[int, str] = {}
        self.count = 0

    def add(self, problems: Mapping[int, tuple[Problem, str | None]]) -> None:
        self.count += len(problems)
        for index in sorted(problems)[: MAX_PROBLEMS - len(self.problems)]:
            problem, name = problems[index]
            self.problems.append(problem)
            if name is not None:
                self.names[index] = name

    def error(self) -> UpsertRefused:
        return UpsertRefused(self.problems, self.names, self.count)


class _Tally:
    """What an upsert did, added up batch by batch. The changed ids are kept as the change log's
    JSON text (a few bytes each); the credentials themselves only when `keep`."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.stored: list[Credential] = []
        self.added = self.updated = self.unchanged = 0
        self.removed: list[str] = []
        self._changed_json: list[str] = []

    @property
    def touched(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def add(self, outcome: BatchOutcome, existing: Mapping[str, Credential]) -> None:
        added = sum(1 for credential in outcome.changed if credential.id not in existing)
        self.added += added
        self.updated += len(outcome.changed) - added
        self.unchanged += len(outcome.issued) - len(outcome.changed)
        if outcome.changed:
            self._changed_json.append(_json_items([credential.id for credential in outcome.changed]))
        if self.keep:
            self.stored += outcome.issued

    def ids_json(self) -> str:
        """The change log's ids: the changed ones in item order, then the removed ones."""
        parts = [*self._changed_json, _json_items(self.removed)] if self.removed else self._changed_json
        return "[" + ", ".join(parts) + "]"


def _json_items(ids: Sequence[str]) -> str:
    """`json.dumps(ids)` without its brackets, to join with other batches' ids."""
    return json.dumps(list(ids), ensure_ascii=False)[1:-1]


class _Stored:
    """What the store may hold that a batch must look its items up against, as far as the upsert knows
    — fewer index look-ups per item for a large import into a new or small store.

    * Ids: when the store held no credential as the upsert began (`empty_at_start`), an item's id can
      only be stored if an earlier batch gave it — and `_SeenIds` refuses those — so ids are not looked
      up then.
    * Printed forms: only credentials enrolled from a printed form (`dec` / `fc`) are found under the
      printed-form keys another card answers to, so while there are none a batch need not look its cards
      up under those keys. Looked for once per upsert, by a table scan, and only when that costs less
      than the look-ups it can save: when the store holds no more than ten rows for each of the first
      batch's items. Otherwise, or once the upsert writes one, they may be there.
    """

    #: Stored rows per item of the first batch up to which the scan pays (a row scanned costs far less
    #: than an item's two look-ups).
    SCAN_ROWS_PER_ITEM = 10

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.empty_at_start = _holds_nothing(db)
        self._printed: bool | None = False if self.empty_at_start else None

    def printed_forms(self, batch_items: int) -> bool:
        """Whether credentials enrolled from a printed form may be stored."""
        if self._printed is None:
            largest = self._db.execute("SELECT max(rowid) FROM credentials").fetchone()[0] or 0
            if largest > self.SCAN_ROWS_PER_ITEM * batch_items:
                self._printed = True
            else:
                query = "SELECT EXISTS (SELECT 1 FROM credentials WHERE uid_form != '')"
                self._printed = bool(self._db.execute(query).fetchone()[0])
        return self._printed

    def written(self, credentials: Iterable[Credential]) -> None:
        if not self._printed and any(credential.uid_form for credential in credentials):
            self._printed = True


def _holds_nothing(db: sqlite3.Connection) -> bool:
    """Whether the store holds no credential (one step into the table)."""
    return not db.execute("SELECT EXISTS (SELECT 1 FROM credentials)").fetchone()[0]


class _SeenIds:
    """The ids earlier batches of an upsert gave (an id given twice is refused wherever it is): kept in
    a TEMP table, which SQLite keeps on disk rather than in Python memory, and created only once a
    second batch comes (an MQTT request or a small file is one batch and needs none)."""

    _TABLE = "temp.upsert_ids"

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._pending: list[str] = []
        self._created = False

    def earlier(self, ids: Collection[str]) -> list[str]:
        """Those of `ids` an earlier batch gave."""
        if self._pending:
            if not self._created:
                self._db.execute(f"CREATE TABLE {self._TABLE} (id TEXT PRIMARY KEY) WITHOUT ROWID")
                self._created = True
            # OR IGNORE: an id given again (refused) is already there.
            insert = f"INSERT OR IGNORE INTO {self._TABLE} (id) VALUES (?)"
            self._db.executemany(insert, ((ident,) for ident in self._pending))
            self._pending = []
        if not self._created:
            return []
        found: list[str] = []
        for chunk in _chunks(sorted(ids)):
            marks = ", ".join("?" * len(chunk))
            found += [row[0] for row in self._db.execute(f"SELECT id FROM {self._TABLE} WHERE id IN ({marks})", chunk)]
        return found

    def add(self, ids: Iterable[str]) -> None:
        """This batch's ids, written to the table when the next batch asks."""
        self._pending = list(ids)

    def close(self) -> None:
        if self._created:
            self._db.execute(f"DROP TABLE {self._TABLE}")
            self._created = False
