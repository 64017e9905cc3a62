"""Weekly access windows of a credential (SPEC §4 `schedule`), e.g. ``Mon-Fri 07:30-18:00; Sat 09:00-12:00``.

Grammar (case-insensitive, spaces free around separators):

    schedule := window ((";" | ",") window)*
    window   := [days] time "-" time
    days     := day | day "-" day            (Mon..Sun or Monday..Sunday; "Fri-Mon" wraps the week)
    time     := HH:MM                        (00:00 .. 23:59; 24:00 only as an end)

A window without days applies every day. An end earlier than its start crosses midnight:
``Fri 22:00-06:00`` runs from Friday 22:00 to Saturday 06:00. Starts are inclusive, ends exclusive.

Windows are wall-clock times: `Schedule.allows` takes a *local* datetime (the gateway converts the
tap's instant into `gateway.timezone` first), so a 07:30 opening stays 07:30 across DST changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SECONDS_PER_DAY = 24 * 3600

_WINDOW = re.compile(
    r"^(?:(?P<first>[a-z]+)\s*(?:-\s*(?P<last>[a-z]+))?\s+)?"
    r"(?P<start>[0-9]{1,2}:[0-9]{2})\s*-\s*(?P<end>[0-9]{1,2}:[0-9]{2})$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"[;,]")


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly window as written: the days it starts on (0 = Monday) and wall-clock seconds of day."""

    days: tuple[int, ...]
    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule. `spans[weekday]` are the half-open [start, end) second ranges open that day."""

    text: str
    windows: tuple[Window, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]

    def allows(self, local_dt: datetime) -> bool:
        """Whether the wall-clock time of `local_dt` (already in the gateway's zone) lies in a window."""
        second = local_dt.hour * 3600 + local_dt.minute * 60 + local_dt.second
        for start, end in self.spans[local_dt.weekday()]:  # noqa: SIM110 (no generator on every tap)
            if start <= second < end:
                return True
        return False


def _day(name: str, window: str) -> int:
    lowered = name.lower()
    if lowered in DAY_NAMES:
        return DAY_NAMES.index(lowered)
    if lowered in _FULL_DAY_NAMES:
        return _FULL_DAY_NAMES.index(lowered)
    raise ValueError(f"schedule window {window!r}: unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def _seconds(text: str, window: str, *, is_end: bool) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours == 24 and minutes == 0 and is_end:
        return _SECONDS_PER_DAY
    if hours > 23 or minutes > 59:
        limit = "00:00-24:00" if is_end else "00:00-23:59"
        raise ValueError(f"schedule window {window!r}: {text!r} is not a time of day ({limit})")
    return hours * 3600 + minutes * 60


def _window(raw: str) -> Window:
    window = " ".join(raw.split())
    match = _WINDOW.match(window)
    if match is None:
        raise ValueError(f"schedule window {window!r} is not like 'Mon-Fri 07:30-18:00' (days, then HH:MM-HH:MM)")
    first, last = match.group("first"), match.group("last")
    if first is None:
        days = tuple(range(7))
    else:
        begin = _day(first, window)
        finish = _day(last, window) if last is not None else begin
        days = tuple((begin + offset) % 7 for offset in range((finish - begin) % 7 + 1))
    start = _seconds(match.group("start"), window, is_end=False)
    end = _seconds(match.group("end"), window, is_end=True)
    if start == end:
        raise ValueError(f"schedule window {window!r} is empty (start equals end); for a whole day write 00:00-24:00")
    return Window(days=days, start=start, end=end)


def _spans(windows: tuple[Window, ...]) -> tuple[tuple[tuple[int, int], ...], ...]:
    per_day: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for window in windows:
        for day in window.days:
            if window.crosses_midnight:
                per_day[day].append((window.start, _SECONDS_PER_DAY))
                per_day[(day + 1) % 7].append((0, window.end))
            else:
                per_day[day].append((window.start, window.end))
    return tuple(tuple(sorted(spans)) for spans in per_day)


@lru_cache(maxsize=4096)
def parse_schedule(text: str) -> Schedule:
    """Parse schedule text or raise ValueError with a one-line message naming the bad window.

    Cached on the text: the policy calls this on every tap of a scheduled credential.
    """
    parts = [part for part in (piece.strip() for piece in _SEPARATOR.split(text)) if part]
    if not parts:
        raise ValueError("schedule is empty (write e.g. 'Mon-Fri 07:30-18:00', or leave it unset)")
    windows = tuple(_window(part) for part in parts)
    return Schedule(text=text, windows=windows, spans=_spans(windows))
