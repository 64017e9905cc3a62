"""Small dialect seams the worker's modules share: `INSERT … ON CONFLICT` for SQLite and PostgreSQL alike,
UTC times read back from SQLite (which stores them without an offset), and text a database can hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(connection: Connection, table: Table) -> Any:
    """The dialect's `insert(table)`, which has `.on_conflict_do_nothing()` and `.on_conflict_do_update()`."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands them back naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def storable(value: Any) -> str | None:
    """`value` as text any database can index: NUL and unpaired surrogates escaped; a non-text value by str()."""
    if value is None:
        return None
    text_ = value if isinstance(value, str) else str(value)
    text_ = text_.encode("utf-8", "backslashreplace").decode("utf-8")
    return text_.replace("\x00", "\\u0000")
