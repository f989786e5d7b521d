"""The audit log: filters, paging, export, the hash chain's state; and a release's evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import QueryParams

from conveyor.domain.audit import Category
from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.services import audit, documents, evidence
from conveyor.web.eventdiff import readable
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, render
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PER_PAGE = 50
FILTERS = ("since", "until", "user", "category", "project", "environment")


def _time(value: str, field: str) -> datetime | None:
    """A date (``2026-11-27``) or a date and time (``2026-11-27T10:30``), in UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(f"{field}: {value!r} is not a date (2026-11-27 or 10:30)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _filters(query: QueryParams) -> tuple[audit.Filters, dict[str, str]]:
    chosen = {name: query.get(name, "").strip() for name in FILTERS}
    filters = audit.Filters(
        since=_time(chosen["since"], "from"),
        until=_time(chosen["until"], "until"),
        users=(chosen["user"],) if chosen["user"] else (),
        categories=(chosen["category"],) if chosen["category"] else (),
        projects=(chosen["project"],) if chosen["project"] else (),
        environments=(chosen["environment"],) if chosen["environment"] else (),
    )
    return filters, chosen


@router.get("/audit")
async def audit_log(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    filters, chosen = _filters(request.query_params)
    before = request.query_params.get("before") or None
    after = None if before else (request.query_params.get("after") or None)
    page = await audit.list_events(
        services, caller, filters, limit=PER_PAGE, before=before, after=after
    )
    chain: dict[str, Any] | None = None
    chain_hidden = ""
    if request.query_params.get("verify"):
        try:
            chain = await audit.verify_chain(services, caller)
        except PermissionDenied as exc:
            chain_hidden = exc.message
    query = {k: v for k, v in chosen.items() if v}
    return render(
        request,
        "audit.html",
        title="Audit log",
        events=[(e, readable(e["details"])) for e in page["events"]],
        next=page["next"],
        newer=page["newer"],
        first=before is None and after is None,
        chosen=chosen,
        query=query,
        categories=[c.value for c in Category],
        projects=[d.name for d in await documents.list_documents(services, caller, "projects")],
        environments=[
            d.name for d in await documents.list_documents(services, caller, "environments")
        ],
        chain=chain,
        chain_hidden=chain_hidden,
    )


@router.get("/audit/export")
async def export(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    filters, _ = _filters(request.query_params)
    fmt = request.query_params.get("format", "csv")
    stream = await audit.export_events(services, caller, fmt, filters)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(
        stream,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{fmt}"'},
    )


@router.get("/projects/{slug}/releases/{version}/evidence")
async def release_evidence(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    data = await evidence.release_evidence(services, caller, slug, version)
    return render(
        request,
        "evidence.html",
        title=f"Evidence: {header['name']} {data['release']['version']}",
        project=header,
        evidence=data,
    )
