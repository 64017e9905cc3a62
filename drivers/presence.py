"""What every reader does with the frames its parser yields (SPEC §5 row 1 and "one presentation, one tap").

`PresenceFilter` folds the frames of a card held in the field into one tap; `BadFrameCounter` turns
persistent garbage into one `ReaderFault` instead of an event per bad frame. Both take the time as a
plain monotonic number so that they can be tested without a clock.
"""

from __future__ import annotations

from collections import deque

#: Bad frames within `FAULT_WINDOW_S` that make a reader fault.
FAULT_THRESHOLD = 10
FAULT_WINDOW_S = 10.0
#: After a fault, another is reported only after a good frame or this long.
FAULT_REARM_S = 60.0


class PresenceFilter:
    """One tap per presentation: frames of the same uid less than `repeat_gap_s` apart are one tap.

    The gap is measured from the card's previous frame, so a card held for minutes is still one tap,
    and after a silence of at least `repeat_gap_s` the same card is a new tap. A different card is a
    new tap at once.
    """

    def __init__(self, repeat_gap_s: float) -> None:
        self.repeat_gap_s = repeat_gap_s
        self._last_seen: dict[str, float] = {}

    def is_new_tap(self, uid: str, now: float) -> bool:
        """Record a frame of `uid` at `now`; True when it starts a new presentation."""
        previous = self._last_seen.get(uid)
        self._last_seen[uid] = now
        if len(self._last_seen) > 64:
            self._forget_before(now - self.repeat_gap_s)
        return previous is None or now - previous >= self.repeat_gap_s

    def _forget_before(self, cutoff: float) -> None:
        for uid in [uid for uid, seen in self._last_seen.items() if seen < cutoff]:
            del self._last_seen[uid]


class BadFrameCounter:
    """Counts bad frames and says when they amount to a reader fault.

    A fault is due when `threshold` or more bad frames fall within `window_s`; after one, the next is
    due only once a good frame has arrived, or `rearm_s` after that fault.
    """

    def __init__(
        self,
        threshold: int = FAULT_THRESHOLD,
        window_s: float = FAULT_WINDOW_S,
        rearm_s: float = FAULT_REARM_S,
    ) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.rearm_s = rearm_s
        self.total = 0
        self._recent: deque[float] = deque()
        self._faulted_at: float | None = None

    def bad(self, now: float, count: int = 1) -> int | None:
        """Record `count` bad frames at `now`; return the number within the window when a fault is due."""
        if count <= 0:
            return None
        self.total += count
        self._recent.extend([now] * count)
        while self._recent and self._recent[0] <= now - self.window_s:
            self._recent.popleft()
        if len(self._recent) < self.threshold:
            return None
        if self._faulted_at is not None and now - self._faulted_at < self.rearm_s:
            return None
        self._faulted_at = now
        return len(self._recent)

    def good(self) -> None:
        """A good frame arrived: the next burst of garbage may fault again."""
        self._faulted_at = None
