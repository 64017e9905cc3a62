"""Sign-in and sign-out. The sign-in form has its own anti-forgery token (there is no session yet): a
random value in a SameSite=Strict cookie that the form must echo."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from central.api.deps import Db
from central.services import users
from central.services.users import SignInRefused
from central.web.auth import CSRF_FIELD, SESSION_COOKIE, SIGNIN_COOKIE, ViewerAction
from central.web.templating import render

router = APIRouter(include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def signin_page(request: Request, *, problem: str | None = None, name: str = "", status_code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "signin.html", None, title="Sign in", signin_token=token, problem=problem, name=name,
        status_code=status_code,
    )  # fmt: skip
    response.set_cookie(
        SIGNIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/console/signin"
    )
    return response


@router.get("/console/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> Response:
    return signin_page(request)


@router.post("/console/signin", response_class=HTMLResponse)
def signin(
    request: Request,
    connection: Db,
    name: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=256)] = "",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return signin_page(request, problem="the sign-in form was stale: please sign in again", status_code=403)
    try:
        _session, token = users.sign_in(connection, name, password, now=datetime.now(UTC))
    except SignInRefused as exc:
        connection.commit()
        return signin_page(request, problem=str(exc), name=name, status_code=401)
    connection.commit()
    response = RedirectResponse("/console/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/")
    response.delete_cookie(SIGNIN_COOKIE, path="/console/signin")
    return response


@router.post("/console/signout")
def signout(request: Request, connection: Db, _session: ViewerAction) -> Response:
    users.sign_out(connection, request.cookies.get(SESSION_COOKIE, ""), now=datetime.now(UTC))
    connection.commit()
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
