"""Delivery insights as a page: the DORA keys per project, group and environment, with charts
drawn on the server as SVG (no script), each with its numbers in a table beside it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import insights as ins
from conveyor.domain import permissions as perms
from conveyor.domain.errors import ValidationFailed
from conveyor.services import insights
from conveyor.services.core import Caller
from conveyor.web.pages import TEMPLATES, PageCaller, PageRoute, ServicesDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def may_read_insights(caller: Caller) -> bool:
    """The navigation's link: for those who may see some deployments."""
    return perms.allows(caller.principal, perms.Permission.DeploymentView)


TEMPLATES.globals["may_read_insights"] = may_read_insights
TEMPLATES.filters["duration"] = ins.readable_seconds
TEMPLATES.filters["share"] = ins.readable_share


def _day(value: str, name: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationFailed(f'{name} "{value}" is not a date: use YYYY-MM-DD') from exc


def _filters(
    project: str, group: str, environment: str, since: str, until: str
) -> insights.Filters:
    first, last = _day(since, "From"), _day(until, "To")
    return insights.Filters(
        project=project or None,
        group=group or None,
        environment=environment or None,
        since=datetime.combine(first, time(), UTC) if first else None,
        # The day chosen is included: up to the start of the next.
        until=datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
    )


@router.get("/insights")
async def insights_page(
    request: Request,
    services: ServicesDep,
    caller: PageCaller,
    project: str = "",
    group: str = "",
    environment: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    found = await insights.report(
        services, caller, _filters(project, group, environment, since, until)
    )
    chosen = {
        "project": project,
        "group": group,
        "environment": environment,
        "since": found.since.date().isoformat(),
        "until": (found.until - timedelta(microseconds=1)).date().isoformat(),
    }
    query = {k: v for k, v in chosen.items() if v}
    body = insights.as_json(found)
    return render(
        request,
        "insights.html",
        title="Insights",
        report=body,
        chosen=chosen,
        choices=found.choices,
        csv_url="/insights.csv?" + urlencode(query),
        charts=_charts(body),
    )


@router.get("/insights.csv")
async def insights_csv(
    services: ServicesDep,
    caller: PageCaller,
    project: str = "",
    group: str = "",
    environment: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    found = await insights.report(
        services, caller, _filters(project, group, environment, since, until)
    )
    return Response(
        insights.as_csv(insights.as_json(found)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="insights.csv"'},
    )


def _bars(lines: list[dict[str, Any]], field: str, text: Any) -> list[dict[str, Any]]:
    return [
        {"label": line["name"], "value": line[field] or 0, "text": text(line[field])}
        for line in lines
    ]


def _charts(body: dict[str, Any]) -> dict[str, Any]:
    """What each chart draws: a label, a value to scale and the value as people read it."""
    by_env = body["environments"]
    return {
        "lead": _bars(by_env, "lead_time_seconds", ins.readable_seconds),
        "failure": _bars(by_env, "change_failure_rate", ins.readable_share),
        "restore": _bars(by_env, "time_to_restore_seconds", ins.readable_seconds),
        "frequency": _bars(by_env, "deployment_frequency", lambda v: f"{v:.2f} a day"),
        "waits": [
            {"label": w["team"], "value": w["seconds"], "text": ins.readable_seconds(w["seconds"])}
            for w in body["approval_waits"]
        ],
        "days_max": max((d["deployments"] for d in body["daily"]), default=0),
    }
