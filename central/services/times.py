"""Central keeps every time in UTC; SQLite hands datetimes back without their zone."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.events import format_ts


def utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime (naive values are taken to be UTC already)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def iso(value: datetime | None) -> str | None:
    """The envelope's own time format (`2026-11-28T10:11:12.345Z`), or None."""
    return None if value is None else format_ts(utc(value))
