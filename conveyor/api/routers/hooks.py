"""Webhooks in: ``POST /api/v1/hooks/{github,gitlab,generic}`` (no API key: the delivery's
signature or token is its proof), and the sources and project settings behind them
(docs/webhooks.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep, client_address
from conveyor.services import hooks, hooks_receive

router = APIRouter(tags=["Webhooks"])

SourceQuery = Query(
    default=None,
    description="The source's name, when several of this provider are configured (otherwise "
    "the one whose secret the delivery proves)",
)
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A push to a watched branch: recorded, with the releases it created"},
    202: {"description": "Accepted and ignored (another event, branch or repository)"},
    401: {"description": "No such source, or a bad signature, token or timestamp (audited)"},
    409: {"description": "This delivery id was received before: a replay (audited)"},
    422: {"description": "Not a JSON object, no delivery id, or a push without its ref"},
}


async def _receive(
    provider: str, request: Request, services: ServicesDep, source: str | None
) -> JSONResponse:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    received = await hooks_receive.receive(
        services,
        provider,
        headers,
        body,
        source_name=source,
        ip=client_address(request),
        user_agent=request.headers.get("user-agent"),
    )
    return JSONResponse(received.body, status_code=received.status)


@router.post("/hooks/github", summary="GitHub push webhook", responses=RESPONSES)
async def github(
    request: Request, services: ServicesDep, source: str | None = SourceQuery
) -> JSONResponse:
    return await _receive("github", request, services, source)


@router.post("/hooks/gitlab", summary="GitLab push webhook", responses=RESPONSES)
async def gitlab(
    request: Request, services: ServicesDep, source: str | None = SourceQuery
) -> JSONResponse:
    return await _receive("gitlab", request, services, source)


@router.post(
    "/hooks/generic",
    summary="Generic push webhook (HMAC with a timestamp)",
    responses=RESPONSES,
)
async def generic(
    request: Request, services: ServicesDep, source: str | None = SourceQuery
) -> JSONResponse:
    return await _receive("generic", request, services, source)


class NewSource(BaseModel):
    name: str = Field(max_length=100)
    provider: str = Field(description="github, gitlab or generic")
    secret: str | None = Field(
        default=None,
        max_length=1000,
        description="The shared secret (at least 16 characters); omitted: one is made and "
        "shown once in the answer",
    )
    repository: str = Field(
        default="", max_length=400, description='"owner/name" as the host names it; "" any'
    )
    branches: list[str] = Field(default_factory=lambda: ["main"], description="Names or globs")
    repo_path: str = Field(
        default="",
        max_length=2000,
        description="A clone of the repository on the server, read by change detection "
        "(fetched when a pushed commit is missing)",
    )
    run_as: str = Field(max_length=100, description="The service account the pushes act as")


@router.get("/hooks/sources", summary="Webhook sources (no secrets); AdministerSystem")
async def list_sources(services: ServicesDep, caller: CallerDep) -> list[dict[str, Any]]:
    return [s.as_dict() for s in await hooks.list_sources(services, caller)]


@router.post(
    "/hooks/sources",
    status_code=201,
    summary="Add a webhook source; a secret made by Conveyor is shown this once",
)
async def add_source(body: NewSource, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    source, secret = await hooks.add_source(services, caller, body.model_dump())
    out = source.as_dict()
    if secret is not None:
        out["secret"] = secret
    return out


@router.delete("/hooks/sources/{name}", status_code=204, summary="Remove a webhook source")
async def remove_source(name: str, services: ServicesDep, caller: CallerDep) -> Response:
    await hooks.remove_source(services, caller, name)
    return Response(status_code=204)


@router.get("/hooks/deliveries", summary="Deliveries received, newest first; AdministerSystem")
async def deliveries(
    services: ServicesDep, caller: CallerDep, source: str | None = None
) -> list[dict[str, Any]]:
    return await hooks.list_deliveries(services, caller, source)


class ProjectHookSetting(BaseModel):
    release_on_push: bool = Field(
        description="A push to a watched branch that changes the project's watch paths "
        "creates a release of it"
    )


@router.get("/projects/{project}/hook-settings", summary="Whether a push releases the project")
async def get_setting(project: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await hooks.get_project_setting(services, caller, project)


@router.put(
    "/projects/{project}/hook-settings",
    summary="Let pushes release the project, or stop them (ProjectEdit)",
)
async def put_setting(
    project: str, body: ProjectHookSetting, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await hooks.set_project_setting(services, caller, project, body.release_on_push)
