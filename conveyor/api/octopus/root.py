"""The API root (what the clients read first), capabilities, the current user and spaces."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from conveyor import __version__
from conveyor.api.deps import ServicesDep
from conveyor.api.octopus import shapes
from conveyor.api.octopus.routing import OctopusCaller, OctopusRoute
from conveyor.domain import octopus
from conveyor.domain.errors import NotFound
from conveyor.services import octopus_reads

router = APIRouter(route_class=OctopusRoute, tags=["Octopus API"])


def installation_id(services: Any) -> str:
    """Stable for an installation: derived from where its data lives (no secret in it)."""
    settings = services.settings
    where = f"{settings.data_dir.resolve()}|{settings.database_url or ''}".split("@")[-1]
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:{where}"))


@router.get("/api", summary="The API root: the Octopus version the clients check, and links")
async def api_root(services: ServicesDep) -> dict[str, Any]:
    return shapes.root(__version__, installation_id(services))


@router.get("/api/capabilities", summary="What this server offers (Octopus capability names)")
async def capabilities(caller: OctopusCaller) -> dict[str, Any]:
    return {"Capabilities": list(octopus.CAPABILITIES)}


@router.get("/api/users/me", summary="The user the API key belongs to")
async def me(services: ServicesDep, caller: OctopusCaller) -> dict[str, Any]:
    return shapes.user(await octopus_reads.me(services, caller))


@router.get("/api/spaces", summary="Spaces: Conveyor has one, Spaces-1 named Default")
async def spaces(
    request: Request,
    caller: OctopusCaller,
    partial: str | None = Query(default=None, alias="partialName"),
    ids: list[str] = Query(default=[]),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    wanted = octopus.split_ids(ids)
    items = [shapes.space()]
    if wanted and octopus.SPACE_ID not in wanted:
        items = []
    if not octopus.matches_partial(octopus.SPACE_NAME, partial):
        items = []
    return octopus.collection("Space", items, skip, take, "/api/spaces")


@router.get("/api/spaces/{space}", summary="The one space")
async def space(space: str, caller: OctopusCaller) -> dict[str, Any]:
    if space.lower() not in (octopus.SPACE_ID.lower(), octopus.SPACE_NAME.lower()):
        raise NotFound(f'space "{space}" does not exist: Conveyor has one space, Spaces-1')
    return shapes.space()
