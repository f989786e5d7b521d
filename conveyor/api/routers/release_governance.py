"""Release governance: block and unblock a release, pin a release in an environment, refresh a
release's variables. Parse, call the service, return what it returns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import pins, release_blocks, release_variables

router = APIRouter(tags=["Releases"])


class Reason(BaseModel):
    reason: str = Field(description="Why: shown to everyone the block stops")


class NewPin(BaseModel):
    version: str = Field(description="The release current in the environment")
    reason: str = Field(description="Why it stays there")


@router.post(
    "/projects/{project}/releases/{version}/block",
    summary="Block a release from environments it has not succeeded in yet",
)
async def block(
    project: str, version: str, body: Reason, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await release_blocks.block(services, caller, project, version, body.reason)


@router.delete("/projects/{project}/releases/{version}/block", summary="Unblock a release")
async def unblock(
    project: str, version: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await release_blocks.unblock(services, caller, project, version)


@router.post(
    "/projects/{project}/releases/{version}/update-variables",
    summary="Replace a release's variables with the project's current ones",
)
async def update_variables(
    project: str, version: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await release_variables.update_variables(services, caller, project, version)


@router.get("/projects/{project}/pins", summary="Where the project's releases are pinned")
async def list_pins(project: str, services: ServicesDep, caller: CallerDep) -> list[dict[str, Any]]:
    return await pins.list_pins(services, caller, project)


@router.post(
    "/projects/{project}/environments/{environment}/pin",
    summary="Pin the release current in an environment there",
)
async def pin(
    project: str, environment: str, body: NewPin, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await pins.pin(services, caller, project, body.version, environment, body.reason)


@router.delete("/projects/{project}/environments/{environment}/pin", summary="Unpin")
async def unpin(
    project: str, environment: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await pins.unpin(services, caller, project, environment)
