"""Build-server integration: where change detection starts for each project."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import buildinfo

router = APIRouter(tags=["Build information"])


@router.get(
    "/changes/baselines",
    summary="Each project's watch paths and the commit change detection starts from",
    description="Without `environment`: the commit recorded on the project's newest release "
    "(highest version). With it: the commit of the release last deployed successfully there. "
    "`release` or `commit` is null, with a `reason`, when there is none: count it as changed.",
)
async def baselines(
    services: ServicesDep,
    caller: CallerDep,
    environment: str | None = Query(default=None, description="Environment name or slug"),
    project: str | None = Query(default=None, description="Only this project"),
) -> list[dict[str, Any]]:
    return await buildinfo.baselines(services, caller, environment=environment, project=project)
