"""The daemon's in-memory view of the credential store, kept current incrementally.

Loading 1,000,000 credentials once at start-up is fine; reloading them on every CLI change is not,
so `refresh`/`apply` take only the rows changed since the last revision seen. Rows are kept as read
from the database and turned into a `Credential` the first time their card is presented (about
10 µs, once): that is what lets a 100,000-row import be in force within a second of the command's
exit, as SPEC §4 asks, instead of building 100,000 objects first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gateway.model import Credential
from gateway.store import ROW_FORM, ROW_ID, ROW_UID, ChangeLogEntry, RawChanges, Store, credential_from_row
from gateway.uid import CredentialIndex

Row = tuple[Any, ...]
Entry = Credential | Row


def _credential(entry: Entry) -> Credential:
    return entry if isinstance(entry, Credential) else credential_from_row(entry)


def _uid(entry: Entry) -> str:
    return entry.uid if isinstance(entry, Credential) else str(entry[ROW_UID])


class _ByUid(Mapping[str, Credential]):
    """uid → Credential with the fob-number match rule; rows become Credentials on first use."""

    def __init__(self, index: CredentialIndex[Entry]) -> None:
        self._index = index

    def __getitem__(self, uid: str) -> Credential:
        entry = self._index[uid]
        if isinstance(entry, Credential):
            return entry
        credential = credential_from_row(entry)
        self._index.put(credential.uid, credential, credential.uid_form)
        return credential

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class _ById(Mapping[str, Credential]):
    def __init__(self, entries: dict[str, Entry]) -> None:
        self._entries = entries

    def __getitem__(self, credential_id: str) -> Credential:
        return _credential(self._entries[credential_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class CredentialCache:
    def __init__(self) -> None:
        self._uids: CredentialIndex[Entry] = CredentialIndex()
        self._ids: dict[str, Entry] = {}
        self.by_uid: Mapping[str, Credential] = _ByUid(self._uids)
        self.by_id: Mapping[str, Credential] = _ById(self._ids)
        self.rev = 0

    def load(self, store: Store) -> None:
        self._uids, self._ids, self.rev = CredentialIndex(), {}, 0
        self.by_uid, self.by_id = _ByUid(self._uids), _ById(self._ids)
        self.apply(store.changed_rows(0), 0)

    def refresh(self, store: Store) -> list[ChangeLogEntry]:
        """Apply the store's changes since the last look; return the change-log entries applied."""
        if store.rev == self.rev:
            return []
        return self.apply(store.changed_rows(self.rev), self.rev) or []

    def apply(self, changes: RawChanges, from_rev: int) -> list[ChangeLogEntry] | None:
        """Apply changes read (perhaps on another thread) since `from_rev`; None if the cache has moved
        on meanwhile (the changes are stale and must be read again)."""
        if from_rev != self.rev:
            return None
        for credential_id in changes.removed:
            self._drop(credential_id)
        for row in changes.rows:
            credential_id = row[ROW_ID]
            self._drop(credential_id)
            self._ids[credential_id] = row
            if row[ROW_UID]:
                self._uids.put(row[ROW_UID], row, row[ROW_FORM])
        self.rev = changes.rev
        return list(changes.log)

    def _drop(self, credential_id: str) -> None:
        old = self._ids.pop(credential_id, None)
        if old is None:
            return
        uid = _uid(old)
        if uid:
            current = self._uids.get(uid)
            if current is not None and (current is old or _same_credential(current, credential_id)):
                self._uids.discard(uid)


def _same_credential(entry: Entry, credential_id: str) -> bool:
    return (entry.id if isinstance(entry, Credential) else entry[ROW_ID]) == credential_id
