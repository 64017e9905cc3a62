"""Weekly schedules: what an operator may write, what it means, and how a mistake is reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.schedule import DAY_NAMES, Window, parse_schedule

LONDON = ZoneInfo("Europe/London")
# 2026-06-08 is a Monday.
MONDAY = datetime(2026, 6, 8)


def at(day: int, hh: int, mm: int, ss: int = 0) -> datetime:
    """Local wall-clock time on the day `day` days after Monday 2026-06-08."""
    return MONDAY + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def test_office_hours() -> None:
    office = parse_schedule("Mon-Fri 07:30-18:00")
    assert office.allows(at(0, 7, 30))
    assert office.allows(at(4, 17, 59, 59))
    assert not office.allows(at(0, 7, 29, 59))
    assert not office.allows(at(0, 18, 0))
    assert not office.allows(at(5, 12, 0))  # Saturday


def test_several_windows_either_separator() -> None:
    for text in ("Mon-Fri 07:30-18:00; Sat 09:00-12:00", "Mon-Fri 07:30-18:00, Sat 09:00-12:00"):
        schedule = parse_schedule(text)
        assert schedule.allows(at(5, 9, 0))
        assert not schedule.allows(at(5, 12, 0))
        assert not schedule.allows(at(6, 10, 0))
        assert schedule.allows(at(2, 10, 0))
        assert len(schedule.windows) == 2


def test_crossing_midnight_runs_into_the_next_day() -> None:
    night = parse_schedule("Sun 22:00-06:00")
    assert night.allows(at(6, 22, 0))  # Sunday 22:00
    assert night.allows(at(7, 5, 59))  # Monday 05:59 (the week wraps)
    assert not night.allows(at(7, 6, 0))
    assert not night.allows(at(6, 5, 0))  # Sunday early morning is Saturday night's, not in this schedule


def test_day_ranges_wrap_the_week_and_names_are_forgiving() -> None:
    weekend = parse_schedule("fri-MON 10:00-11:00")
    assert weekend.windows == (Window(days=(4, 5, 6, 0), start=36000, end=39600),)
    assert parse_schedule("Saturday 10:00-11:00").windows[0].days == (5,)
    assert parse_schedule("  Mon  -  Tue   9:00 - 17:00 ; ").windows[0].days == (0, 1)


def test_no_days_means_every_day_and_24_00_closes_the_day() -> None:
    always = parse_schedule("00:00-24:00")
    assert all(always.allows(at(day, 23, 59, 59)) and always.allows(at(day, 0, 0)) for day in range(7))
    evenings = parse_schedule("18:00-24:00")
    assert evenings.allows(at(3, 23, 59, 59))
    assert not evenings.allows(at(4, 0, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "schedule is empty"),
        (" ; ", "schedule is empty"),
        ("Mon-Fri", "is not like 'Mon-Fri 07:30-18:00'"),
        ("Mon-Fri 7.30-18.00", "is not like"),
        ("Mun-Fri 07:30-18:00", "unknown day 'Mun'"),
        ("Mon-Fri 07:30-25:00", "'25:00' is not a time of day (00:00-24:00)"),
        ("Mon 24:00-06:00", "'24:00' is not a time of day (00:00-23:59)"),
        ("Mon 07:60-08:00", "'07:60' is not a time of day"),
        ("Mon 08:00-08:00", "is empty (start equals end)"),
        ("Mon,Wed 08:00-09:00", "schedule window 'Mon' is not like"),
    ],
)
def test_mistakes_are_one_plain_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        parse_schedule(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_parsed_schedules_are_cached() -> None:
    assert parse_schedule("Mon-Fri 07:30-18:00") is parse_schedule("Mon-Fri 07:30-18:00")


@pytest.mark.parametrize(
    ("utc", "inside"),
    [
        (datetime(2026, 3, 29, 6, 29, tzinfo=UTC), False),  # spring forward day, 07:29 BST
        (datetime(2026, 3, 29, 6, 30, tzinfo=UTC), True),  # 07:30 BST
        (datetime(2026, 3, 29, 17, 0, tzinfo=UTC), False),  # 18:00 BST
        (datetime(2026, 10, 25, 7, 29, tzinfo=UTC), False),  # fall back day, 07:29 GMT
        (datetime(2026, 10, 25, 7, 30, tzinfo=UTC), True),  # 07:30 GMT
        (datetime(2026, 10, 25, 17, 59, tzinfo=UTC), True),  # 17:59 GMT
    ],
)
def test_dst_days_in_london(utc: datetime, inside: bool) -> None:
    assert parse_schedule("07:30-18:00").allows(utc.astimezone(LONDON)) is inside


def test_window_over_the_spring_gap_and_the_repeated_autumn_hour() -> None:
    early = parse_schedule("Sun 00:30-03:00")
    # 01:00 UTC on 29 March is 02:00 BST (01:xx local never happens that day)
    assert early.allows(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).astimezone(LONDON))
    assert not early.allows(datetime(2026, 3, 29, 2, 0, tzinfo=UTC).astimezone(LONDON))  # 03:00 BST
    # 01:30 happens twice on 25 October; both are inside
    assert early.allows(datetime(2026, 10, 25, 0, 30, tzinfo=UTC).astimezone(LONDON))  # 01:30 BST
    assert early.allows(datetime(2026, 10, 25, 1, 30, tzinfo=UTC).astimezone(LONDON))  # 01:30 GMT


# ---- properties ---------------------------------------------------------------------------------

windows = st.tuples(
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(0, 24 * 60 - 1),
    st.integers(1, 24 * 60),
).filter(lambda w: w[2] != w[3])


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def reference_allows(spec: list[tuple[int, int, int, int]], day: int, minute: int) -> bool:
    """Brute force: walk each window minute by minute from each of its start days."""
    for first, last, start, end in spec:
        days = [(first + k) % 7 for k in range((last - first) % 7 + 1)]
        length = (end - start) % (24 * 60) or 24 * 60
        for start_day in days:
            begin = start_day * 24 * 60 + start
            offset = (day * 24 * 60 + minute - begin) % (7 * 24 * 60)
            if offset < length:
                return True
    return False


@given(st.lists(windows, min_size=1, max_size=4), st.integers(0, 6), st.integers(0, 24 * 60 - 1))
def test_parsed_schedule_agrees_with_brute_force(spec: list[tuple[int, int, int, int]], day: int, minute: int) -> None:
    text = "; ".join(f"{DAY_NAMES[a].title()}-{DAY_NAMES[b].title()} {hhmm(s)}-{hhmm(e)}" for a, b, s, e in spec)
    schedule = parse_schedule(text)
    assert schedule.allows(at(day, minute // 60, minute % 60)) == reference_allows(spec, day, minute)


@given(st.text(max_size=40))
def test_any_text_either_parses_or_raises_value_error(text: str) -> None:
    try:
        schedule = parse_schedule(text)
    except ValueError as error:
        assert str(error)
    else:
        assert schedule.windows
