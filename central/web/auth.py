"""Who is signed in, what their role lets them do, and the anti-forgery check, as route dependencies.

A page asked for without a live session redirects to the sign-in page (htmx requests get `HX-Redirect`);
a role too low for the route is 403 whatever the page showed; every POST must carry the session's CSRF
token, as the `csrf_token` form field or the `X-CSRF-Token` header htmx sends.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Connection

from central.api.deps import Db
from central.context import CentralContext
from central.services import users
from central.services.users import Session
from central.tokens import Role

SESSION_COOKIE = "lockergw_session"
SIGNIN_COOKIE = "lockergw_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SignInNeeded(Exception):
    """No live session: the console answers with the sign-in page (central.web.app)."""


def actor(session: Session) -> str:
    """How the audit log names a console user."""
    return f"user:{session.user.name}"


def current_session(request: Request, connection: Db) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    found = users.session(connection, token, now=datetime.now(UTC)) if token else None
    if found is None:
        raise SignInNeeded
    return found


def live_session(context: CentralContext, token: str | None) -> Session | None:
    """For the live streams, which outlive a request's connection: the session now, or None."""
    if not token:
        return None
    with context.engine.connect() as connection:
        return users.session(connection, token, now=datetime.now(UTC))


async def form_or_header_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    value = (await request.form()).get(CSRF_FIELD)
    return value if isinstance(value, str) else ""


def require(role: Role, *, action: bool) -> Callable[[Request, Session], Awaitable[Session]]:
    """A dependency letting through sessions of `role` or above (403 otherwise); for an action (a POST)
    the CSRF token must match too (403 otherwise)."""

    async def check(request: Request, session: Annotated[Session, Depends(current_session)]) -> Session:
        if session.user.role < role:
            raise HTTPException(
                403, f"this needs the {role.name} role; {session.user.name} is {session.user.role.name}"
            )
        if action and not secrets.compare_digest(await form_or_header_token(request), session.csrf_token):
            raise HTTPException(403, "the form's anti-forgery token is missing or stale: reload the page and try again")
        return session

    return check


Viewer = Annotated[Session, Depends(require(Role.viewer, action=False))]
ViewerAction = Annotated[Session, Depends(require(Role.viewer, action=True))]
OperatorAction = Annotated[Session, Depends(require(Role.operator, action=True))]


def connection_of(context: CentralContext) -> Iterator[Connection]:
    with context.engine.connect() as connection:
        yield connection
