"""The credential store: SQLite `credentials.db` in `state_dir`, shared by the daemon and the CLI.

Every change bumps a revision; `changes_since(rev)` lets the running daemon pick up CLI and MQTT
changes incrementally (it polls `PRAGMA data_version`, so a change is in force within a second).
Each change also leaves a row in the change log, which the daemon journals as `credentials.changed`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.model import Credential, Status


class StoreError(Exception):
    """A user error against the store (unknown id, duplicate without approval, ...): one plain line."""


@dataclass(frozen=True, slots=True)
class ChangeLogEntry:
    rev: int
    at: datetime
    by: str
    action: str  # "upsert" | "set_status" | "replace" | "remove" | "snapshot" | "import"
    ids: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class Changes:
    rev: int
    upserted: tuple[Credential, ...]
    removed: tuple[str, ...]  # credential ids
    log: tuple[ChangeLogEntry, ...]


@dataclass(frozen=True, slots=True)
class KeyHolding:
    """One outstanding key for a locker or key code: who holds it and under which issue number."""

    credential_id: str
    holder: str
    kind: str
    status: str
    issue_no: int


class Store:
    @classmethod
    def open(cls, state_dir: Path) -> Store:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading
    def get(self, credential_id: str) -> Credential | None:
        raise NotImplementedError

    def all(self) -> Iterator[Credential]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    @property
    def rev(self) -> int:
        raise NotImplementedError

    def changes_since(self, rev: int) -> Changes:
        raise NotImplementedError

    def version_and_digest(self) -> tuple[int, str]:
        """The credential-set version (the revision) and a SHA-256 digest over the set's content."""
        raise NotImplementedError

    def keys_for_locker(self, locker_id: str) -> list[KeyHolding]:
        raise NotImplementedError

    def keys_for_code(self, key_code: str) -> list[KeyHolding]:
        raise NotImplementedError

    # -- changing (each call is one transaction: all or nothing)
    def upsert(
        self, items: Sequence[dict[str, Any]], *, by: str, now: datetime, action: str = "upsert"
    ) -> list[Credential]:
        raise NotImplementedError

    def set_status(
        self, credential_id: str, status: Status, *, by: str, now: datetime, reason: str | None = None
    ) -> Credential:
        raise NotImplementedError

    def replace(
        self, credential_id: str, new_uid: str, *, by: str, now: datetime, new_id: str | None = None
    ) -> Credential:
        raise NotImplementedError

    def remove(self, credential_id: str, *, by: str, now: datetime, force: bool = False) -> None:
        raise NotImplementedError

    def replace_all(self, items: Sequence[dict[str, Any]], *, by: str, now: datetime) -> int:
        raise NotImplementedError
