"""Target health: the targets with their last check and last deployment, and checking them now.

The target documents themselves are served by the documents router (`/targets`, `/targets/{ref}`);
this router is included before it, so that `/targets/health` is this listing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.engine.health import HealthChecks, standalone
from conveyor.services import targets as target_service
from conveyor.services.core import Services

router = APIRouter(tags=["Targets"])


def health_checks(request: Request, services: Services) -> HealthChecks:
    """The node's checks (its runners, its SSH connections), or, where this process runs no
    task engine, checks of its own."""
    node = getattr(request.app.state, "node", None)
    if node is not None:
        checks: HealthChecks = node.health
        return checks
    found: HealthChecks | None = getattr(request.app.state, "health_checks", None)
    if found is None:
        found = request.app.state.health_checks = standalone(services)
    return found


@router.get(
    "/targets/health",
    summary="Targets with their health (last check) and last deployment",
)
async def target_health(
    services: ServicesDep, caller: CallerDep, environment: str | None = None
) -> list[dict[str, Any]]:
    found = await target_service.list_targets(services, caller, environment)
    return [status.as_dict(environment) for status in found]


class CheckRequest(BaseModel):
    name: str | None = Field(
        default=None,
        max_length=200,
        description="The target to check (name, slug or id); none: every enabled target you "
        "may check",
    )


@router.post(
    "/targets/check",
    summary="Check targets now and record their health",
    description="Answers each checked target as `/targets/health` lists it; `healthy` is true "
    "when every one of them is healthy.",
)
async def check_targets(
    request: Request, services: ServicesDep, caller: CallerDep, body: CheckRequest | None = None
) -> dict[str, Any]:
    name = body.name if body is not None else None
    found = await health_checks(request, services).check(caller, name)
    return {
        "healthy": all(status.healthy for status in found),
        "targets": [status.as_dict() for status in found],
    }
