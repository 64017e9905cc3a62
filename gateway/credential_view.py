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

from collections.abc import Callable, Iterator, Mapping

from gateway.model import Credential
from gateway.store import ChangeLog, ChangeLogEntry, Store


class _Found(Mapping[str, Credential]):
    """key → Credential, read from the store on each look-up by `find`; `keys` and `size` for
    iteration and length (`by_uid` covers the credentials that have a uid, `by_id` every one)."""

    def __init__(
        self,
        find: Callable[[str], Credential | None],
        keys: Callable[[], Iterator[str]],
        size: Callable[[], int],
        has: Callable[[str], bool] | None = None,
    ) -> None:
        self._find, self._keys, self._size, self._has = find, keys, size, has

    def __getitem__(self, key: str) -> Credential:
        credential = self._find(key)
        if credential is None:
            raise KeyError(key)
        return credential

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._has(key) if self._has is not None else self._find(key) is not None

    def __iter__(self) -> Iterator[str]:
        return self._keys()

    def __len__(self) -> int:
        return self._size()


class CredentialView:
    """`load(store)` once; `refresh(store)` or `apply(changes, from_rev)` after each store change, to
    learn what the change log says. `by_uid` and `by_id` read credentials through the store given to
    `load`, so they always see what it has committed."""

    def __init__(self) -> None:
        self._store: Store | None = None
        #: uid (or printed-form key, `dec:00CE754C`) → Credential, as `policy.find_credential` asks.
        self.by_uid: Mapping[str, Credential] = _Found(
            lambda key: self.store.by_key(key), lambda: self.store.uids(), lambda: self.store.count(with_uid=True)
        )
        self.by_id: Mapping[str, Credential] = _Found(
            lambda ident: self.store.get(ident), lambda: self.store.ids(), self.count, lambda i: self.store.has(i)
        )
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
