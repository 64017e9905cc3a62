"""The gateway daemon: a thin composition of readers → policy → journal → locks → doors → publisher.

Everything that touches the world happens here and in the drivers; the rules live in
`gateway.policy`, the door state machine in `gateway.doors`, the records in `gateway.records`.

The one rule this module exists to keep: a lock is energised only after `journal.append` has
returned, i.e. after the decision is durably on disk.

Taps are decided in the order they were read and committed in groups (group commit): while one
commit runs on the journal's writer thread (gateway.journal_writer), the taps read meanwhile queue up;
they are then decided one after the other, each against the state the previous decisions left, and
journaled together in the next transaction — seq in decision order — before any of their locks is
energised. While the disk is fast and the writer idle, a tap's commit runs on the loop instead (no
hand-over). The unlock is written first; logging, listeners, the publisher's wake-up, the reader's
signal and metrics follow it.

Every other journal write of the running daemon (door and device reports, credential changes,
remote opens, locker changes) is queued for the same writer in the order it is made, and what it
announces is carried out once it is on disk; only `gateway.started` and `gateway.stopped` (after
everything queued) commit on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.base import (
    BoardStatus,
    CardRead,
    DeviceEvent,
    DeviceOffline,
    DeviceOnline,
    Feedback,
    KeypadInput,
    LockBoard,
    Reader,
    ReaderFault,
    Signal,
)
from gateway import __version__
from gateway.config import Settings, load_config
from gateway.control import ControlServer
from gateway.credential_follower import CredentialFollower
from gateway.credential_view import CredentialView
from gateway.doors import DoorMonitor
from gateway.events import format_ts, uuid7
from gateway.feedback import tap_feedback
from gateway.journal import Group, Journal, StateWrite
from gateway.journal_writer import STORAGE_ERRORS, JournalWriter, durable
from gateway.locker_operations import LockerOperations
from gateway.metrics import Metrics
from gateway.model import KeypadEntry, Locker, LockerMode, Service, Tap
from gateway.policy import Decision, PolicySettings, ReaderState, Snapshot, decide, with_keypad
from gateway.records import (
    decision_records,
    locker_state_to_json,
    reader_state_from_json,
    reader_state_to_json,
)
from gateway.sitekey import load_or_create_site_key, uid_hash
from gateway.storage import JournalUnavailable, StateDirLock, describe_storage_error, prepare_state_dir
from gateway.store import Store
from gateway.systemd_notify import Notifier
from gateway.uid import EM4100, EM4100_HEX
from gateway.visitors import USED_UP_PREFIX, code_of_entry

log = logging.getLogger("lockergw")

TICK_S = 0.1  # door timers, store changes (a CLI change is in force within a second), watchdog
STOP_BUDGET_S = 4.0
#: SQLite page cache of the daemon's store connections (KiB): one for card look-ups (by the uid index)
#: and requests, one for following the change log. The CLI's import keeps the store's larger default.
DAEMON_STORE_CACHE_KIB = 8192
FOLLOWER_CACHE_KIB = 2048
PROBE_EVERY_S = 1.0  # while the journal fails: how often a commit is tried without a tap
RETENTION_EVERY_S = 3600.0  # with no broker: how often retention runs


@dataclass(slots=True)
class JournalFault:
    """An episode of the journal failing to commit."""

    since: datetime
    cause: str
    refused_taps: int = 0

    def record(self, until: datetime) -> dict[str, Any]:
        return {
            "kind": "journal.unavailable",
            "reason": "commit_failed",
            "cause": self.cause,
            "unavailable_from": format_ts(self.since),
            "unavailable_until": format_ts(until),
            "refused_taps": self.refused_taps,
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock:
    """The daemon's two clocks. `wall()` (UTC) is for validity, schedules and timestamps; `timer()` never
    steps — it is the monotonic clock shown as an instant (the wall time at start plus the monotonic
    time since) — and every duration runs on it: lockout, repeat gap, two-person and keypad windows,
    door left open, unlock deadline. Tests pass a clock of their own."""

    def __init__(self) -> None:
        self._origin_wall = datetime.now(UTC)
        self._origin_mono = time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def timer(self) -> datetime:
        return self._origin_wall + timedelta(seconds=self.monotonic() - self._origin_mono)


def policy_settings(settings: Settings) -> PolicySettings:
    p = settings.policy
    return PolicySettings(
        lockout_after=p.lockout_after,
        lockout_window_s=p.lockout_window_s,
        lockout_s=p.lockout_s,
        emergency_two_person=p.emergency_two_person,
        two_person_window_s=p.two_person_window_s,
        keypad_window_s=p.keypad_window_s,
    )


class Gateway:
    """One running gateway. `await Gateway(settings).run()` until SIGTERM/SIGINT or `stop()`."""

    def __init__(self, settings: Settings, config_path: Path | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock or Clock()
        self.boot_id = uuid7()
        self.started_monotonic = self.clock.monotonic()
        self._last_probe = 0.0
        self.zone = settings.gateway.zone()
        self.policy = policy_settings(settings)
        self.reader_lockers = {r.id: tuple(r.lockers) for r in settings.readers}
        self.reader_drivers = {r.id: r.driver for r in settings.readers}
        self.board_settings = {b.id: b for b in settings.boards}
        self.credentials = CredentialView()
        self.lockers: dict[str, Locker] = {}
        self.reader_states: dict[str, ReaderState] = {}
        self.doors = DoorMonitor(settings.policy.door_left_open_s, settings.policy.forced_open_grace_s)
        self.readers: dict[str, Reader] = {}
        self.boards: dict[str, LockBoard] = {}
        self.devices_seen: set[str] = set()
        self.device_events: asyncio.Queue[DeviceEvent] = asyncio.Queue()
        self.mqtt: Any = None
        self.control: ControlServer | None = None
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._ready = False
        self._store: Store | None = None
        self._follow_store_db: Store | None = None
        self._journal_fault: JournalFault | None = None
        self._fault_in_flight = False  # a commit carrying the journal.unavailable record is queued
        self._journal: Journal | None = None
        self._writer: JournalWriter | None = None
        self._site_key = b""
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._unlocks: set[asyncio.Task[bool]] = set()
        #: Single-use credentials used up (journaled) whose revocation the store has not taken yet.
        self.used_up: set[str] = set()
        self.metrics = Metrics()
        self.follower = CredentialFollower(
            self.credentials,
            self.clock,
            append=self._append,
            append_or_retry=self._record,
            info_changed=self._info_changed,
        )
        self.locker_ops = LockerOperations(
            self,
            append=self._journal_now,
            energise=self._energise,
            board_online=self._board_online,
            locker_changed=self._locker_changed,
        )

    # ---- resources ---------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self._store is not None, "gateway not started"
        return self._store

    @property
    def journal(self) -> Journal:
        assert self._journal is not None, "gateway not started"
        return self._journal

    def hash_uid(self, uid: str) -> str:
        hashed: str = uid_hash(self._site_key, uid)
        return hashed

    @property
    def ready(self) -> bool:
        """True once the store is open and every configured device has been opened once."""
        return self._ready

    def stop(self) -> None:
        self._stop.set()

    # ---- start-up ----------------------------------------------------------------------------

    def _open_state(self) -> None:
        state_dir = self.settings.gateway.state_dir
        prepare_state_dir(state_dir)
        self._site_key = load_or_create_site_key(state_dir)
        # Page caches sized for the daemon: look-ups by primary key and the change follower's reads.
        self._store = Store.open(state_dir, zone=self.zone, cache_kib=DAEMON_STORE_CACHE_KIB)
        self._follow_store_db = Store.open(state_dir, zone=self.zone, cache_kib=FOLLOWER_CACHE_KIB)
        self._journal = Journal.open(
            state_dir, site=self.settings.gateway.site, gateway=self.settings.gateway.id, boot_id=self.boot_id
        )
        self._writer = JournalWriter(self._journal, on_failure=self._journal_failed)
        self.follower.attach(self.store, self._follow_store_db, self._journal)
        self.credentials.load(self.store)
        # What start-up made lives as long as the daemon: no full garbage collection need walk it again.
        gc.collect()
        gc.freeze()
        saved_lockers = self.journal.get_state("locker:")
        for section in self.settings.lockers:
            saved = saved_lockers.get(f"locker:{section.id}") or {}
            self.lockers[section.id] = Locker(
                id=section.id,
                board=section.board,
                lock=section.lock,
                section=section.section,
                department=section.department,
                mode=LockerMode(section.mode),
                service=Service(saved.get("service", Service.IN_SERVICE)),
                occupant=saved.get("occupant") if section.mode == "shared" else None,
            )
            if section.board is not None and section.lock is not None:
                board = self.board_settings[section.board]
                self.doors.add_locker(section.id, section.board, section.lock, board.unlock_ms)
        timer, lockout = self.clock.timer(), timedelta(seconds=self.policy.lockout_s)
        for key, value in self.journal.get_state("reader:").items():
            reader_id = key.removeprefix("reader:")
            if reader_id in self.reader_lockers:
                state = reader_state_from_json(value)
                # Saved on the last run's timer; a lockout in force goes on, but never for more than lockout_s.
                if state.locked_until is not None and state.locked_until > timer + lockout:
                    state = replace(state, locked_until=timer + lockout)
                self.reader_states[reader_id] = state
        # Single-use credentials used up before a crash that came before the store had them revoked.
        self.used_up = {key.removeprefix(USED_UP_PREFIX) for key in self.journal.get_state(USED_UP_PREFIX)}

    def _journal_startup(self) -> None:
        now = self.clock.wall()
        self._append([{"kind": "gateway.started", "reason": None, "version": __version__}], now)
        for credential_id in sorted(self.used_up):
            self._revoke_used_up(credential_id)
        self.follower.journal_changes(now, startup=True)

    # ---- journal -----------------------------------------------------------------------------

    def _append(
        self, records: list[dict[str, Any]], at: datetime, state: list[StateWrite] | None = None
    ) -> list[dict[str, Any]]:
        """Durably journal records now, on the calling thread, after everything queued for the writer
        (start-up, shutdown); raises if the journal cannot commit."""
        return self._commit(records, at, state or [])

    def _record(
        self,
        records: list[dict[str, Any]],
        at: datetime,
        state: list[StateWrite],
        after: Callable[[], None] | None = None,
    ) -> None:
        """Records of things that already happened (a door moved, credentials changed): queued for the
        writer thread in the order they come, never dropped — if the journal cannot take them now they
        wait and go in first with the next commit that succeeds. They are announced (and `after` runs:
        the retained locker state they change) once they are on disk."""
        if not records:
            if after is not None:
                after()
            return

        def committed(outcome: list[list[dict[str, Any]]] | BaseException) -> None:
            if isinstance(outcome, BaseException):
                log.error("journal: %d record(s) could not be journaled: %s", len(records), outcome)
                return
            self._announce(outcome[0])
            if after is not None:
                after()

        assert self._writer is not None, "gateway not started"
        self._writer.submit([Group(records, at, state)], committed, keep=True)

    def _commit(
        self, records: list[dict[str, Any]], at: datetime, state: list[StateWrite], *, announce: bool = True
    ) -> list[dict[str, Any]]:
        """Durably journal records on the calling thread (blocking it; after what the writer has
        queued); then (unless the caller does it after an unlock) announce them.

        Raises JournalUnavailable when the journal cannot commit. The first failure of an episode is
        logged (one ERROR line naming the cause) and shown on health_check, `{base}/state` and the
        metrics; the first commit that succeeds afterwards carries a `journal.unavailable` record
        saying from when to when, and how many taps were refused meanwhile."""
        return self._commit_now([Group(records, at, state)], announce=announce)[0]

    def _commit_now(self, groups: list[Group], *, announce: bool) -> list[list[dict[str, Any]]]:
        assert self._writer is not None, "gateway not started"
        fault, lead = self._fault_lead()
        try:
            results = self._writer.commit_now(groups, lead=lead)
        except STORAGE_ERRORS as exc:
            raise self._commit_failed(exc) from None
        finally:
            if lead is not None:
                self._fault_in_flight = False
        return self._committed(fault, results, announce)

    def _submit(self, groups: list[Group], done: Callable[[list[list[dict[str, Any]]] | BaseException], None]) -> None:
        """Queue a group commit for the writer thread (seq in submission order); `done` runs on the loop
        with each group's envelopes (not yet announced), or JournalUnavailable, or what else it raised."""
        fault, lead = self._fault_lead()

        def finished(outcome: list[list[dict[str, Any]]] | BaseException) -> None:
            if lead is not None:
                self._fault_in_flight = False
            if isinstance(outcome, STORAGE_ERRORS):
                done(self._commit_failed(outcome))
            elif isinstance(outcome, BaseException):
                done(outcome)
            else:
                done(self._committed(fault, outcome, announce=False))

        assert self._writer is not None, "gateway not started"
        self._writer.submit(groups, finished, lead=lead)

    async def _commit_groups(self, groups: list[Group]) -> list[list[dict[str, Any]]]:
        """Group commit on the writer thread; not announced. The caller is woken once, when it is durable."""
        return await durable(lambda done: self._submit(groups, done))

    async def _journal_now(
        self, records: list[dict[str, Any]], at: datetime, state: list[StateWrite] | None = None
    ) -> list[dict[str, Any]]:
        """Durably journal records on the writer thread, in turn with everything else, and announce
        them; the caller carries out what they say once this returns. Raises JournalUnavailable."""
        (envelopes,) = await self._commit_groups([Group(records, at, state or [])])
        self._announce(envelopes)
        return envelopes

    def _fault_lead(self) -> tuple[JournalFault | None, Group | None]:
        """While the journal fails: the `journal.unavailable` record for the next commit to carry
        (one commit at a time carries it; it goes in first, before any records that waited)."""
        fault = self._journal_fault
        if fault is None or self._fault_in_flight:
            return None, None
        self._fault_in_flight = True
        now = self.clock.wall()
        return fault, Group([fault.record(now)], now)

    def _commit_failed(self, exc: BaseException) -> JournalUnavailable:
        self._journal_failed(exc)
        return JournalUnavailable(f"the journal cannot commit: {self._journal_fault_cause()}")

    def _committed(
        self, fault: JournalFault | None, results: list[list[dict[str, Any]]], announce: bool
    ) -> list[list[dict[str, Any]]]:
        if fault is not None:
            self._journal_recovered(fault)
            outage, *results = results
            self._announce(outage)
        if announce:
            self._announce([envelope for envelopes in results for envelope in envelopes])
        return results

    def _announce(self, envelopes: list[dict[str, Any]]) -> None:
        """Log journaled events, tell listeners and wake the publisher (after any unlock they carry)."""
        for envelope in envelopes:
            log.info("%s", _describe(envelope), extra={"fields": {"event": envelope}})
            for listener in self.listeners:
                listener(envelope)
        if self.mqtt is not None and envelopes:
            self.mqtt.notify()

    def _journal_failed(self, exc: BaseException) -> None:
        if self._journal_fault is not None:
            log.debug("journal still cannot commit: %s", exc)
            return
        cause = describe_storage_error(exc, self.settings.gateway.state_dir)
        self._journal_fault = JournalFault(since=self.clock.wall(), cause=cause)
        self.metrics.journal_failing.set(1)
        log.error("journal cannot commit (%s): taps are refused and nothing opens until it can", cause)
        self.notifier.status(f"journal failing: {cause}")
        if self.mqtt is not None:
            self.mqtt.state_changed()

    def _journal_fault_cause(self) -> str:
        return self._journal_fault.cause if self._journal_fault is not None else "unknown"

    def _journal_recovered(self, fault: JournalFault) -> None:
        self._journal_fault = None
        self.metrics.journal_failing.set(0)
        log.info(
            "journal commits again after %.0f s unavailable (%s); %d tap(s) were refused meanwhile",
            (self.clock.wall() - fault.since).total_seconds(),
            fault.cause,
            fault.refused_taps,
        )
        self.notifier.status("journal ok")
        if self.mqtt is not None:
            self.mqtt.state_changed()

    def journal_status(self) -> dict[str, Any]:
        """`ok`, or `failing` with since when and why (health_check and `{base}/state` carry it)."""
        fault = self._journal_fault
        if fault is None:
            return {"status": "ok"}
        return {"status": "failing", "since": format_ts(fault.since), "cause": fault.cause}

    # ---- taps --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            credentials=self.credentials.by_uid,
            lockers=self.lockers,
            readers=self.reader_lockers,
            settings=self.policy,
            timezone=self.zone,
            reader_states=self.reader_states,
            used_up=self.used_up,
        )

    def handle_tap(self, read: CardRead) -> list[dict[str, Any]]:
        """Decide, journal (durably), then energise. Returns the journaled envelopes."""
        pending = self._decide_tap(read)
        if pending is None:
            return []
        committing = time.perf_counter()
        try:
            envelopes = self._commit(pending.records, pending.at, pending.writes, announce=False)
        except JournalUnavailable:
            self._refuse([pending])
            return []
        self.metrics.journal_seconds.observe(time.perf_counter() - committing)
        self._apply(pending)
        self._carry_out([(pending, envelopes)])
        return envelopes

    async def handle_taps(self, reads: list[CardRead]) -> list[list[dict[str, Any]]]:
        """Group commit: decide `reads` in order (each against the state the previous ones left),
        journal them in one transaction, then energise. Returns each tap's envelopes ([] for a tap
        not decided or refused).

        The commit runs on the writer thread, and the locks are energised in the callback that
        completes it on the loop (no task wake-up in between). While recent commits were fast and
        the writer is idle, it runs here instead (no hand-over at all: a good disk's commit costs the
        loop less than the two thread wake-ups would cost the tap)."""
        undo = _Undo(self.reader_states, self.lockers, self.used_up)
        decided: list[tuple[int, PendingTap]] = []
        for index, read in enumerate(reads):
            pending = self._decide_tap(read)
            if pending is not None:
                self._apply(pending)  # provisional: the next decision depends on it
                decided.append((index, pending))
        results: list[list[dict[str, Any]]] = [[] for _ in reads]
        if not decided:
            return results
        groups = [Group(p.records, p.at, p.writes) for _, p in decided]
        committing = time.perf_counter()

        def finish(outcome: list[list[dict[str, Any]]] | BaseException) -> list[list[dict[str, Any]]]:
            if isinstance(outcome, BaseException):
                undo.restore(self, [p for _, p in decided])
                if not isinstance(outcome, JournalUnavailable):
                    raise outcome
                self._refuse([p for _, p in decided])
                return results
            elapsed = time.perf_counter() - committing
            for _ in decided:
                self.metrics.journal_seconds.observe(elapsed)
            self._carry_out(
                [(p, envelopes) for (_, p), envelopes in zip(decided, outcome, strict=True)], unlocks_first=True
            )
            for (index, _), envelopes in zip(decided, outcome, strict=True):
                results[index] = envelopes
            return results

        assert self._writer is not None, "gateway not started"
        if self._writer.inline_is_cheap():
            try:
                journaled: list[list[dict[str, Any]]] | BaseException = self._commit_now(groups, announce=False)
            except JournalUnavailable as exc:
                journaled = exc
            return finish(journaled)
        future: asyncio.Future[list[list[dict[str, Any]]]] = asyncio.get_running_loop().create_future()

        def done(outcome: list[list[dict[str, Any]]] | BaseException) -> None:
            try:
                future.set_result(finish(outcome))
            except Exception as exc:
                future.set_exception(exc)

        self._submit(groups, done)
        # Carried out in `done` whatever becomes of this task: a cancelled caller is not left waiting.
        return await future

    def _decide_tap(self, read: CardRead) -> PendingTap | None:
        """The decision on one tap and what it will journal and change; nothing is changed yet."""
        if read.device not in self.reader_lockers:
            return None
        now = self.clock.wall()
        started = time.perf_counter()
        tap = Tap(read.device, read.uid, now, family=tap_family(self.reader_drivers[read.device], read.uid))
        timer = self.clock.timer()
        decision = decide(self.snapshot(), tap, now, timer)
        self.metrics.decision_seconds.observe(time.perf_counter() - started)
        records = decision_records(decision, read.uid, self.hash_uid, self._board_of, self._board_online)
        # A shared locker whose board is offline was not opened: it is neither allocated nor released
        # (the holder's things stay theirs; nobody is given a locker they never got into).
        unopened = {r["locker"] for r in records if r["kind"] == "access.granted" and r["unlock"] == "failed"}
        allocations = [
            (locker_id, occupant) for locker_id, occupant in decision.allocations if locker_id not in unopened
        ]
        records = [
            r for r in records if not (r["kind"] in ("locker.allocated", "locker.released") and r["locker"] in unopened)
        ]
        writes = [StateWrite(f"reader:{read.device}", reader_state_to_json(decision.reader_state))]
        # A single-use credential is used up only by an opening that happened (not at an offline board).
        used_up = decision.used_up if any(r.get("unlock") == "sent" for r in records) else None
        if used_up is not None:
            for record in records:
                if record["kind"] == "access.granted":
                    record["used_up"] = True
            writes.append(StateWrite(f"{USED_UP_PREFIX}{used_up}", {"at": format_ts(now)}))
        new_lockers = dict(self.lockers)
        for locker_id, occupant in allocations:
            old = new_lockers[locker_id]
            new_lockers[locker_id] = _with(old, occupant=occupant)
            writes.append(StateWrite(f"locker:{locker_id}", locker_state_to_json(new_lockers[locker_id])))
        return PendingTap(read, now, timer, decision, records, writes, new_lockers, allocations, used_up)

    def _apply(self, pending: PendingTap) -> None:
        """The in-memory state the decision leaves (once durable, or provisionally within a group)."""
        self.reader_states[pending.read.device] = pending.decision.reader_state
        self.lockers = {
            **self.lockers,
            **{locker_id: pending.lockers[locker_id] for locker_id, _ in pending.allocations},
        }
        if pending.used_up is not None:
            self.used_up.add(pending.used_up)

    def _refuse(self, pendings: list[PendingTap]) -> None:
        """The journal cannot commit: the taps are neither granted nor denied, nothing opens."""
        for pending in pendings:
            if self._journal_fault is not None:
                self._journal_fault.refused_taps += 1
            log.debug("reader %s: tap refused: the journal cannot commit", pending.read.device)
            self.metrics.taps.labels(pending.read.device).inc()
            self.metrics.refused_taps.inc()
            self._signal(pending.read.device, Feedback(Signal.DENIED))  # the person is told at once

    def _carry_out(self, taps: list[tuple[PendingTap, list[dict[str, Any]]]], *, unlocks_first: bool = False) -> None:
        """Durable: energise every granted lock first; then announce, signal and do the bookkeeping.

        With `unlocks_first` the rest waits for the next turn of the loop, so each unlock task writes
        its frame before any of it runs (a task started here only runs once this callback returns)."""
        for _, envelopes in taps:
            for envelope in envelopes:
                if envelope["kind"] == "access.granted" and envelope["unlock"] == "sent":
                    self._energise(envelope["locker"])
        if unlocks_first:
            asyncio.get_running_loop().call_soon(self._after_unlocks, taps)
        else:
            self._after_unlocks(taps)

    def _after_unlocks(self, taps: list[tuple[PendingTap, list[dict[str, Any]]]]) -> None:
        try:
            self._announce([envelope for _, envelopes in taps for envelope in envelopes])
            for pending, envelopes in taps:
                self._follow_up(pending, envelopes)
        except Exception:  # a bug here must not stop the taps after these
            log.exception("failed to follow up %d taps", len(taps))

    def _follow_up(self, pending: PendingTap, envelopes: list[dict[str, Any]]) -> None:
        read, decision = pending.read, pending.decision
        self._show(read.device, envelopes, decision.reader_state, pending.timer)
        self.metrics.taps.labels(read.device).inc()
        if decision.granted:
            for _ in decision.lockers:
                self.metrics.grants.labels(decision.reason).inc()
        elif decision.kind == "access.denied":
            self.metrics.denials.labels(decision.reason).inc()
        if self.mqtt is not None and envelopes:
            credential = envelopes[0].get("credential") or {}
            self.mqtt.tag_scanned(read.device, credential.get("uid_hash"), envelopes[0]["ts"])
        for locker_id, _ in pending.allocations:
            self._locker_changed(locker_id)
        if pending.used_up is not None:
            self._revoke_used_up(pending.used_up)

    def _revoke_used_up(self, credential_id: str) -> None:
        """Have the store revoke a used-up single-use credential (off the tap path); until it has,
        `used_up` refuses it."""
        self.follower.revoke_used_up(
            credential_id,
            state_dir=self.settings.gateway.state_dir,
            zone=self.zone,
            revoked=self.used_up.discard,
            on_failure=_log_task_failure,
        )

    def _show(self, reader_id: str, envelopes: list[dict[str, Any]], state: ReaderState, timer: datetime) -> None:
        """Tell the person at the reader (LED, buzzer) what was decided; a reader fault never spreads.
        `timer` is the monotonic instant of the decision (a lockout's end is on that clock)."""
        feedback = tap_feedback(envelopes, state, self.policy, timer)
        if feedback is not None:
            self._signal(reader_id, feedback)

    def _signal(self, reader_id: str, feedback: Feedback) -> None:
        """One signal to one reader, after the unlock; a reader's fault is logged and goes no further."""
        reader = self.readers.get(reader_id)
        if reader is None:
            return
        try:
            reader.feedback(feedback)
        except Exception:
            log.exception("reader %s: feedback failed", reader_id)

    def handle_keypad(self, entry: KeypadInput) -> None:
        if entry.device not in self.reader_lockers:
            return
        code = code_of_entry(entry.digits)
        if code is not None:  # a visitor code typed as a PIN: decided like a card
            self.handle_tap(CardRead(entry.device, code, entry.at))
            return
        state = self.reader_states.get(entry.device, ReaderState())
        entry_at = self.clock.timer()  # the keypad window is a duration
        self.reader_states[entry.device] = with_keypad(state, KeypadEntry(entry.device, entry.digits, entry_at))

    def _board_of(self, locker_id: str) -> str | None:
        locker = self.lockers.get(locker_id)
        return locker.board if locker else None

    def _board_online(self, board_id: str) -> bool:
        board = self.boards.get(board_id)
        return board is not None and board.online

    def _energise(self, locker_id: str) -> None:
        locker = self.lockers[locker_id]
        if locker.board is None or locker.lock is None:
            return
        board = self.boards[locker.board]
        self.doors.unlock_sent(locker_id, self.clock.timer())  # now, not the tap's time: the deadline runs from here
        task = asyncio.get_running_loop().create_task(board.unlock(locker.lock), name=f"unlock {locker_id}")
        self._unlocks.add(task)
        task.add_done_callback(self._unlocks.discard)
        task.add_done_callback(_log_task_failure)

    # ---- devices -----------------------------------------------------------------------------

    def emit(self, event: DeviceEvent) -> None:
        self.device_events.put_nowait(event)

    def _taken_for_enrolment(self, read: CardRead) -> bool:
        if self.control is not None and self.control.take_card(read.device, read.uid):
            log.info("reader %s: card handed to an enrolment (not decided)", read.device)
            return True
        return False

    def handle_device_event(self, event: DeviceEvent) -> None:
        if isinstance(event, CardRead):
            if not self._taken_for_enrolment(event):
                self.handle_tap(event)
        elif isinstance(event, KeypadInput):
            self.handle_keypad(event)
        elif isinstance(event, BoardStatus):
            self.devices_seen.add(event.device)
            records = self.doors.observe(event.device, event.closed, self.clock.timer())
            changed = self.doors.take_changed()
            self._record(records, self.clock.wall(), [], after=lambda: self._lockers_changed(changed))
        elif isinstance(event, DeviceOnline):
            self.devices_seen.add(event.device)
            self.metrics.devices_online.labels(event.device).set(1)
            kind = "board.online" if event.device in self.board_settings else "reader.online"
            self._record([{"kind": kind, **self._device_field(event.device)}], event.at, [])
        elif isinstance(event, DeviceOffline):
            self.devices_seen.add(event.device)
            self.metrics.devices_online.labels(event.device).set(0)
            is_board = event.device in self.board_settings
            offline: list[str] = []
            if is_board:
                self.doors.board_offline(event.device)
                offline = [locker.id for locker in self.lockers.values() if locker.board == event.device]
            kind = "board.offline" if is_board else "reader.offline"
            record = {"kind": kind, "reason": event.reason, **self._device_field(event.device)}
            self._record([record], event.at, [], after=lambda: self._lockers_changed(offline))
        elif isinstance(event, ReaderFault):
            fault = {
                "kind": "reader.fault",
                "reader": event.device,
                "reason": "bad_frames",
                "bad_frames": event.bad_frames,
            }
            self._record([fault], event.at, [])

    def _device_field(self, device: str) -> dict[str, str]:
        return {"board": device} if device in self.board_settings else {"reader": device}

    # ---- retained locker state -----------------------------------------------------------------

    def locker_payload(self, locker_id: str) -> dict[str, Any]:
        locker = self.lockers[locker_id]
        return {
            "door": self.doors.door(locker_id),
            "service": str(locker.service),
            "occupied": locker.occupant is not None,
            "ts": format_ts(self.clock.wall()),
        }

    def _lockers_changed(self, locker_ids: Iterable[str]) -> None:
        for locker_id in locker_ids:
            self._locker_changed(locker_id)

    def _locker_changed(self, locker_id: str) -> None:
        if self.mqtt is not None:
            self.mqtt.locker_changed(locker_id, self.locker_payload(locker_id))

    # ---- loops -------------------------------------------------------------------------------

    def _drain_device_events(self) -> None:
        while not self.device_events.empty():
            event = self.device_events.get_nowait()
            try:
                self.handle_device_event(event)
            except Exception:
                log.exception("failed to handle %s while stopping", type(event).__name__)

    def _tap_of(self, event: DeviceEvent) -> CardRead | None:
        """The tap an event is to be decided as: a card read (unless an enrolment takes it) or a
        visitor code typed on a keypad."""
        if isinstance(event, CardRead):
            return None if self._taken_for_enrolment(event) else event
        if isinstance(event, KeypadInput) and event.device in self.reader_lockers:
            code = code_of_entry(event.digits)
            if code is not None:
                return CardRead(event.device, code, event.at)
        return None

    async def _consume_device_events(self) -> None:
        """Handle device events in order; the card reads among them that queued up together (while
        the previous commit ran) are decided in order and journaled in one group commit."""
        while True:
            events = [await self.device_events.get()]
            while not self.device_events.empty():
                events.append(self.device_events.get_nowait())
            taps: list[CardRead] = []
            for event in events:
                try:
                    read = self._tap_of(event)
                    if read is not None:
                        taps.append(read)
                        continue
                    if taps:
                        await self.handle_taps(taps)
                        taps = []
                    if not isinstance(event, CardRead):  # a card taken for an enrolment is not decided
                        self.handle_device_event(event)
                except Exception:  # a bug must not stop the gateway deciding
                    log.exception("failed to handle %s", type(event).__name__)
                    taps = []
            if taps:
                try:
                    await self.handle_taps(taps)
                except Exception:
                    log.exception("failed to handle %d taps", len(taps))

    async def _tick(self) -> None:
        watchdog_every = self.notifier.watchdog_interval_s
        last_watchdog = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._periodic_checks(self.clock.wall())
            except Exception:  # a failing check must not stop the others for good
                log.exception("periodic checks failed; retrying")
            # A journal that cannot commit is reported (health_check, state, metrics, log), not a reason
            # for systemd to restart us: a restart would not free the disk, and taps are refused meanwhile.
            due = watchdog_every is not None and time.monotonic() - last_watchdog >= watchdog_every
            if due:
                self.notifier.watchdog()
                last_watchdog = time.monotonic()

    def _periodic_checks(self, now: datetime) -> None:
        probe_due = self.clock.monotonic() - self._last_probe >= PROBE_EVERY_S
        if self._journal_fault is not None and not self._fault_in_flight and probe_due:
            # Also with nothing waiting: committing the journal.unavailable record (and the records
            # that wait behind it) is the probe that notices the journal works again, without waiting
            # for the next tap. A failure was logged when the episode began.
            self._last_probe = self.clock.monotonic()
            self._submit([], lambda outcome: None)
        self._record(self.doors.tick(self.clock.timer()), now, [])
        self.follower.follow(_log_task_failure)
        if not self._ready and self._all_devices_seen():
            self._become_ready()

    async def _prune_without_broker(self) -> None:
        """With no broker (`url = ""`) nothing waits to be sent: retention applies to every event, or the
        journal would grow for ever (with a broker, MqttService prunes sent events)."""
        g = self.settings.gateway
        while True:
            try:
                deleted = self.journal.prune(
                    self.clock.wall(), g.journal_retention_days, g.journal_max_mb * 1024 * 1024, unsent_too=True
                )
                if deleted:
                    log.info(
                        "journal retention (no broker): %d events older than %d days pruned",
                        deleted,
                        g.journal_retention_days,
                    )
            except (sqlite3.Error, OSError) as exc:
                log.error("journal retention failed: %s", exc)
            await asyncio.sleep(RETENTION_EVERY_S)

    def _all_devices_seen(self) -> bool:
        expected = set(self.readers) | set(self.boards)
        return expected <= self.devices_seen or time.monotonic() - self.started_monotonic > 10

    def _become_ready(self) -> None:
        self._ready = True
        devices: list[Reader | LockBoard] = [*self.readers.values(), *self.boards.values()]
        online = sum(1 for device in devices if device.online)
        status = f"ready: {online}/{len(self.readers) + len(self.boards)} devices online"
        self.notifier.ready(status)
        if self.mqtt is not None:
            self.mqtt.set_ready()
        log.info("%s", status)

    def reload(self) -> None:
        """SIGHUP: re-read credentials and the policy section without dropping taps."""
        task = asyncio.get_running_loop().create_task(self.follower.catch_up(), name="reload credentials")
        task.add_done_callback(_log_task_failure)
        if self.config_path is not None:
            try:
                fresh = load_config(self.config_path)
            except Exception as exc:  # a bad edit must not stop a running gateway
                log.error("reload: configuration not changed: %s", exc)
                return
            self.policy = policy_settings(fresh)
            self.doors.left_open_after = timedelta(seconds=fresh.policy.door_left_open_s)
        log.info("reloaded credentials (version %d) and policy", self.credentials.rev)

    # ---- run ---------------------------------------------------------------------------------

    def _warn_about_settings(self) -> None:
        """Settings that run but leave a door open to someone: said at every start (doctor fails them)."""
        mqtt = self.settings.mqtt
        if mqtt.allow_unsigned_requests:
            log.warning(
                "mqtt.allow_unsigned_requests is on: without a key anyone who can publish on the broker can open "
                "lockers and issue credentials (demo only; set mqtt.hmac_key_file)"
            )
        elif mqtt.url and not mqtt.hmac_key_file:
            log.warning(
                "no mqtt.hmac_key_file: every request except health_check and events/replay will be refused "
                "(make a key with: lockergw keygen --out FILE)"
            )
        for reader in self.settings.readers:
            if reader.driver == "osdp" and not reader.scbk_file:
                log.warning(
                    "reader %s: OSDP without a secure-channel key (scbk_file): card numbers cross the wire in "
                    "plain text (see docs/security.md)",
                    reader.id,
                )

    async def run(self) -> int:
        # One gateway per state directory: the lock comes before any port, the journal, the broker or
        # the control socket is touched (StateDirBusy names the pid that holds it).
        prepare_state_dir(self.settings.gateway.state_dir)
        with StateDirLock(self.settings.gateway.state_dir):
            return await self._run_locked()

    async def _run_locked(self) -> int:
        from gateway.devices import build_devices

        loop = asyncio.get_running_loop()
        # Checked before anything is journaled, so a driver or broker setting that cannot work stops
        # start-up with one line and leaves no trace.
        self.readers, self.boards = build_devices(self.settings)
        if self.settings.mqtt.url:
            from gateway.mqtt.link import check

            check(self.settings.mqtt)
        self._warn_about_settings()
        self._open_state()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            self._journal_startup()
            self.metrics.track_backlog(self.journal.backlog)
            self.metrics.broker_connected.set_function(
                lambda: 1.0 if self.mqtt is not None and self.mqtt.connected else 0.0
            )
            self.metrics.broker_refuses_events.set_function(
                lambda: 1.0 if self.mqtt is not None and self.mqtt.refusal is not None else 0.0
            )
            metrics_server = None
            if self.settings.metrics.port is not None:
                metrics_server = self.metrics.serve(self.settings.metrics.host, self.settings.metrics.port)
            async with contextlib.AsyncExitStack() as stack:
                self.control = await stack.enter_async_context(
                    ControlServer(self.settings.gateway.state_dir, lambda: set(self.reader_lockers))
                )
                if self.settings.mqtt.url:
                    from gateway.mqtt.service import MqttService

                    self.mqtt = await stack.enter_async_context(
                        MqttService(self.settings, self.journal, self.store, self, self._site_key)
                    )
                devices: list[Reader | LockBoard] = [*self.readers.values(), *self.boards.values()]
                device_tasks = [
                    loop.create_task(device.run(self.emit), name=f"device {device.id}") for device in devices
                ]
                own_tasks = [
                    loop.create_task(self._consume_device_events(), name="device events"),
                    loop.create_task(self._tick(), name="tick"),
                ]
                if not self.settings.mqtt.url:
                    own_tasks.append(loop.create_task(self._prune_without_broker(), name="journal retention"))
                for task in [*device_tasks, *own_tasks]:
                    task.add_done_callback(_log_task_failure)
                await self._stop.wait()
                self.notifier.stopping()
                await _cancel(own_tasks)
                # A group commit handed over before the cancel is carried out by its completion on the
                # loop: let it arrive (so its unlocks are among those awaited below).
                assert self._writer is not None
                await asyncio.to_thread(self._writer.drain)
                await asyncio.sleep(0)
                # Finish what is in hand: taps already read are decided, and their unlocks go out while
                # the boards are still running; door and device reports are journaled, not dropped.
                self._drain_device_events()
                if self._unlocks:
                    await asyncio.wait(self._unlocks, timeout=1.0)
                await self.follower.settle_revocations()
                await _cancel(device_tasks)
                self._drain_device_events()
                await self.follower.stop()  # before its connection is closed (in `finally` below)
                try:
                    self._append([{"kind": "gateway.stopped", "reason": "stopped"}], self.clock.wall())
                except JournalUnavailable as exc:
                    log.warning("stopping: gateway.stopped could not be journaled (%s)", exc)
                if self.mqtt is not None:
                    await self.mqtt.flush(timeout=STOP_BUDGET_S - 1)
            if metrics_server is not None:
                metrics_server.shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if self._writer is not None:
                self._writer.close()
            self.journal.close()
            self.store.close()
            if self._follow_store_db is not None:
                self._follow_store_db.close()
        return 0

    # ---- GatewayOps (MQTT requests) ---------------------------------------------------------

    def health(self) -> dict[str, Any]:
        version, digest = self.store.version_and_digest()
        journal = self.journal_status()
        refusal = self.mqtt.refusal if self.mqtt is not None else None
        health: dict[str, Any] = {
            "state": "online",
            "status": "ok" if journal["status"] == "ok" and refusal is None else "degraded",
            "boot_id": self.boot_id,
            "version": __version__,
            "uptime_s": int(time.monotonic() - self.started_monotonic),
            "readers": {r.id: "online" if r.online else "offline" for r in self.readers.values()},
            "boards": {b.id: "online" if b.online else "offline" for b in self.boards.values()},
            "journal": {"last_seq": self.journal.last_seq, "backlog": self.journal.backlog(), **journal},
            "credentials": {"version": version, "digest": digest, "count": len(self.credentials.by_id)},
        }
        if refusal is not None:
            health["broker_refuses_events"] = refusal
        return health

    def info(self) -> dict[str, Any]:
        version, digest = self.store.version_and_digest()
        return {
            "version": __version__,
            "site": self.settings.gateway.site,
            "gateway": self.settings.gateway.id,
            "boot_id": self.boot_id,
            "readers": [{"id": r.id, "driver": r.driver, "lockers": list(r.lockers)} for r in self.settings.readers],
            "boards": [{"id": b.id, "driver": b.driver, "address": b.address} for b in self.settings.boards],
            "lockers": [
                {"id": x.id, "section": x.section, "department": x.department, "mode": x.mode, "board": x.board}
                for x in self.settings.lockers
            ],
            "credentials": {"version": version, "digest": digest},
        }

    def locker_states(self) -> dict[str, dict[str, Any]]:
        return {locker_id: self.locker_payload(locker_id) for locker_id in self.lockers}

    async def credentials_changed(self) -> None:
        await self.follower.catch_up()

    def _info_changed(self) -> None:
        if self.mqtt is not None:
            self.mqtt.info_changed()

    async def open_locker(
        self, locker: str, operator: str, reason: str, authorizers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return await self.locker_ops.open_locker(locker, operator, reason, authorizers)

    async def set_locker_service(self, locker: str, service: str, by: str) -> dict[str, Any]:
        return await self.locker_ops.set_locker_service(locker, service, by)

    async def assign_locker(self, locker: str, credential_id: str, by: str) -> dict[str, Any]:
        return await self.locker_ops.assign_locker(locker, credential_id, by)

    async def release_locker(self, locker: str, by: str) -> dict[str, Any]:
        return await self.locker_ops.release_locker(locker, by)


@dataclass(frozen=True, slots=True)
class PendingTap:
    """A decided tap on its way to the journal: its records and the state it changes."""

    read: CardRead
    at: datetime
    timer: datetime
    decision: Decision
    records: list[dict[str, Any]]
    writes: list[StateWrite]
    lockers: dict[str, Locker]
    allocations: list[tuple[str, str | None]]
    used_up: str | None


class _Undo:
    """What a group of provisional tap decisions replaced, to put back if their commit fails —
    only what they changed: the loop kept running while the commit did (a remote change, a keypad
    entry), and that stays."""

    def __init__(self, reader_states: dict[str, ReaderState], lockers: dict[str, Locker], used_up: set[str]) -> None:
        self.reader_states = dict(reader_states)
        self.lockers = lockers
        self.used_up = set(used_up)

    def restore(self, gateway: Gateway, pendings: list[PendingTap]) -> None:
        for pending in pendings:
            reader = pending.read.device
            if reader in self.reader_states:
                gateway.reader_states[reader] = self.reader_states[reader]
            else:
                gateway.reader_states.pop(reader, None)
            for locker_id, _ in pending.allocations:
                if locker_id in self.lockers:
                    gateway.lockers = {**gateway.lockers, locker_id: self.lockers[locker_id]}
            if pending.used_up is not None and pending.used_up not in self.used_up:
                gateway.used_up.discard(pending.used_up)


def tap_family(driver: str, uid: str) -> str:
    """ "em4100" for a 10-hex uid from a 125 kHz reader (RDM6300, or an ASCII reader reporting hex): the
    only taps a credential enrolled from a printed fob form may match by its low bits (SPEC §4)."""
    if driver in ("rdm6300", "serial-ascii") and len(uid) == EM4100_HEX:
        return EM4100
    return ""


def _with(locker: Locker, **changes: Any) -> Locker:
    return replace(locker, **changes)


def _describe(envelope: dict[str, Any]) -> str:
    parts = [f"#{envelope['seq']} {envelope['kind']}"]
    for key in ("reader", "board", "locker", "reason", "unlock"):
        if envelope.get(key):
            parts.append(f"{key}={envelope[key]}")
    credential = envelope.get("credential")
    if isinstance(credential, dict) and credential.get("id"):
        parts.append(f"credential={credential['id']} holder={credential['holder']}")
    return " ".join(parts)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _log_task_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed: %s", task.get_name(), exc, exc_info=exc)
