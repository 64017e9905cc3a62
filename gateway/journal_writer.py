"""Journal commits off the event loop: one dedicated writer thread, one commit at a time.

A `synchronous=FULL` commit is 0.5–0.75 ms on a good disk but 5–30 ms on an SD card; run on the event
loop, every reader, door and the broker link would wait for it. Every journal write of the running
daemon is handed to this thread (`submit`), in the order it was decided; the thread commits what has
queued up in one transaction (group commit across taps, door reports, remote opens…), so `seq`
follows submission order, and completes the whole batch on the loop with one `call_soon_threadsafe`.

The hand-over is a deque and a condition, not an executor: the loop appends a job and notifies; the
thread never waits on anything but that condition and the disk. `commit_now` commits on the calling
thread instead (after whatever is queued): start-up, shutdown, and a tap while the disk is fast
(`inline_is_cheap`), where two thread wake-ups would cost the tap more than the commit costs the loop.

The unlock itself is not written from this thread: the Kerong bus is an asyncio transport owned by
the loop, so it would take a `call_soon_threadsafe` to it anyway — the same hop that completes the
commit, after which the unlock is started directly in the completion callback.

Records of things that already happened (`keep=True`: a door moved, a board went offline) are never
dropped: when a commit fails they stay here, at the head, and go in first with the next commit, so a
later record can never overtake them. Everything else (a tap's decision) fails with the commit: it
was not carried out, and the caller says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.journal import Group, Journal

log = logging.getLogger(__name__)

Envelopes = list[list[dict[str, Any]]]
#: Called on the loop once the job is durable (its groups' envelopes) or has failed (the exception).
Done = Callable[[Envelopes | BaseException], None]

STORAGE_ERRORS = (sqlite3.Error, OSError)

#: A tap is committed on the event loop itself (no hand-over: two thread wake-ups less) only while
#: the median of the last RECENT_COMMITS commits, and the last one, took less than this — a good disk.
#: A slow commit (an SD card, a busy disk) sends at least the next one to the writer thread, a slow
#: disk all of them; the loop stalls for one slow commit at a time at most.
INLINE_COMMIT_MAX_S = 0.004
RECENT_COMMITS = 8


@dataclass(slots=True)
class _Job:
    groups: list[Group]
    keep: bool
    done: Done | None
    loop: asyncio.AbstractEventLoop | None
    #: Goes in at the head of the transaction, before kept records (the record of an outage that ends).
    lead: Group | None = None
    reported: bool = False  # a kept job whose failure was already reported once
    outcome: Envelopes | BaseException | None = field(default=None)


async def durable(submit: Callable[[Done], None]) -> Envelopes:
    """Hand a commit over with `submit(done)` and await its envelopes; raises what the commit raised.
    A commit once handed over is awaited even if the caller is cancelled meanwhile; the cancellation
    is delivered at the caller's next await, once it has finished what the commit decided."""
    future: asyncio.Future[Envelopes] = asyncio.get_running_loop().create_future()

    def done(outcome: Envelopes | BaseException) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    submit(done)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        task = asyncio.current_task()
        if task is not None:
            task.cancel()
    return result


class JournalWriter:
    """`submit(groups, done)` from the loop; `commit_now(groups)` from any thread (blocks it);
    `on_failure(exc)` is called on the loop when a commit holding kept records fails; `close()` when
    done (what is queued is committed first)."""

    def __init__(self, journal: Journal, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.journal = journal
        self.on_failure = on_failure
        self._ready = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._kept: list[_Job] = []  # kept records that failed to commit: they go in first, next time
        self._busy = False
        self._closing = False
        #: How long recent commits took (s), whichever thread ran them; a failure counts as slow.
        self._recent: deque[float] = deque(maxlen=RECENT_COMMITS)
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    # -- loop side

    def submit(
        self, groups: Sequence[Group], done: Done | None = None, *, keep: bool = False, lead: Group | None = None
    ) -> None:
        """Queue `groups` for the next commit, after everything submitted before; `done` runs on this
        loop with the envelopes, or the exception (not for a kept job: it is retried until it commits).
        A `lead` group goes in first in its transaction, even before kept records; its envelopes come
        first in the outcome."""
        loop = asyncio.get_running_loop() if done is not None or keep else None
        job = _Job(list(groups), keep, done, loop, lead)
        with self._ready:
            if self._closing:
                raise RuntimeError("the journal writer is closed")
            self._jobs.append(job)
            self._ready.notify_all()  # not just one: a `drain` or `commit_now` may be waiting too

    def commit_now(self, groups: Sequence[Group], *, lead: Group | None = None) -> Envelopes:
        """Commit on the calling thread, after everything queued (waits for it) and with any kept
        records first; raises what the commit raised. For start-up, shutdown and the on-the-loop
        baseline; the running daemon uses `submit`."""
        job = _Job(list(groups), False, None, None, lead)
        with self._ready:
            while self._jobs or self._busy:
                self._ready.wait()
            self._busy = True
        try:
            self._complete(self._commit([job]))
        finally:
            with self._ready:
                self._busy = False
                self._ready.notify_all()
        if isinstance(job.outcome, BaseException):
            raise job.outcome
        assert job.outcome is not None
        return job.outcome

    def inline_is_cheap(self) -> bool:
        """Whether a commit on the calling thread would neither wait for the writer nor, by recent
        evidence, take long: nothing queued or running, nothing kept, and recent commits fast."""
        recent = self._recent
        return (
            not self._jobs
            and not self._busy
            and not self._kept
            and len(recent) > 0  # the first commit (at start-up, gateway.started) tells
            and recent[-1] < INLINE_COMMIT_MAX_S
            and statistics.median(recent) < INLINE_COMMIT_MAX_S
        )

    def drain(self) -> None:
        """Block until everything submitted so far is committed (or has failed); its completions
        still run on the loop, at its next turn."""
        with self._ready:
            while self._jobs or self._busy:
                self._ready.wait()

    @property
    def waiting(self) -> int:
        """How many kept jobs wait for a commit that succeeds."""
        return len(self._kept)

    def close(self) -> None:
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        self._thread.join()

    # -- writer thread

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closing:
                    self._ready.wait()
                if not self._jobs:
                    return
                batch = list(self._jobs)
                self._jobs.clear()
                self._busy = True
            try:
                self._complete(self._commit(batch))
            finally:
                with self._ready:
                    self._busy = False
                    self._ready.notify_all()

    def _commit(self, batch: list[_Job]) -> list[_Job]:
        """One transaction for the kept records and `batch`; sets each job's outcome and returns the
        jobs it covered (kept ones first)."""
        jobs = [*self._kept, *batch]
        leads = [job for job in jobs if job.lead is not None]
        groups = [job.lead for job in leads if job.lead is not None] + [group for job in jobs for group in job.groups]
        started = time.perf_counter()
        try:
            results = self.journal.append_groups(groups)
        except STORAGE_ERRORS as exc:
            self._recent.append(float("inf"))
            self._kept = [job for job in jobs if job.keep]
            for job in jobs:
                job.outcome = exc
            return jobs
        except Exception as exc:  # a bad record (ValueError): only its own job fails
            if len(jobs) > 1:
                self._kept = []
                for job in jobs:
                    self._commit([job])
                self._kept = [job for job in jobs if job.keep and isinstance(job.outcome, STORAGE_ERRORS)]
                return jobs
            self._kept = []
            jobs[0].outcome = exc
            return jobs
        self._recent.append(time.perf_counter() - started)
        self._kept = []
        start = len(leads)
        for job in jobs:
            led = [results[leads.index(job)]] if job.lead is not None else []
            job.outcome = led + results[start : start + len(job.groups)]
            start += len(job.groups)
        return jobs

    def _complete(self, jobs: list[_Job]) -> None:
        """Hand the outcomes to the loop: one call_soon_threadsafe for the whole batch."""
        jobs = [job for job in jobs if job.loop is not None]
        loop = next((job.loop for job in jobs), None)
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(self._deliver, jobs)

    def _deliver(self, jobs: list[_Job]) -> None:
        failure: BaseException | None = None
        for job in jobs:
            outcome = job.outcome
            if job.keep and isinstance(outcome, STORAGE_ERRORS):
                if not job.reported:
                    job.reported = True
                    failure = outcome
                continue
            if job.done is not None and outcome is not None:
                try:
                    job.done(outcome)
                except Exception:
                    log.exception("journal writer: completion failed")
        if failure is not None and self.on_failure is not None:
            self.on_failure(failure)
