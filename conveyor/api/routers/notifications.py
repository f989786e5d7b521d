"""Notifications: the outbox's deliveries with their outcome, and a person's preferences."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import deliveries, preferences

router = APIRouter(tags=["Notifications"])


@router.get("/deliveries", summary="Notifications sent or to send (newest first), with outcome")
async def list_deliveries(
    services: ServicesDep,
    caller: CallerDep,
    state: Annotated[
        str | None, Query(description="pending, succeeded or failed", pattern="^[a-z]+$")
    ] = None,
    subscription: Annotated[str | None, Query(description="A subscription's name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return await deliveries.list_deliveries(
        services, caller, state=state, subscription=subscription, limit=limit
    )


@router.get("/users/{username}/preferences", tags=["Users"], summary="A person's preferences")
async def get_preferences(
    username: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return await preferences.get_preferences(services, caller, username)


@router.put(
    "/users/{username}/preferences",
    tags=["Users"],
    summary="Set one's own preferences (or anyone's, with UserEdit)",
)
async def set_preferences(
    username: str,
    services: ServicesDep,
    caller: CallerDep,
    data: Any = Body(..., examples=[{"notify_interruptions": False}]),
) -> dict[str, Any]:
    return await preferences.set_preferences(services, caller, username, data)
