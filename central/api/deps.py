"""Dependencies of the routes: the context, a database connection per request, and the bearer token with
its role (viewer < operator < admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection

from central.context import CentralContext
from central.tokens import Role, TokenInfo, authenticate

bearer = HTTPBearer(auto_error=False, description="a token made by `lockergw central token create`")


def get_context(request: Request) -> CentralContext:
    context: CentralContext = request.app.state.context
    return context


Context = Annotated[CentralContext, Depends(get_context)]


def get_connection(context: Context) -> Iterator[Connection]:
    """One connection per request (commit-as-you-go: a route that writes commits what it wrote)."""
    with context.engine.connect() as connection:
        yield connection


Db = Annotated[Connection, Depends(get_connection)]


def get_token(
    connection: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> TokenInfo:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer TOKEN)", headers=challenge)
    token = authenticate(connection, credentials.credentials, datetime.now(UTC))
    if token is None:
        raise HTTPException(401, "unknown or revoked token", headers=challenge)
    return token


def require(role: Role) -> Callable[[TokenInfo], TokenInfo]:
    """A dependency that lets through tokens of `role` or above (403 otherwise)."""

    def check(token: Annotated[TokenInfo, Depends(get_token)]) -> TokenInfo:
        if token.role < role:
            raise HTTPException(403, f"this needs the {role.name} role; token {token.name!r} is {token.role.name}")
        return token

    return check


Viewer = Annotated[TokenInfo, Depends(require(Role.viewer))]
Operator = Annotated[TokenInfo, Depends(require(Role.operator))]
Admin = Annotated[TokenInfo, Depends(require(Role.admin))]


def actor(token: TokenInfo) -> str:
    """How the audit log names whoever used this token."""
    return f"token:{token.id}:{token.name}"
