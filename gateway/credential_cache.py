"""The daemon's in-memory view of the credential store, kept current incrementally.

Loading 1,000,000 credentials once at start-up is fine; reloading them on every CLI change is not,
so `refresh` applies only the rows changed since the last revision it saw.
"""

from __future__ import annotations

from gateway.model import Credential
from gateway.store import ChangeLogEntry, Changes, Store
from gateway.uid import CredentialIndex


class CredentialCache:
    def __init__(self) -> None:
        self.by_uid: CredentialIndex[Credential] = CredentialIndex()
        self.by_id: dict[str, Credential] = {}
        self.rev = 0

    def load(self, store: Store) -> None:
        by_uid: CredentialIndex[Credential] = CredentialIndex()
        by_id: dict[str, Credential] = {}
        rev = store.rev
        for credential in store.all():
            by_id[credential.id] = credential
            if credential.uid:
                by_uid.put(credential.uid, credential)
        self.by_uid, self.by_id, self.rev = by_uid, by_id, rev

    def refresh(self, store: Store) -> list[ChangeLogEntry]:
        """Apply the store's changes since the last look; return the change-log entries applied."""
        if store.rev == self.rev:
            return []
        return self.apply(store.changes_since(self.rev), self.rev) or []

    def apply(self, changes: Changes, from_rev: int) -> list[ChangeLogEntry] | None:
        """Apply changes read (perhaps on another thread) since `from_rev`; None if the cache has moved
        on meanwhile (the changes are stale and must be read again)."""
        if from_rev != self.rev:
            return None
        for credential_id in changes.removed:
            self._drop(credential_id)
        for credential in changes.upserted:
            self._drop(credential.id)
            self.by_id[credential.id] = credential
            if credential.uid:
                self.by_uid.put(credential.uid, credential)
        self.rev = changes.rev
        return list(changes.log)

    def _drop(self, credential_id: str) -> None:
        old = self.by_id.pop(credential_id, None)
        if old is not None and old.uid and self.by_uid.get(old.uid) is old:
            self.by_uid.discard(old.uid)
