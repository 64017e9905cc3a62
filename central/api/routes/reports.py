"""`GET /api/reports/{name}?site&format=json|csv` (SPEC §10 reports, estate-wide)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response

from central.api.deps import Db, Viewer
from central.api.params import NameQuery, SinceQuery, UntilQuery
from central.services.csv_cells import csv_text
from central.services.models import Report
from central.services.reports import run_report

router = APIRouter(tags=["reports"])
ReportName = Literal["holders", "unreturned", "lost", "overrides", "lockers", "deposits"]


@router.get(
    "/api/reports/{name}",
    response_model=Report,
    summary="A report as JSON or CSV",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def report(
    connection: Db,
    _token: Viewer,
    name: ReportName,
    site: NameQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    format: Literal["json", "csv"] = "json",
) -> Report | Response:
    result = run_report(connection, name, site=site, since=since, until=until)
    if format == "json":
        return result
    return Response(
        csv_text(result.columns, result.rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
