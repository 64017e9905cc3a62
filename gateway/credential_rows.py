"""The credential store's SQLite schema and its rows: migrations, columns and the row codec.

`gateway.store` owns the transactions; this module only says what a row is and how a
`Credential` becomes one and back (the running daemon reads one row per presented card).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from gateway.credential_digest import credential_share, digest_text, utc_text
from gateway.model import OUTSTANDING_STATUSES, Credential, Kind, Role, Status
from gateway.sqlite import Step

#: Where the id, the uid and its form are in a raw row.
ROW_ID, ROW_UID, ROW_FORM = 0, 1, 16

# ---- schema ------------------------------------------------------------------------------------

#: A migration step: an SQL statement, or a function for what SQL alone cannot do.


def _backfill_record_hashes(db: sqlite3.Connection) -> None:
    total = 0
    # The columns of schema 2 (later migrations add more; the digest reads only these).
    rows = db.execute(f"SELECT {', '.join(COLUMNS[:16])} FROM credentials").fetchall()
    read = RowReader()
    for row in rows:
        value = credential_share(read((*row, "", 0)))  # uid_form and single_use came later
        total += value
        db.execute("UPDATE credentials SET record_hash = ? WHERE id = ?", (f"{value:064x}", row[0]))
    db.execute("INSERT INTO set_digest (id, value) VALUES (1, ?)", (digest_text(total),))


def _add_column(name: str, declaration: str) -> Callable[[sqlite3.Connection], None]:
    """A migration step adding a column to `credentials` unless it is there already."""

    def add(db: sqlite3.Connection) -> None:
        if name not in {row[1] for row in db.execute("PRAGMA table_info(credentials)")}:
            db.execute(f"ALTER TABLE credentials ADD COLUMN {name} {declaration}")

    return add


#: Migration n (1-based) brings the schema from user_version n-1 to n. Append, never edit.
MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('rev', 0)",
        """CREATE TABLE credentials (
            id TEXT PRIMARY KEY,
            uid TEXT NOT NULL,
            holder TEXT NOT NULL,
            role TEXT NOT NULL,
            scope TEXT NOT NULL,
            status TEXT NOT NULL,
            kind TEXT NOT NULL,
            valid_from TEXT,
            valid_until TEXT,
            schedule TEXT,
            key_code TEXT,
            deposit TEXT,
            approved_by TEXT,
            issue_no INTEGER NOT NULL,
            issued_at TEXT,
            issued_by TEXT,
            rev INTEGER NOT NULL
        )""",
        "CREATE UNIQUE INDEX credentials_uid ON credentials (uid) WHERE uid != ''",
        "CREATE INDEX credentials_holder ON credentials (holder)",
        "CREATE INDEX credentials_key_code ON credentials (key_code) WHERE key_code IS NOT NULL",
        "CREATE INDEX credentials_rev ON credentials (rev)",
        """CREATE TABLE credential_scope (
            item TEXT NOT NULL,
            credential_id TEXT NOT NULL,
            PRIMARY KEY (item, credential_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX credential_scope_credential ON credential_scope (credential_id)",
        "CREATE TABLE removals (id TEXT PRIMARY KEY, rev INTEGER NOT NULL)",
        "CREATE INDEX removals_rev ON removals (rev)",
        """CREATE TABLE change_log (
            rev INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            by TEXT NOT NULL,
            action TEXT NOT NULL,
            ids TEXT NOT NULL,
            reason TEXT
        )""",
    ),
    (
        # 2: the set digest, kept up to date per change (each row's share of it kept beside the row).
        "ALTER TABLE credentials ADD COLUMN record_hash TEXT NOT NULL DEFAULT ''",
        "CREATE TABLE set_digest (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL)",
        _backfill_record_hashes,
    ),
    (
        # 3: the form a uid was enrolled in ("" hex, "dec" / "fc" printed on a fob): only a printed form
        # matches an EM4100 tap by its low bits (SPEC §4). Existing short uids become exact-only.
        _add_column("uid_form", "TEXT NOT NULL DEFAULT ''"),
    ),
    (
        # 4: single-use mobile credentials (visitor codes); existing rows and their digest shares unchanged.
        # A store at schema 3 from a build that numbered single_use 3 (and had no uid_form) gets uid_form
        # here; each step adds only a column that is missing.
        _add_column("single_use", "INTEGER NOT NULL DEFAULT 0"),
        _add_column("uid_form", "TEXT NOT NULL DEFAULT ''"),
    ),
)

COLUMNS = (
    "id",
    "uid",
    "holder",
    "role",
    "scope",
    "status",
    "kind",
    "valid_from",
    "valid_until",
    "schedule",
    "key_code",
    "deposit",
    "approved_by",
    "issue_no",
    "issued_at",
    "issued_by",
    "uid_form",
    "single_use",
)
SELECT = f"SELECT {', '.join(COLUMNS)} FROM credentials"
WRITTEN = (*COLUMNS, "record_hash", "rev")
UPSERT_ROW = (
    f"INSERT INTO credentials ({', '.join(WRITTEN)}) VALUES ({', '.join('?' * len(WRITTEN))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in WRITTEN[1:])}"
)
_OUTSTANDING = tuple(status.value for status in OUTSTANDING_STATUSES)
OUTSTANDING_SQL = ", ".join(f"'{status}'" for status in sorted(_OUTSTANDING))
#: One encoder for every row: json.dumps with options builds a new encoder per call.
_SCOPE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ROLES = {member.value: member for member in Role}
_KINDS = {member.value: member for member in Kind}
_STATUSES = {member.value: member for member in Status}


def _time_value(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@lru_cache(maxsize=4096)
def _scope_json(scope: tuple[str, ...]) -> str:
    return _SCOPE_JSON.encode(list(scope))


#: Each role, status and kind as the plain text a row holds (`member.value` is a property: slower per row).
_TEXT: dict[Role | Status | Kind, str] = {member: member.value for enum in (Role, Status, Kind) for member in enum}


def row_of(credential: Credential) -> tuple[Any, ...]:
    return (
        credential.id,
        credential.uid,
        credential.holder,
        _TEXT[credential.role],
        _scope_json(credential.scope),
        _TEXT[credential.status],
        _TEXT[credential.kind],
        utc_text(credential.valid_from),
        utc_text(credential.valid_until),
        credential.schedule,
        credential.key_code,
        credential.deposit,
        credential.approved_by,
        credential.issue_no,
        utc_text(credential.issued_at),
        credential.issued_by,
        credential.uid_form,
        int(credential.single_use),
    )


def credential_from_row(row: Sequence[Any]) -> Credential:
    """One raw row of `changed_rows` as a Credential."""
    return RowReader()(row)


class RowReader:
    """Rows → Credentials. Scopes and times repeat across rows (one import shares its issued_at,
    a school's lockers share a handful of scopes), so each distinct text is decoded once."""

    def __init__(self) -> None:
        self._scopes: dict[str, tuple[str, ...]] = {}
        self._times: dict[str | None, datetime | None] = {None: None}

    def __call__(self, row: Sequence[Any]) -> Credential:
        scope = self._scopes.get(row[4])
        if scope is None:
            scope = self._scopes[row[4]] = tuple(json.loads(row[4]))
        return Credential(
            id=row[0],
            uid=row[1],
            holder=row[2],
            role=_ROLES[row[3]],
            scope=scope,
            status=_STATUSES[row[5]],
            kind=_KINDS[row[6]],
            valid_from=self._time(row[7]),
            valid_until=self._time(row[8]),
            schedule=row[9],
            key_code=row[10],
            deposit=row[11],
            approved_by=row[12],
            issue_no=row[13],
            issued_at=self._time(row[14]),
            issued_by=row[15],
            uid_form=row[16],
            single_use=bool(row[17]),
        )

    def _time(self, text: str | None) -> datetime | None:
        try:
            return self._times[text]
        except KeyError:
            value = self._times[text] = _time_value(text)
            if len(self._times) > 10_000:
                self._times = {None: None}
            return value
