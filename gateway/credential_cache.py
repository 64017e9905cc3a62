"""The daemon's compact index of the credential store, kept current incrementally.

A million credentials must fit a 1 GB Raspberry Pi beside everything else, so the daemon keeps only
what finding a card needs: uid (and printed-form key) → credential id, and id → uid, the strings
shared between the two. The credential itself is read from the store, by its primary key, when its
card is presented (one indexed SELECT, tens of µs). `refresh`/`apply` take only the keys changed
since the last revision seen, so a 100,000-row import is in force within a second of the command's
exit (SPEC §4) and start-up reads three columns, not sixteen.

A row the store has changed but the index has not taken yet (the follower applies it within a tick)
is only found under the uid it has now: a card number that has just moved to someone else never
opens the old holder's locker meanwhile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from gateway.model import Credential
from gateway.store import ChangeLogEntry, RawChanges, Store
from gateway.uid import CredentialIndex, form_key

Row = Sequence[Any]


def _keys(row: Row) -> tuple[str, str, str]:
    """(id, uid, uid_form) of a key row (`Store.changed_keys`) or a full row (`Store.changed_rows`)."""
    form = row[2] if len(row) == 3 else row[16]
    return str(row[0]), str(row[1] or ""), str(form or "")


class _ByUid(Mapping[str, Credential]):
    """uid → Credential with the fob-number match rule, read from the store on demand."""

    def __init__(self, cache: CredentialCache) -> None:
        self._cache = cache

    def __getitem__(self, key: str) -> Credential:
        credential_id = self._cache._uids[key]
        credential = self._cache._read(credential_id)
        if credential is None or not (key == credential.uid or form_key(credential.uid, credential.uid_form) == key):
            raise KeyError(key)
        return credential

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache._uids)

    def __len__(self) -> int:
        return len(self._cache._uids)


class _ById(Mapping[str, Credential]):
    def __init__(self, cache: CredentialCache) -> None:
        self._cache = cache

    def __getitem__(self, credential_id: str) -> Credential:
        if credential_id not in self._cache._ids:
            raise KeyError(credential_id)
        credential = self._cache._read(credential_id)
        if credential is None:
            raise KeyError(credential_id)
        return credential

    def __contains__(self, credential_id: object) -> bool:
        return credential_id in self._cache._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache._ids)

    def __len__(self) -> int:
        return len(self._cache._ids)


class CredentialCache:
    """`load(store)` once; `refresh(store)` or `apply(changes, from_rev)` after each store change.
    `by_uid` and `by_id` read credentials through the store given to `load`."""

    def __init__(self) -> None:
        self._uids: CredentialIndex[str] = CredentialIndex()
        self._ids: dict[str, str] = {}
        self._store: Store | None = None
        self.by_uid: Mapping[str, Credential] = _ByUid(self)
        self.by_id: Mapping[str, Credential] = _ById(self)
        self.rev = 0

    def load(self, store: Store) -> None:
        """Build the index from scratch (start-up). The uid → id map is the id → uid map turned round
        (`dict(zip(...))`, in C), so each id and uid string is shared between the two. The garbage
        collector is paused meanwhile: a million new strings would otherwise trigger it again and
        again, for nothing to collect."""
        paused = gc.isenabled()
        gc.disable()
        try:
            maps = store.index_maps()
            exact = dict(zip(maps.ids.values(), maps.ids.keys(), strict=True))
            exact.pop("", None)  # credentials without a uid are found by id only
        finally:
            if paused:
                gc.enable()
        self._uids = CredentialIndex.of(exact, maps.printed)
        self._ids, self.rev, self._store = maps.ids, maps.rev, store

    def refresh(self, store: Store) -> list[ChangeLogEntry]:
        """Apply the store's changes since the last look; return the change-log entries applied."""
        if store.rev == self.rev:
            return []
        return self.apply(store.changed_keys(self.rev), self.rev) or []

    def apply(self, changes: RawChanges, from_rev: int) -> list[ChangeLogEntry] | None:
        """Apply changes read (perhaps on another thread) since `from_rev`; None if the cache has moved
        on meanwhile (the changes are stale and must be read again)."""
        if from_rev != self.rev:
            return None
        for credential_id in changes.removed:
            self._drop(credential_id)
        for row in changes.rows:
            credential_id, uid, form = _keys(row)
            self._drop(credential_id)
            self._ids[credential_id] = uid
            if uid:
                self._uids.put(uid, credential_id, form)
        self.rev = changes.rev
        return list(changes.log)

    def _read(self, credential_id: str) -> Credential | None:
        assert self._store is not None, "credential cache not loaded"
        return self._store.get(credential_id)

    def _drop(self, credential_id: str) -> None:
        uid = self._ids.pop(credential_id, None)
        if uid and self._uids.get(uid) == credential_id:
            self._uids.discard(uid)
