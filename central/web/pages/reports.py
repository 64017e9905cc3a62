"""Reports: SPEC §10's reports as tables, each downloadable as CSV (the same report service and CSV rules
as `GET /api/reports/…`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from central.api.deps import Db
from central.api.params import NameQuery
from central.services.csv_cells import csv_text
from central.services.reports import REPORTS, run_report
from central.web.auth import Viewer
from central.web.templating import render

router = APIRouter(include_in_schema=False)
TITLES = {
    "holders": "Who holds which locker",
    "unreturned": "Keys not returned",
    "lost": "Lost keys presented",
    "overrides": "Master, emergency and remote openings",
    "lockers": "Every locker",
    "deposits": "Deposits",
}


def _known(name: str) -> str:
    if name not in REPORTS:
        raise HTTPException(404, f"no report named {name!r}")
    return name


@router.get("/console/reports", response_class=HTMLResponse)
def page(request: Request, connection: Db, session: Viewer, name: str = "holders", site: NameQuery = None) -> Response:
    report = run_report(connection, _known(name), site=site)
    return render(request, "reports.html", session, title="Reports", report=report, titles=TITLES, site=site or "")


@router.get("/console/reports/{name}.csv")
def download(connection: Db, _session: Viewer, name: str, site: NameQuery = None) -> Response:
    report = run_report(connection, _known(name), site=site)
    return Response(
        csv_text(report.columns, report.rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
