"""People and keys: search, issue, lost / returned / suspended, replace, duplicates, deposits, history.

Built on central's credential services (issue 12); until they land the page says so."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from central.web.auth import Viewer
from central.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/console/people", response_class=HTMLResponse)
def page(request: Request, session: Viewer) -> Response:
    return render(request, "people.html", session, title="People and keys")
