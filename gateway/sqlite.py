"""What the credential store and the journal share about SQLite: opening a durable WAL database,
write transactions, and schema migrations by `PRAGMA user_version`."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.storage import describe_storage_error, private_umask, secure_files

BUSY_TIMEOUT_MS = 15_000

#: One migration step: an SQL statement, or a function for work SQL alone cannot do.
Step = str | Callable[[sqlite3.Connection], None]


def open_database(
    path: Path,
    migrations: Sequence[Sequence[Step]],
    error: type[Exception],
    *,
    pragmas: Sequence[str] = (),
) -> sqlite3.Connection:
    """Open (creating) a WAL database with synchronous=FULL and bring its schema up to date.

    Every failure becomes `error` with one line naming the file and the cause (read-only, no space);
    the connection is closed then. The database (and its -wal and -shm files, which SQLite creates with
    the database's mode) is made 0600 and its directory 0700 whatever the umask: it holds card numbers.
    """
    try:
        with private_umask():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        raise error(f"cannot open {path}: {describe_storage_error(exc, path.parent)}") from None
    try:
        with private_umask():
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            for pragma in pragmas:
                db.execute(f"PRAGMA {pragma}")
            migrate(db, path, migrations, error)
        secure_files(path.parent, (path.name,))
    except (sqlite3.Error, OSError) as exc:
        db.close()
        raise error(f"cannot open {path}: {describe_storage_error(exc, path.parent)}") from None
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection, busy: Callable[[Exception], Exception] | None = None) -> Iterator[None]:
    """`BEGIN IMMEDIATE` … `COMMIT`, rolled back on any exception. `busy` turns a lock time-out into a
    user-facing error."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if busy is None:
            raise
        raise busy(exc) from None
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself fails (disk full, I/O error): SQLite may leave the transaction open,
        # and the connection would then see — and publish — rows that were never committed.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[Sequence[Step]], error: type[Exception]) -> None:
    """Apply migrations n+1… to a database at user_version n (migration n brings version n-1 to n)."""
    latest = len(migrations)
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > latest:
        raise error(f"{path} has schema {version}, newer than this lockergw knows ({latest}); upgrade lockergw")
    if version == latest:
        return
    with write_transaction(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for steps in migrations[version:]:
            for step in steps:
                if isinstance(step, str):
                    db.execute(step)
                else:
                    step(db)
        db.execute(f"PRAGMA user_version = {latest}")
