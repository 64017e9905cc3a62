"""Every error the API answers is `{"error": "one plain line"}`: bad input is 400 naming the field (never
FastAPI's 422 list), then 401, 403, 404, 409, 502/504 when a gateway cannot be reached, and 503 while
the database cannot be reached."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from central.context import GatewayTimeout, GatewayUnavailable
from central.services.errors import BadInput, Conflict, NotFound, ServiceError

log = logging.getLogger("lockergw.central.api")


class ErrorBody(BaseModel):
    error: str


#: Documented on every route (see `central.api.app`), so the OpenAPI document lists them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input; the message names the field"},
    401: {"model": ErrorBody, "description": "no bearer token, or not a live one"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    503: {"model": ErrorBody, "description": "the database cannot be reached"},
}


SERVICE_STATUS: dict[type[ServiceError], int] = {BadInput: 400, NotFound: 404, Conflict: 409}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def field_name(location: tuple[int | str, ...]) -> str:
    """`("body", "authorizers", 0, "id")` → `authorizers[0].id`; `("query", "limit")` → `limit`."""
    parts = [p for p in location if p not in ("body", "query", "path", "header")] or ["body"]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    location = tuple(first.get("loc", ()))
    kind = first.get("type", "")
    if kind == "json_invalid":
        return "body: not valid JSON"
    if kind == "missing":
        if location == ("body",):
            return "body: required (a JSON object)"
        return f"{field_name(location)}: required"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{field_name(location)}: {message[:1].lower()}{message[1:]}"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such route: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        status = next((code for kind, code in SERVICE_STATUS.items() if isinstance(exc, kind)), 400)
        return error(status, str(exc))

    @app.exception_handler(GatewayUnavailable)
    async def _unavailable(request: Request, exc: GatewayUnavailable) -> JSONResponse:
        return error(504 if isinstance(exc, GatewayTimeout) else 502, str(exc))

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        """The database is down or unreachable (not a fault in a query: those stay 500s, with a traceback)."""
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, _first_line(exc))
        return error(503, "the database is not available; try again shortly")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
