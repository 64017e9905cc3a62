"""Estate: every site and gateway — online, chain, credentials sync — and the open alerts, live."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from central.api.deps import Db
from central.services.alerts import list_alerts
from central.services.gateways import list_gateways
from central.services.models import Alert, Gateway
from central.web.auth import Viewer
from central.web.live import stream
from central.web.templating import fragment, render

router = APIRouter(include_in_schema=False)


@dataclass
class SiteHealth:
    site: str
    gateways: list[Gateway] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)

    @property
    def online(self) -> int:
        return sum(1 for g in self.gateways if g.state == "online")


def estate(connection: Connection) -> list[SiteHealth]:
    sites: dict[str, SiteHealth] = {}
    for gateway in list_gateways(connection):
        sites.setdefault(gateway.site, SiteHealth(gateway.site)).gateways.append(gateway)
    for alert in list_alerts(connection, state="open"):
        sites.setdefault(alert.site, SiteHealth(alert.site)).alerts.append(alert)
    return [sites[name] for name in sorted(sites)]


def estate_html(connection: Connection, _session: object = None) -> str:
    return fragment("_estate.html", sites=estate(connection))


@router.get("/", include_in_schema=False)
def root() -> Response:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/", response_class=HTMLResponse)
def page(request: Request, connection: Db, session: Viewer) -> Response:
    return render(request, "estate.html", session, title="Estate", body=estate_html(connection))


@router.get("/console/live/estate")
def live(request: Request, _session: Viewer) -> Response:
    return stream(request, "estate", estate_html)
