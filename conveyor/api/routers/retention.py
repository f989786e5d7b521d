"""Retention (docs/retention.md): what the policies would delete now, and applying them now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.engine.node import node_name
from conveyor.services import retention, retention_apply

router = APIRouter(tags=["Retention"])


@router.get(
    "/retention/plan",
    summary="What the lifecycles' retention policies would delete now, and why (AdministerSystem, "
    "or ReleaseView and DeploymentView everywhere)",
)
async def retention_plan(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return (await retention.show_plan(services, caller)).as_dict()


@router.post(
    "/retention/apply",
    summary="Apply the retention policies now, on this node (AdministerSystem); each batch "
    "deleted is audited as RetentionApplied",
)
async def retention_apply_now(
    request: Request, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    node = getattr(request.app.state, "node", None)
    name = node.name if node is not None else node_name()
    return (await retention_apply.apply_now(services, caller, name)).as_dict()
