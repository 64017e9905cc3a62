"""The daemon's link to the credential store: follow its changes, journal them, write back used-up codes.

The CLI and the MQTT handlers change the store from other connections (other processes, even);
a change is in force as soon as it is committed (the daemon looks cards up in the store). The daemon
notices a new revision on its tick, reads the change log on a worker thread through a connection of its
own (a 100,000-row import's entry lists every id, and must not stall taps), and journals each change as
`credentials.changed` with the set's version and digest. The one change the daemon makes itself —
revoking a single-use credential the tap path has used up — also runs on a worker thread, and is
followed like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Protocol

from gateway.credential_view import CredentialView
from gateway.journal import Journal, StateWrite
from gateway.model import Status
from gateway.storage import describe_storage_error
from gateway.store import ChangeLogEntry, Store, StoreError
from gateway.visitors import USED_UP_PREFIX

log = logging.getLogger("lockergw")

#: append(records, at, state): journal durably now, or raise JournalUnavailable.
Append = Callable[[list[dict[str, Any]], datetime, list[StateWrite]], object]


class Wall(Protocol):
    def wall(self) -> datetime: ...


class CredentialFollower:
    """Keeps `view` in step with the store's change log. `attach` it to the open store (and its second connection,
    used only by the worker thread) and journal before use; `stop` before closing them."""

    def __init__(
        self,
        view: CredentialView,
        clock: Wall,
        *,
        append: Append,
        append_or_retry: Append,
        info_changed: Callable[[], None],
    ) -> None:
        self.view = view
        self._clock = clock
        self._append = append
        self._append_or_retry = append_or_retry
        self._info_changed = info_changed
        self._store: Store | None = None
        self._worker_db: Store | None = None
        self._journal: Journal | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._revocations: set[asyncio.Task[None]] = set()

    def attach(self, store: Store, worker_db: Store, journal: Journal) -> None:
        self._store, self._worker_db, self._journal = store, worker_db, journal

    @property
    def store(self) -> Store:
        assert self._store is not None, "follower not attached"
        return self._store

    @property
    def journal(self) -> Journal:
        assert self._journal is not None, "follower not attached"
        return self._journal

    @property
    def behind(self) -> bool:
        """The store has a revision the view has not journaled yet."""
        return self.store.rev != self.view.rev

    def journal_changes(self, now: datetime, startup: bool = False) -> None:
        """Bring the view up to date now (start-up) and journal what changed."""
        self._journal_entries(self.view.refresh(self.store), now, startup)

    def follow(self, on_failure: Callable[[asyncio.Task[Any]], None]) -> None:
        """Start catching up unless a catch-up is already running (called on every tick)."""
        if self.behind and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self.catch_up(), name="store changes")
            self._task.add_done_callback(on_failure)

    async def catch_up(self) -> None:
        """Journal the store's changes since the last look without stalling taps: the change log is read
        on a worker thread through a connection of its own, then taken here in one step."""
        assert self._worker_db is not None
        async with self._lock:
            while self.store.rev != self.view.rev:
                from_rev = self.view.rev
                reading = asyncio.ensure_future(asyncio.to_thread(self._worker_db.change_log, from_rev))
                try:
                    changes = await asyncio.shield(reading)
                except asyncio.CancelledError:
                    # The worker thread cannot be stopped: keep the connection (and the lock) until it is
                    # done, so no second thread ever uses it and stop never closes it under a reader.
                    await asyncio.wait({reading})
                    raise
                entries = self.view.apply(changes, from_rev)
                if entries is not None:  # None: the view moved meanwhile; read again
                    self._journal_entries(entries, self._clock.wall())

    async def settle_revocations(self) -> None:
        """Let revocations in hand finish, briefly (else the journal's used_up state revokes them at the
        next start)."""
        if self._revocations:
            await asyncio.wait(self._revocations, timeout=1.0)

    async def stop(self) -> None:
        """Stop following, and hold the lock so no worker reads after this returns.

        A credential read may still be running on the worker thread: the lock is held until it is done,
        and only then may its connection be closed."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lock.acquire(), 2.0)

    def _journal_entries(self, entries: list[ChangeLogEntry], now: datetime, startup: bool = False) -> None:
        seen = self.journal.get_state("meta:credentials_rev").get("meta:credentials_rev", 0)
        if startup and isinstance(seen, int) and seen < self.view.rev:
            # Changes made while the daemon was stopped: one summary record.
            version, digest = self.store.version_and_digest()
            entries_note = {"kind": "credentials.changed", "reason": "changed_while_stopped", "version": version}
            self._append(
                [{**entries_note, "digest": digest}],
                now,
                [StateWrite("meta:credentials_rev", self.view.rev)],
            )
            return
        if not entries:
            return
        applied = self.view.rev
        version, digest = self.store.version_and_digest()
        records = [
            {
                "kind": "credentials.changed",
                "reason": entry.reason,
                "action": entry.action,
                "by": entry.by,
                "ids": list(entry.ids[:50]),
                "count": entry.count,
                "version": entry.rev,
            }
            for entry in entries
        ]
        if version == applied:  # else the store has moved on already: its digest is not of this set
            records[-1]["digest"] = digest
        self._append_or_retry(records, now, [StateWrite("meta:credentials_rev", applied)])
        self._info_changed()  # the retained info carries the credential-set version and digest

    def revoke_used_up(
        self,
        credential_id: str,
        *,
        state_dir: Path,
        zone: tzinfo,
        revoked: Callable[[str], None],
        on_failure: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        """Revoke a used-up single-use credential in the store, on a worker thread with a connection of
        its own (the tap path never waits on it); the store change is journaled as credentials.changed.
        Until it lands, the caller's used-up set refuses the credential; `revoked` is told once it has."""
        clock = self._clock

        def revoke() -> None:
            with Store.open(state_dir, zone=zone) as store:
                current = store.get(credential_id)
                if current is not None and current.status == Status.ACTIVE:
                    store.set_status(credential_id, Status.REVOKED, by="gateway", now=clock.wall(), reason="single_use")

        async def run() -> None:
            try:
                await asyncio.to_thread(revoke)
            except (StoreError, sqlite3.Error, OSError) as exc:
                # Still refused (used_up, journaled); the next start revokes it. One line, no traceback.
                cause = describe_storage_error(exc, state_dir)
                log.error("credential %s used up but not yet revoked in the store (%s)", credential_id, cause)
                return
            await self.catch_up()
            revoked(credential_id)
            with contextlib.suppress(sqlite3.Error, OSError):  # left in place, the next start re-checks it
                self.journal.put_state([StateWrite(f"{USED_UP_PREFIX}{credential_id}", None)])

        task = asyncio.get_running_loop().create_task(run(), name=f"revoke {credential_id}")
        self._revocations.add(task)
        task.add_done_callback(self._revocations.discard)
        task.add_done_callback(on_failure)
