"""The daemon's view of the credential store: a card is looked up in the store itself when presented.

The store's unique index on `uid` already is a uid → credential index, on disk and in the OS page cache,
so the daemon keeps none of its own: start-up reads no credential at all (a million credentials start
as fast as none), memory does not grow with the credential set (it must fit a 1 GB Raspberry Pi beside
everything else), and a change committed by the CLI or an MQTT request is in force at the next tap.
A tap costs one indexed SELECT (tens of µs), as reading the credential by its id after a lookup in a
dict did before; an unknown EM4100 card costs three, as its printed forms are tried too.

What the view still follows is the store's revision: `refresh`/`apply` take the change log since the
last revision seen, so the follower can journal each change as `credentials.changed` (SPEC §7).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from gateway.model import Credential
from gateway.store import ChangeLog, ChangeLogEntry, Store


class _ByUid(Mapping[str, Credential]):
    """uid (or printed-form key, `dec:00CE754C`) → Credential, read from the store on each look-up.
    Iteration and length cover the credentials that have a uid."""

    def __init__(self, view: CredentialView) -> None:
        self._view = view

    def __getitem__(self, key: str) -> Credential:
        credential = self._view.store.by_key(key)
        if credential is None:
            raise KeyError(key)
        return credential

    def __iter__(self) -> Iterator[str]:
        return self._view.store.uids()

    def __len__(self) -> int:
        return self._view.store.count(with_uid=True)


class _ById(Mapping[str, Credential]):
    def __init__(self, view: CredentialView) -> None:
        self._view = view

    def __getitem__(self, credential_id: str) -> Credential:
        credential = self._view.store.get(credential_id)
        if credential is None:
            raise KeyError(credential_id)
        return credential

    def __contains__(self, credential_id: object) -> bool:
        return isinstance(credential_id, str) and self._view.store.has(credential_id)

    def __iter__(self) -> Iterator[str]:
        return self._view.store.ids()

    def __len__(self) -> int:
        return self._view.count()


class CredentialView:
    """`load(store)` once; `refresh(store)` or `apply(changes, from_rev)` after each store change, to
    learn what the change log says. `by_uid` and `by_id` read credentials through the store given to
    `load`, so they always see what it has committed."""

    def __init__(self) -> None:
        self._store: Store | None = None
        self.by_uid: Mapping[str, Credential] = _ByUid(self)
        self.by_id: Mapping[str, Credential] = _ById(self)
        self.rev = 0
        self._count: tuple[int, int] | None = None  # (revision, credentials), so health does not count each time

    @property
    def store(self) -> Store:
        assert self._store is not None, "credential view not loaded"
        return self._store

    def load(self, store: Store) -> None:
        """Start following `store` at its current revision (start-up): nothing is read but the revision."""
        self._store, self.rev = store, store.rev

    def count(self) -> int:
        """How many credentials the store holds (counted again only after a change)."""
        rev = self.store.rev
        if self._count is None or self._count[0] != rev:
            self._count = (rev, self.store.count())
        return self._count[1]

    def refresh(self, store: Store) -> list[ChangeLogEntry]:
        """The change-log entries since the last look (now taken as seen)."""
        if store.rev == self.rev:
            return []
        return self.apply(store.change_log(self.rev), self.rev) or []

    def apply(self, changes: ChangeLog, from_rev: int) -> list[ChangeLogEntry] | None:
        """Take changes read (perhaps on another thread) since `from_rev`; None if the view has moved on
        meanwhile (they are stale, and must be read again)."""
        if from_rev != self.rev:
            return None
        self.rev = changes.rev
        return list(changes.log)
