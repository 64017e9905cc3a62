"""`install(app, context)`: the console's routes, its static assets and its error pages, added to central's
FastAPI application (so `lockergw central` serves the API and the console on one `[http]` listener)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from central.api import errors
from central.web.auth import SignInNeeded
from central.web.pages import alerts, bank, estate, events, people, reports, signin
from central.web.templating import HERE, render

CONSOLE = "/console"


def install(app: FastAPI) -> None:
    app.mount(f"{CONSOLE}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (signin, estate, bank, people, events, alerts, reports):
        app.include_router(module.router)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": f"{CONSOLE}/signin"})
        if request.method == "GET" and "/live/" not in request.url.path:
            return RedirectResponse(f"{CONSOLE}/signin", status_code=303)
        return errors.error(401, "sign in first")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        message = errors.http_message(request, exc)
        if not request.url.path.startswith(CONSOLE):
            return errors.error(exc.status_code, message, getattr(exc, "headers", None))
        return render(request, "problem.html", None, title="Not possible", problem=message, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        message = errors.validation_message(exc)
        if not request.url.path.startswith(CONSOLE):
            return errors.error(400, message)
        return render(request, "problem.html", None, title="Not possible", problem=message, status_code=400)
