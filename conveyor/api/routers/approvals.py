"""Approvals given ahead of time, for a release and an environment (docs/governance.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import approvals

router = APIRouter(tags=["Approvals"])


class NewApproval(BaseModel):
    environment: str = Field(max_length=200)
    notes: str = Field(default="", max_length=4000)
    fields: dict[str, str] = Field(
        default_factory=dict, description="Answers to the approval check's questions, by name"
    )


@router.post(
    "/projects/{project}/releases/{version}/approvals",
    status_code=201,
    summary="Approve a release for an environment ahead of time",
    description="For an orchestrator the approval covers its train: the child releases as "
    "pinned in the release. Answers the approval as listed, with `released`: how many held "
    "deployments it let go.",
)
async def give(
    project: str, version: str, body: NewApproval, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await approvals.give(
        services,
        caller,
        project,
        version,
        body.environment,
        notes=body.notes,
        fields=body.fields,
    )


@router.get(
    "/approvals",
    summary="Approvals, newest first",
    description="Each with its state now: valid, expired, revoked, or stale (the release "
    "changed since it was given). Only those of projects whose releases you may view.",
)
async def list_approvals(
    services: ServicesDep,
    caller: CallerDep,
    project: str | None = None,
    version: str | None = None,
    environment: str | None = None,
    limit: int = Query(default=500, ge=1, le=5000),
) -> list[dict[str, Any]]:
    return await approvals.list_approvals(
        services,
        caller,
        project_ref=project,
        version=version,
        environment=environment,
        limit=limit,
    )


@router.post(
    "/approvals/{ident}/revoke",
    summary="Revoke an approval (its approver, or an environment manager)",
)
async def revoke(ident: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await approvals.revoke(services, caller, ident)
