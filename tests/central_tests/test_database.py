"""Central's database: created from the schema on a new database, left alone on a second open, partitioned
by month on PostgreSQL, and a plain one-line error for a database that cannot be opened."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from central.database import DatabaseError, open_database
from central.schema import metadata


def test_a_new_database_gets_every_table_and_a_second_open_changes_nothing(central_database: str) -> None:
    engine = open_database(central_database)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        engine.dispose()
        engine = open_database(central_database)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == revision
    finally:
        engine.dispose()


def test_postgresql_events_are_partitioned_by_month(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    try:
        now = datetime.now(UTC)
        with engine.connect() as connection:
            partitions = set(
                connection.execute(
                    text("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events'::regclass")
                ).scalars()
            )
        assert f"events_{now.year:04d}_{now.month:02d}" in partitions
        assert "events_default" in partitions
    finally:
        engine.dispose()


def test_an_unusable_database_is_one_plain_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DatabaseError) as caught:
        open_database(f"sqlite:///{blocker}/central.db")
    assert "\n" not in str(caught.value)
    with pytest.raises(DatabaseError) as caught:
        open_database("postgresql://postgres@127.0.0.1:5432/no_such_database_here")
    assert "no_such_database_here" in str(caught.value)


def _open_and_count_tables(url: str) -> int:
    engine = open_database(url)
    try:
        return len(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_two_processes_opening_one_fresh_postgresql_database_at_once_both_succeed(postgres_url: str) -> None:
    """Two workers started together on a new database: the advisory lock makes one create the schema and
    the other find it (without it, one fails on `pg_type_typname_nsp_index`)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        counts = pool.map(_open_and_count_tables, [postgres_url, postgres_url])
    assert counts[0] == counts[1] >= len(metadata.tables)
