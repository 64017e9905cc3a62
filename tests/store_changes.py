"""What changed in a credential store since a revision, as Credentials: the daemon reads the same
raw rows (`Store.changed_rows`) and builds a Credential only when its card is presented."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.model import Credential
from gateway.store import ChangeLogEntry, Store, credential_from_row


@dataclass(frozen=True, slots=True)
class Changes:
    rev: int
    upserted: tuple[Credential, ...]
    removed: tuple[str, ...]  # credential ids
    log: tuple[ChangeLogEntry, ...]


def changes_since(store: Store, rev: int) -> Changes:
    raw = store.changed_rows(rev)
    return Changes(raw.rev, tuple(credential_from_row(row) for row in raw.rows), raw.removed, raw.log)
