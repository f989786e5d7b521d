"""The audit log: list, export (streamed), verify the hash chain; and a release's evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import audit, audit_export, evidence, evidence_report

router = APIRouter(tags=["Audit"])


def filters(
    since: Annotated[
        datetime | None, Query(description="Events at or after this time (ISO 8601)")
    ] = None,
    until: Annotated[datetime | None, Query(description="Events before this time")] = None,
    user: Annotated[list[str] | None, Query(description="Who acted (repeatable)")] = None,
    category: Annotated[list[str] | None, Query(description="Event category (repeatable)")] = None,
    project: Annotated[list[str] | None, Query(description="Project name or slug")] = None,
    environment: Annotated[list[str] | None, Query(description="Environment name")] = None,
    document: Annotated[
        list[str] | None, Query(description="A document the event concerns, e.g. Deployments-4")
    ] = None,
) -> audit.Filters:
    """AND across fields, OR within a field (repeat a parameter for several values)."""
    return audit.Filters(
        since=_utc(since),
        until=_utc(until),
        users=tuple(user or ()),
        categories=tuple(category or ()),
        projects=tuple(project or ()),
        environments=tuple(environment or ()),
        documents=tuple(document or ()),
    )


def _utc(value: datetime | None) -> datetime | None:
    """A time without an offset is UTC (the log's own times are UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


FiltersDep = Annotated[audit.Filters, Depends(filters)]


@router.get("/events", summary="Audit events, newest first, with a cursor for the next page")
async def list_events(
    services: ServicesDep,
    caller: CallerDep,
    where: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = audit.PAGE,
    before: Annotated[
        str | None, Query(description="The `next` of the previous page: events before it")
    ] = None,
) -> dict[str, Any]:
    return await audit.list_events(services, caller, where, limit=limit, before=before)


@router.get(
    "/events/export",
    summary="Every matching event as CSV or JSON Lines, oldest first, streamed",
    response_class=StreamingResponse,
)
async def export_events(
    services: ServicesDep,
    caller: CallerDep,
    where: FiltersDep,
    format: Annotated[str, Query(pattern="^(csv|jsonl)$")] = "jsonl",
) -> StreamingResponse:
    stream = await audit_export.export_events(services, caller, format, where)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        stream,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="events-{stamp}.{format}"'},
    )


@router.get("/events/verify", summary="Walk the hash chain: intact, or the first bad event")
async def verify(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await audit.verify_chain(services, caller)


@router.get("/events/categories", summary="The documented catalogue of event categories")
async def categories() -> list[dict[str, str]]:
    return audit.categories()


@router.get(
    "/projects/{project}/releases/{version}/evidence",
    tags=["Releases"],
    summary="Everything about a release an auditor needs, as JSON or Markdown",
    response_model=None,
)
async def release_evidence(
    project: str,
    version: str,
    services: ServicesDep,
    caller: CallerDep,
    format: Annotated[str, Query(pattern="^(json|markdown)$")] = "json",
) -> dict[str, Any] | PlainTextResponse:
    data = await evidence.release_evidence(services, caller, project, version)
    if format == "markdown":
        return PlainTextResponse(
            evidence_report.markdown(data), media_type="text/markdown; charset=utf-8"
        )
    return data
