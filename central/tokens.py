"""API bearer tokens (SPEC §11): made by `lockergw central token create`, shown once, stored hashed.

A token is 256 random bits; only its SHA-256 is kept. A slow password hash buys nothing here: the token
cannot be guessed, so a fast hash of it is as strong as the token and keeps every request cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

from sqlalchemy import Connection, insert, select, update

from central.schema import api_tokens

#: Tokens are recognisable in logs and secret scanners by this prefix.
TOKEN_PREFIX = "lgwc_"
NAME_MAX_LEN = 128
#: `last_used_at` is written at most this often per token, so reads do not become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Role(IntEnum):
    """Each role may do everything the ones below it may."""

    viewer = 1
    operator = 2
    admin = 3


class TokenError(ValueError):
    """A token command that cannot be carried out; the message is one line."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time central stores is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _info(row: object) -> TokenInfo:
    return TokenInfo(
        id=row.id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        role=Role[row.role],  # type: ignore[attr-defined]
        created_at=_utc(row.created_at),  # type: ignore[attr-defined,arg-type]
        last_used_at=_utc(row.last_used_at),  # type: ignore[attr-defined]
        revoked_at=_utc(row.revoked_at),  # type: ignore[attr-defined]
    )


def parse_role(value: str) -> Role:
    try:
        return Role[value]
    except KeyError:
        raise TokenError(f"role: must be one of {', '.join(r.name for r in Role)} (got {value!r})") from None


def create_token(connection: Connection, name: str, role: Role, now: datetime) -> tuple[TokenInfo, str]:
    """Store a new token's hash; return its record and the token itself (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > NAME_MAX_LEN or not name.isprintable():
        raise TokenError(f"name: must be 1 to {NAME_MAX_LEN} printable characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row_id = connection.execute(
        insert(api_tokens)
        .values(name=name, role=role.name, token_hash=token_hash(token), created_at=now)
        .returning(api_tokens.c.id)
    ).scalar_one()
    return TokenInfo(row_id, name, role, now, None, None), token


def list_tokens(connection: Connection) -> list[TokenInfo]:
    rows = connection.execute(select(api_tokens).order_by(api_tokens.c.id))
    return [_info(row) for row in rows]


def revoke_token(connection: Connection, ref: str, now: datetime) -> list[TokenInfo]:
    """Revoke the token with id `ref`, or every live token named `ref`; raise TokenError if none."""
    live = api_tokens.c.revoked_at.is_(None)
    where = (api_tokens.c.id == int(ref)) if ref.isdigit() else (api_tokens.c.name == ref)
    rows = connection.execute(
        update(api_tokens).where(where, live).values(revoked_at=now).returning(*api_tokens.c)
    ).all()
    if not rows:
        raise TokenError(f"no live token with id or name {ref!r}")
    return [_info(row) for row in rows]


def authenticate(connection: Connection, token: str, now: datetime) -> TokenInfo | None:
    """The live token `token` is, or None; notes when it was last used (at most once a minute)."""
    row = connection.execute(
        select(api_tokens).where(api_tokens.c.token_hash == token_hash(token), api_tokens.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    info = _info(row)
    if info.last_used_at is None or now - info.last_used_at >= LAST_USED_RESOLUTION:
        connection.execute(update(api_tokens).where(api_tokens.c.id == info.id).values(last_used_at=now))
        connection.commit()
    return info
