"""Opening central's database: an engine for the configured URL, the schema brought up to date, and the
monthly partitions of PostgreSQL's events table.

A new, empty database gets the current schema (`schema.metadata`) and is stamped with Alembic's head
revision; an existing one is upgraded by the migrations under central/migrations (Alembic's "create
then stamp" recipe). A schema change is therefore made twice, on purpose: in schema.py for new
databases and as a migration for existing ones — a test compares the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from central.schema import metadata

MIGRATIONS = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock taken around create/migrate (any fixed 64-bit number; "lockergw" in ASCII).
SCHEMA_LOCK = 0x6C6F636B65726777
#: Months of event partitions kept ready ahead of now (SPEC §11: retention drops whole partitions).
PARTITIONS_AHEAD = 2


class DatabaseError(Exception):
    """The database cannot be opened or brought up to date; the message is one line naming the cause."""


def engine_url(url: str) -> str:
    """`postgresql://…` means psycopg 3 (SQLAlchemy's default PostgreSQL driver is psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, synchronous=FULL and a busy timeout, and their folder."""
    parsed = make_url(engine_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise DatabaseError(f"cannot create {folder}: {exc.strerror}") from None
        engine = create_engine(parsed, connect_args={"timeout": 15})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[None]:
    """PostgreSQL: hold a session advisory lock while the schema is created or migrated, so that workers
    started at the same moment on a fresh database do it one after the other (the second then finds the
    schema and only upgrades, a no-op). Without it both run CREATE TABLE/TYPE and one fails on
    `pg_type_typname_nsp_index`. SQLite has one worker only."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
        holder.commit()
        try:
            yield
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
            holder.commit()


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the current revision; raise DatabaseError with one line."""
    try:
        with _schema_lock(engine):
            _migrate(engine)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database {engine.url.render_as_string(hide_password=True)}: {_first_line(exc)}") from None


def _migrate(engine: Engine) -> None:
    config = _alembic_config(engine)
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        empty = not inspect(connection).has_table("events")
    if current is None and empty:
        with engine.begin() as connection:
            metadata.create_all(connection)
            if engine.dialect.name == "postgresql":
                connection.execute(text("CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT"))
        command.stamp(config, "head")
    else:
        command.upgrade(config, "head")
    ensure_partitions(engine, datetime.now(UTC))


def ensure_partitions(engine: Engine, now: datetime) -> None:
    """PostgreSQL: make sure this month's and the next PARTITIONS_AHEAD months' partitions exist."""
    if engine.dialect.name != "postgresql":
        return
    year, month = now.year, now.month
    with engine.begin() as connection:
        for _ in range(PARTITIONS_AHEAD + 1):
            next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
            name = f"events_{year:04d}_{month:02d}"
            connection.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events "
                    f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
                    f"TO ('{next_year:04d}-{next_month:02d}-01 00:00:00+00')"
                )
            )
            year, month = next_year, next_month


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def open_database(url: str) -> Engine:
    """`make_engine` + `migrate`: the one call a worker, the CLI or a test makes."""
    engine = make_engine(url)
    try:
        migrate(engine)
    except DatabaseError:
        engine.dispose()
        raise
    return engine
