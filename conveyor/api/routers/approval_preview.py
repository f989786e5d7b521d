"""What an approver sees before approving a release for an environment."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import approval_preview

router = APIRouter()


@router.get(
    "/projects/{project}/releases/{version}/approval-preview",
    tags=["Releases"],
    summary="What approving this release for an environment covers: children, commits, "
    "process and variable changes since the release now there",
)
async def preview(
    project: str,
    version: str,
    services: ServicesDep,
    caller: CallerDep,
    environment: str = Query(..., description="The environment the approval is for"),
) -> dict[str, Any]:
    return await approval_preview.preview(services, caller, project, version, environment)
