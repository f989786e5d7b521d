"""Who may deploy where, and who may approve: the report as a page, filtered, and as CSV."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.services import access_report
from conveyor.web.pages import TEMPLATES, PageCaller, PageRoute, ServicesDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# The navigation shows the page to those who may read it (base.html asks this).
TEMPLATES.globals["may_read_access_report"] = access_report.may_read

# A page of every project by every environment would be too long to read: beyond this many rows
# it asks for a filter (the CSV has them all).
SHOWN = 300


@router.get("/permissions/report")
async def report_page(
    request: Request,
    services: ServicesDep,
    caller: PageCaller,
    project: str = "",
    environment: str = "",
) -> Response:
    found = await access_report.report(
        services, caller, project=project or None, environment=environment or None
    )
    chosen = {"project": project, "environment": environment}
    query = {k: v for k, v in chosen.items() if v}
    return render(
        request,
        "access_report.html",
        title="Who may deploy where",
        rows=found.rows[:SHOWN],
        total=len(found.rows),
        projects=found.projects,
        environments=found.environments,
        chosen=chosen,
        csv_url="/permissions/report.csv" + (f"?{urlencode(query)}" if query else ""),
    )


@router.get("/permissions/report.csv")
async def report_csv(
    services: ServicesDep, caller: PageCaller, project: str = "", environment: str = ""
) -> Response:
    found = await access_report.report(
        services, caller, project=project or None, environment=environment or None
    )
    return Response(
        access_report.as_csv(found.rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="who-may-deploy-where.csv"'},
    )
