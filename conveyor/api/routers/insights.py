"""GET /insights: delivery insights (DORA) per project, project group and environment."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from conveyor.api.deps import CSV_MEDIA, CallerDep, ServicesDep, wants_csv
from conveyor.services import insights

router = APIRouter(tags=["Insights"])


@router.get(
    "/insights",
    summary="Deployment frequency, lead time for changes, change failure rate, time to restore, "
    "deployment durations and approval waits over a range of time (default: the last 30 days); "
    "JSON, or CSV with ?format=csv or Accept: text/csv",
    response_model=None,
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_insights(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    project: Annotated[str | None, Query(description="Only this project")] = None,
    group: Annotated[str | None, Query(description="Only the projects of this group")] = None,
    environment: Annotated[str | None, Query(description="Only this environment")] = None,
    since: Annotated[
        datetime | None, Query(description="Deployments that ended at or after (ISO 8601, UTC)")
    ] = None,
    until: Annotated[datetime | None, Query(description="…and before this time")] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response:
    found = await insights.report(
        services,
        caller,
        insights.Filters(
            project=project, group=group, environment=environment, since=since, until=until
        ),
    )
    body = insights.as_json(found)
    if wants_csv(request, format):
        return Response(
            insights.as_csv(body),
            media_type=CSV_MEDIA,
            headers={"Content-Disposition": 'attachment; filename="insights.csv"'},
        )
    return JSONResponse(body)
