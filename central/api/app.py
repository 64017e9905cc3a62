"""`create_app(context)`: central's FastAPI application, served by the worker (`commands/run.py`) with
uvicorn in the same event loop. Routes are thin (central/api/routes/); the rules live in central/services.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from central.api import errors
from central.api.routes import alerts, credentials, events, gateways, health, lockers, metrics, reports, tokens
from central.context import CentralContext


def create_app(context: CentralContext) -> FastAPI:
    app = FastAPI(
        title="lockergw central",
        summary="The estate's event store and control point (SPEC §11)",
        version="1",
        responses=errors.ERROR_RESPONSES,
    )
    app.state.context = context
    errors.install(app)
    app.include_router(health.router)
    for module in (gateways, events, lockers, credentials, alerts, reports, tokens, metrics):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with its 422 replaced by the 400 this API answers bad input with, and the
    auth errors left off the one route that needs no token."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            if path == "/healthz":
                for code in ("400", "401", "403", "503"):
                    responses.pop(code, None)
    for name in ("HTTPValidationError", "ValidationError"):
        document.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = document
    return document
