"""Releases, deployments, tasks, interruptions and the dashboard."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.domain.ids import MAX_ROW_ID
from conveyor.services import (
    channels,
    deployment_views,
    deployments,
    interruptions,
    releases,
    tasks,
)
from conveyor.services.deployments import TERMINAL

router = APIRouter()


class NewRelease(BaseModel):
    version: str | None = Field(default=None, description="Omit for the next automatic version")
    packages: dict[str, str] = Field(default_factory=dict, description="package id -> version")
    children: dict[str, str] = Field(
        default_factory=dict, description="child project -> release version (deploy_release steps)"
    )
    notes: str = ""
    build: dict[str, Any] = Field(default_factory=dict, description="build information")
    channel: str | None = Field(
        default=None,
        max_length=100,
        description="The project's channel (its version rules are checked); omit for the first "
        "whose rules the versions satisfy, the default channel first",
    )


@router.post(
    "/projects/{project}/releases",
    tags=["Releases"],
    status_code=201,
    summary="Create a release (a snapshot of the process and variables)",
)
async def create_release(
    project: str, body: NewRelease, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    release, automatic = await deployments.create_release(
        services,
        caller,
        project,
        version=body.version,
        packages=body.packages,
        children=body.children,
        notes=body.notes,
        build=body.build,
        channel=body.channel,
    )
    return {**release.as_dict(), "automatic_deployments": automatic}


@router.get("/projects/{project}/releases", tags=["Releases"], summary="Releases, newest first")
async def list_releases(
    project: str, services: ServicesDep, caller: CallerDep
) -> list[dict[str, Any]]:
    return [r.as_dict() for r in await releases.list_releases(services, caller, project)]


@router.get("/projects/{project}/releases/{version}", tags=["Releases"], summary="One release")
async def get_release(
    project: str, version: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return (await releases.get_release(services, caller, project, version)).as_dict()


@router.get(
    "/projects/{project}/releases/{version}/plan",
    tags=["Releases"],
    summary="What deploying this release to an environment would do, and why",
)
async def plan(
    project: str,
    version: str,
    services: ServicesDep,
    caller: CallerDep,
    environment: str = Query(..., alias="to"),
    skip: list[str] = Query(default=[]),
) -> dict[str, Any]:
    return await deployments.plan(services, caller, project, version, environment, skip=skip)


class NewDeployment(BaseModel):
    project: str
    version: str
    environment: str
    skip: list[str] = Field(default_factory=list, description="Names of steps to skip")
    guided_failure: bool | None = Field(
        default=None, description="Ask a person on failure; default: the environment's setting"
    )
    start_at: AwareDatetime | None = Field(
        default=None,
        description="Start no earlier than this (ISO 8601 with its offset); inside the "
        "environment's change window, if it has one",
    )
    freeze_override: str | None = Field(
        default=None,
        max_length=2000,
        description="Deploy during a freeze: the reason (needs DeploymentFreezeAdminister)",
    )


@router.post("/deployments", tags=["Deployments"], status_code=201, summary="Deploy a release")
async def create_deployment(
    body: NewDeployment, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    queued = await deployments.deploy(
        services,
        caller,
        body.project,
        body.version,
        body.environment,
        skip=body.skip,
        guided_failure=body.guided_failure,
        start_at=body.start_at,
        freeze_override=body.freeze_override,
    )
    return queued.as_dict()


class Promotion(BaseModel):
    project: str
    source: str = Field(alias="from")
    destination: str = Field(alias="to")
    guided_failure: bool | None = None
    start_at: AwareDatetime | None = None
    freeze_override: str | None = Field(default=None, max_length=2000)


@router.post(
    "/deployments/promote",
    tags=["Deployments"],
    status_code=201,
    summary="Deploy the release current in one environment to another",
)
async def promote(body: Promotion, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    queued = await deployments.promote(
        services,
        caller,
        body.project,
        body.source,
        body.destination,
        guided_failure=body.guided_failure,
        start_at=body.start_at,
        freeze_override=body.freeze_override,
    )
    return queued.as_dict()


@router.get("/deployments", tags=["Deployments"], summary="Deployments, newest first")
async def list_deployments(
    services: ServicesDep,
    caller: CallerDep,
    project: str | None = None,
    environment: str | None = None,
    state: str | None = Query(default=None, description="queued, executing, waiting, success, …"),
    limit: int = Query(default=100, ge=1, le=deployment_views.MAX_PAGE),
    before: int | None = Query(
        default=None,
        ge=1,
        le=MAX_ROW_ID,
        description="A deployment number (the last of the previous page): those before it",
    ),
) -> list[dict[str, Any]]:
    return await deployment_views.list_deployments(
        services,
        caller,
        project=project,
        environment=environment,
        state=state,
        limit=limit,
        before=before,
    )


@router.get("/tasks/{task}", tags=["Tasks"], summary="A task with its steps and children")
async def get_task(task: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await tasks.get_task(services, caller, task)


@router.get(
    "/tasks/{task}/log",
    tags=["Tasks"],
    summary="Log lines after an offset; `wait` long-polls for new lines",
)
async def task_log(
    task: str,
    services: ServicesDep,
    caller: CallerDep,
    after: int = Query(default=0, ge=0, le=MAX_ROW_ID, description="The `next` of the last read"),
    limit: int = 1000,
    wait: float = Query(default=0, ge=0, le=30),
) -> dict[str, Any]:
    result = await tasks.task_log(services, caller, task, after=after, limit=limit)
    waited = 0.0
    while wait and not result["lines"] and not result["finished"] and waited < wait:
        await asyncio.sleep(0.25)
        waited += 0.25
        result = await tasks.task_log(services, caller, task, after=after, limit=limit)
    return result


@router.post("/tasks/{task}/cancel", tags=["Tasks"], summary="Cancel a task and its children")
async def cancel(task: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await tasks.cancel_task(services, caller, task)


@router.get(
    "/tasks/{task}/wait",
    tags=["Tasks"],
    summary="Wait (up to `timeout` seconds) for a task to end",
)
async def wait(
    task: str,
    services: ServicesDep,
    caller: CallerDep,
    seconds: float = Query(default=25, ge=0, le=60, alias="timeout"),
) -> dict[str, Any]:
    waited = 0.0
    result = await tasks.get_task(services, caller, task)
    while result["state"] not in TERMINAL and waited < seconds:
        await asyncio.sleep(0.25)
        waited += 0.25
        result = await tasks.get_task(services, caller, task)
    return result


@router.get("/interruptions", tags=["Interruptions"], summary="Interruptions you may view")
async def list_interruptions(
    services: ServicesDep,
    caller: CallerDep,
    task: str | None = None,
    mine: bool = False,
    pending: bool = False,
) -> list[dict[str, Any]]:
    return await interruptions.list_interruptions(
        services, caller, task=task, mine=mine, pending_only=pending
    )


@router.get("/interruptions/{ident}", tags=["Interruptions"], summary="One interruption")
async def get_interruption(ident: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await interruptions.get_interruption(services, caller, ident)


@router.post(
    "/interruptions/{ident}/take",
    tags=["Interruptions"],
    summary="Take responsibility for an interruption",
)
async def take(ident: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await interruptions.take(services, caller, ident)


class Answer(BaseModel):
    result: str = Field(description="proceed or abort; for a guided failure retry, ignore or abort")
    notes: str = ""
    fields: dict[str, str] = Field(
        default_factory=dict, description="answers to the step's questions, by field name"
    )


@router.post("/interruptions/{ident}/submit", tags=["Interruptions"], summary="Answer")
async def submit(
    ident: str, body: Answer, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await interruptions.submit(services, caller, ident, body.result, body.notes, body.fields)


@router.get(
    "/dashboard",
    tags=["Dashboard"],
    summary="The current deployment of each project in each environment",
)
async def dashboard(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    found = await deployment_views.dashboard(services, caller)
    # Projects with several channels: a release line per channel (docs/deployments.md).
    found["channels"] = await channels.dashboard_lines(services, caller)
    return found
