"""The console's Jinja2 environment (autoescaped) and `render`, which gives every page who is signed in,
their CSRF token and which navigation entry is current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from central.services.users import Session
from central.tokens import Role

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["Role"] = Role

#: The navigation, in order: (path, label).
NAVIGATION = (
    ("/console/", "Estate"),
    ("/console/people", "People and keys"),
    ("/console/events", "Events"),
    ("/console/alerts", "Alerts"),
    ("/console/reports", "Reports"),
)


def render(
    request: Request, template: str, session: Session | None, *, status_code: int = 200, **values: Any
) -> HTMLResponse:
    context = {
        "session": session,
        "user": session.user if session else None,
        "csrf_token": session.csrf_token if session else "",
        "can_act": session is not None and session.user.role >= Role.operator,
        "navigation": NAVIGATION,
        "path": request.url.path,
        **values,
    }
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def fragment(name: str, **values: Any) -> str:
    """A partial template rendered to text (for the live streams)."""
    return templates.get_template(name).render(**values)
