"""The console's people and their sessions (SPEC §12): argon2 password hashes, a lock-out after repeated
wrong passwords, and server-side sessions so that signing out or removing a person takes effect at once.

A session cookie carries 256 random bits; only their SHA-256 is stored (as with API tokens, a slow hash
buys nothing for a secret that cannot be guessed). Each session has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, insert, select, update

from central.schema import console_sessions, console_users
from central.services import audit
from central.services.errors import BadInput, Conflict, NotFound, ServiceError
from central.services.times import utc, utc_or_none
from central.tokens import Role

#: Wrong passwords in a row that lock a name's sign-in …
MAX_FAILED_SIGNINS = 5
#: … for this long.
LOCKOUT = timedelta(minutes=15)
#: A session unused for this long has ended.
SESSION_IDLE = timedelta(hours=8)
MIN_PASSWORD_LEN = 10
NAME_MAX_LEN = 64

_hasher = PasswordHasher()
#: Verified against when the name is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInRefused(ServiceError):
    """Wrong name or password, or the name is locked out; the message says which (never which of name
    and password was wrong)."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    created_at: datetime
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: who, and the token its forms must send back."""

    user: User
    csrf_token: str


def _user(row: object) -> User:
    return User(
        id=row.id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        role=Role[row.role],  # type: ignore[attr-defined]
        created_at=utc(row.created_at),  # type: ignore[attr-defined]
        locked_until=utc_or_none(row.locked_until),  # type: ignore[attr-defined]
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LEN or not name.isprintable():
        raise BadInput("name", f"must be 1 to {NAME_MAX_LEN} printable characters")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LEN:
        raise BadInput("password", f"must be at least {MIN_PASSWORD_LEN} characters")
    if not password.isprintable():
        raise BadInput("password", "must not contain control characters")
    return password


def add(connection: Connection, name: str, role: Role, password: str, *, actor: str, now: datetime) -> User:
    name, password = check_name(name), check_password(password)
    if connection.execute(select(console_users.c.id).where(console_users.c.name == name)).first() is not None:
        raise Conflict(f"there is already a user named {name!r}")
    row = connection.execute(
        insert(console_users)
        .values(name=name, role=role.name, password_hash=_hasher.hash(password), created_at=now)
        .returning(*console_users.c)
    ).one()
    audit.record(connection, at=now, actor=actor, action="user.add", target=name, detail={"role": role.name})
    return _user(row)


def remove(connection: Connection, name: str, *, actor: str, now: datetime) -> None:
    """Remove a user and end every session of theirs."""
    row = connection.execute(select(console_users).where(console_users.c.name == name)).first()
    if row is None:
        raise NotFound(f"no user named {name!r}")
    connection.execute(delete(console_sessions).where(console_sessions.c.user_id == row.id))
    connection.execute(delete(console_users).where(console_users.c.id == row.id))
    audit.record(connection, at=now, actor=actor, action="user.remove", target=name, detail={"role": row.role})


def set_password(connection: Connection, name: str, password: str, *, actor: str, now: datetime) -> None:
    """A new password ends the user's sessions and lifts a lock-out."""
    password = check_password(password)
    row = connection.execute(select(console_users.c.id).where(console_users.c.name == name)).first()
    if row is None:
        raise NotFound(f"no user named {name!r}")
    connection.execute(
        update(console_users)
        .where(console_users.c.id == row.id)
        .values(password_hash=_hasher.hash(password), failed_signins=0, locked_until=None)
    )
    connection.execute(delete(console_sessions).where(console_sessions.c.user_id == row.id))
    audit.record(connection, at=now, actor=actor, action="user.passwd", target=name)


def users(connection: Connection) -> list[User]:
    return [_user(row) for row in connection.execute(select(console_users).order_by(console_users.c.name))]


def sign_in(connection: Connection, name: str, password: str, *, now: datetime) -> tuple[Session, str]:
    """A new session and its cookie token; SignInRefused otherwise. Every attempt is in the audit log."""
    row = connection.execute(select(console_users).where(console_users.c.name == name.strip())).first()
    if row is not None and row.locked_until is not None and utc(row.locked_until) > now:
        audit.record(connection, at=now, actor=f"user:{row.name}", action="signin.locked")
        raise SignInRefused(_locked_message(utc(row.locked_until), now))
    if row is None:
        _verify(_DUMMY_HASH, password)
        audit.record(connection, at=now, actor="anonymous", action="signin.failed", detail={"reason": "unknown name"})
        raise SignInRefused("wrong name or password")
    if not _verify(row.password_hash, password):
        failed = row.failed_signins + 1
        locked_until = now + LOCKOUT if failed >= MAX_FAILED_SIGNINS else None
        connection.execute(
            update(console_users)
            .where(console_users.c.id == row.id)
            .values(failed_signins=0 if locked_until else failed, locked_until=locked_until)
        )
        audit.record(connection, at=now, actor=f"user:{row.name}", action="signin.failed",
                     detail={"failed": failed, "locked": locked_until is not None})  # fmt: skip
        if locked_until is not None:
            raise SignInRefused(_locked_message(locked_until, now))
        raise SignInRefused("wrong name or password")
    connection.execute(
        update(console_users).where(console_users.c.id == row.id).values(failed_signins=0, locked_until=None)
    )
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    connection.execute(
        insert(console_sessions).values(
            token_hash=_digest(token), user_id=row.id, csrf_token=csrf, created_at=now, last_seen_at=now
        )
    )
    audit.record(connection, at=now, actor=f"user:{row.name}", action="signin")
    return Session(_user(row), csrf), token


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _locked_message(until: datetime, now: datetime) -> str:
    minutes = max(1, int((until - now).total_seconds() + 59) // 60)
    return (
        f"sign-in is locked after {MAX_FAILED_SIGNINS} wrong passwords; try again in {minutes} minute"
        f"{'s' if minutes != 1 else ''}"
    )


def session(connection: Connection, token: str, *, now: datetime) -> Session | None:
    """The live session of a cookie token, or None (unknown, ended, idle too long, user removed)."""
    row = connection.execute(
        select(console_sessions.c.csrf_token, console_sessions.c.last_seen_at, console_users)
        .join(console_users, console_users.c.id == console_sessions.c.user_id)
        .where(console_sessions.c.token_hash == _digest(token))
    ).first()
    if row is None:
        return None
    if now - utc(row.last_seen_at) > SESSION_IDLE:
        connection.execute(delete(console_sessions).where(console_sessions.c.token_hash == _digest(token)))
        connection.commit()
        return None
    if now - utc(row.last_seen_at) > timedelta(minutes=1):
        connection.execute(
            update(console_sessions).where(console_sessions.c.token_hash == _digest(token)).values(last_seen_at=now)
        )
        connection.commit()
    return Session(_user(row), row.csrf_token)


def sign_out(connection: Connection, token: str, *, now: datetime) -> None:
    found = session(connection, token, now=now)
    connection.execute(delete(console_sessions).where(console_sessions.c.token_hash == _digest(token)))
    if found is not None:
        audit.record(connection, at=now, actor=f"user:{found.user.name}", action="signout")
