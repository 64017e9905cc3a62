"""What the person at a reader is shown after a tap: pure, from the journaled envelopes.

A grant whose lock was energised is green; a refusal — and a grant at an offline board, which
opens nothing — is red; a two-person emergency opening waiting for its second person blinks amber
for the two-person window; the denial that locks a reader out, and every tap during a lockout,
shows the lockout pattern for the rest of the lockout. A tap refused because the journal cannot
commit (nothing journaled, nothing opened) is red too: the daemon signals that itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from drivers.base import Feedback, Signal
from gateway.policy import OVERRIDE_PENDING, PolicySettings, ReaderState, Reason


def tap_feedback(
    envelopes: Sequence[dict[str, Any]], state: ReaderState, settings: PolicySettings, timer: datetime
) -> Feedback | None:
    """The signal for one decided tap (its journaled envelopes and the reader's state after it).

    `timer` is the decision's instant on the clock the reader state's durations run on (the daemon's
    monotonic timer, not the wall clock), so a lockout's remaining time survives a wall-clock step."""
    kinds = [envelope["kind"] for envelope in envelopes]
    if not kinds:
        return None
    locked_out = "reader.lockout" in kinds or any(
        envelope.get("reason") == Reason.READER_LOCKED_OUT for envelope in envelopes
    )
    if locked_out and state.locked_until is not None:
        return Feedback(Signal.LOCKED_OUT, max(0.1, (state.locked_until - timer).total_seconds()))
    if OVERRIDE_PENDING in kinds:
        return Feedback(Signal.PENDING, settings.two_person_window_s)
    opened = any(e["kind"] == "access.granted" and e.get("unlock") == "sent" for e in envelopes)
    return Feedback(Signal.GRANTED if opened else Signal.DENIED)
