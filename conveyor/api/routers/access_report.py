"""GET /permissions/report: who may deploy and who may approve, per project and environment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from conveyor.api.deps import CSV_MEDIA, CallerDep, ServicesDep, wants_csv
from conveyor.services import access_report

router = APIRouter(tags=["Permissions"])


@router.get(
    "/permissions/report",
    summary="Who may deploy and who may approve each project in each environment, and through "
    "which team and role (JSON, or CSV with ?format=csv or Accept: text/csv)",
    response_model=None,
    responses={200: {"content": {"text/csv": {}}}},
)
async def permissions_report(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    project: Annotated[str | None, Query(description="Only this project")] = None,
    environment: Annotated[str | None, Query(description="Only this environment")] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response:
    found = await access_report.report(services, caller, project=project, environment=environment)
    if wants_csv(request, format):
        return Response(
            access_report.as_csv(found.rows),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": 'attachment; filename="who-may-deploy-where.csv"'},
        )
    body: list[dict[str, Any]] = access_report.as_json(found.rows)
    return JSONResponse(body)
