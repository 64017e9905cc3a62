"""API tokens managed over the API by an admin (the same rules as `lockergw central token`), each change
kept in the audit log. The token itself is returned once, at creation, and never again."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Connection, select, update

from central.schema import api_tokens
from central.services import audit
from central.services.errors import BadInput, Conflict, NotFound
from central.services.models import ApiToken, NewApiToken, RoleName
from central.services.times import iso
from central.tokens import Role, TokenError, TokenInfo, create_token, list_tokens


def _public(info: TokenInfo) -> ApiToken:
    return ApiToken(
        id=info.id,
        name=info.name,
        role=cast(RoleName, info.role.name),
        created_at=iso(info.created_at) or "",
        last_used_at=iso(info.last_used_at),
        revoked_at=iso(info.revoked_at),
    )


def tokens(connection: Connection) -> list[ApiToken]:
    return [_public(info) for info in list_tokens(connection)]


def create(connection: Connection, name: str, role: Role, *, actor: str, now: datetime) -> NewApiToken:
    try:
        info, token = create_token(connection, name, role, now)
    except TokenError as exc:
        raise BadInput("name", str(exc).removeprefix("name: ")) from None
    audit.record(connection, at=now, actor=actor, action="token.create", target=str(info.id),
                 detail={"name": info.name, "role": role.name})  # fmt: skip
    return NewApiToken(**_public(info).model_dump(), token=token)


def revoke(connection: Connection, token_id: int, *, actor: str, now: datetime) -> ApiToken:
    row = connection.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no token {token_id}")
    changed = connection.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(api_tokens.c.id)
    ).first()
    if changed is None:
        raise Conflict(f"token {token_id} is already revoked")
    audit.record(connection, at=now, actor=actor, action="token.revoke", target=str(token_id),
                 detail={"name": row.name, "role": row.role})  # fmt: skip
    return next(t for t in tokens(connection) if t.id == token_id)
