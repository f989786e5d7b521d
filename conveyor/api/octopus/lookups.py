"""Look-ups by name, as the clients make them: a list with ``partialName`` (a case-insensitive
part of the name), then the exact name picked by the client. Projects, their channels,
environments (v1 and v2), lifecycles, project groups and feeds (the built-in feed, the only
one, first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from conveyor.api.deps import ServicesDep
from conveyor.api.octopus import shapes
from conveyor.api.octopus.routing import OctopusCaller, OctopusRoute, Space
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.errors import NotFound
from conveyor.domain.model import Kind
from conveyor.services import octopus_reads
from conveyor.services.core import Caller, Services

router = APIRouter(route_class=OctopusRoute, tags=["Octopus API"])

Shape = Callable[[octopus_reads.Found], dict[str, Any]]


class Lookup:
    """What every list of the clients' look-ups takes: ``partialName``, ``ids`` (comma-joined
    or repeated), ``skip`` and ``take``."""

    def __init__(
        self,
        partial: str | None = Query(default=None, alias="partialName"),
        ids: list[str] = Query(default=[]),
        skip: int = 0,
        take: int | None = None,
    ) -> None:
        self.partial, self.ids, self.skip, self.take = partial, ids, skip, take


LookupDep = Annotated[Lookup, Depends()]


async def _list(
    services: Services,
    caller: Caller,
    kind: Kind,
    shape: Shape,
    item_type: str,
    path: str,
    q: Lookup,
) -> dict[str, Any]:
    found = await octopus_reads.documents(
        services, caller, kind, partial=q.partial, ids=octopus.split_ids(q.ids)
    )
    items = [shape(f) for f in found]
    return octopus.collection(item_type, items, q.skip, q.take, f"{shapes.PREFIX}/{path}")


async def _one(
    services: Services, caller: Caller, kind: Kind, shape: Shape, ref: str, noun: str
) -> dict[str, Any]:
    found = await octopus_reads.documents(services, caller, kind, ids=[ref])
    if not found:
        raise NotFound(f"{noun} {ref} does not exist, or you may not view it")
    return shape(found[0])


@router.get("/api/{space}/projects", summary="Projects (partialName, ids)")
async def projects(
    space: Space, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    return await _list(services, caller, "projects", shapes.project, "Project", "projects", q)


@router.get("/api/{space}/projects/{ref}", summary="One project")
async def project(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return await _one(services, caller, "projects", shapes.project, ref, "project")


@router.get("/api/{space}/projects/{ref}/channels", summary="A project's channels")
async def project_channels(
    space: Space, ref: str, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    number = await octopus_reads.visible_project(services, caller, ref)
    found = await octopus_reads.channels(
        services, caller, project_id=number, partial=q.partial, ids=octopus.split_ids(q.ids)
    )
    items = [shapes.channel(c) for c in found]
    path = f"{shapes.PREFIX}/projects/{ref}/channels"
    return octopus.collection("Channel", items, q.skip, q.take, path)


@router.get("/api/{space}/channels", summary="Channels of the projects you may view")
async def channels(
    space: Space, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    found = await octopus_reads.channels(
        services, caller, partial=q.partial, ids=octopus.split_ids(q.ids)
    )
    items = [shapes.channel(c) for c in found]
    return octopus.collection("Channel", items, q.skip, q.take, f"{shapes.PREFIX}/channels")


@router.get("/api/{space}/channels/{ref}", summary="One channel (Channels-3, Channels-3-hotfix)")
async def channel(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    found = await octopus_reads.channels(services, caller, ids=[ref])
    if not found:
        raise NotFound(
            f"channel {ref} does not exist, or you may not view it (channel ids look like "
            "Channels-3 for a project's Default channel, Channels-3-hotfix for another)"
        )
    return shapes.channel(found[0])


def _v1(found: octopus_reads.Found) -> dict[str, Any]:
    return shapes.environment(found)


def _v2(found: octopus_reads.Found) -> dict[str, Any]:
    return shapes.environment(found, v2=True)


@router.get("/api/{space}/environments", summary="Environments, in their order")
async def environments(
    space: Space, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    return await _list(
        services, caller, "environments", _v1, "DeploymentEnvironment", "environments", q
    )


@router.get("/api/{space}/environments/v2", summary="Environments (v2: all are static)")
async def environments_v2(
    space: Space,
    services: ServicesDep,
    caller: OctopusCaller,
    q: LookupDep,
    kinds: list[str] = Query(default=[], alias="type"),
) -> dict[str, Any]:
    wanted = {k.lower() for k in octopus.split_ids(kinds)}
    if wanted and "static" not in wanted:
        path = f"{shapes.PREFIX}/environments/v2"
        return octopus.collection("Environment", [], q.skip, q.take, path)
    return await _list(services, caller, "environments", _v2, "Environment", "environments/v2", q)


@router.get("/api/{space}/environments/{ref}", summary="One environment")
async def environment(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return await _one(services, caller, "environments", _v1, ref, "environment")


@router.get("/api/{space}/lifecycles", summary="Lifecycles, their phases by environment id")
async def lifecycles(
    space: Space, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    return await _list(
        services, caller, "lifecycles", shapes.lifecycle, "Lifecycle", "lifecycles", q
    )


@router.get("/api/{space}/lifecycles/{ref}", summary="One lifecycle")
async def lifecycle(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return await _one(services, caller, "lifecycles", shapes.lifecycle, ref, "lifecycle")


@router.get("/api/{space}/projectgroups", summary="Project groups")
async def project_groups(
    space: Space, services: ServicesDep, caller: OctopusCaller, q: LookupDep
) -> dict[str, Any]:
    shape = shapes.project_group
    return await _list(
        services, caller, "project_groups", shape, "ProjectGroup", "projectgroups", q
    )


@router.get("/api/{space}/projectgroups/{ref}", summary="One project group")
async def project_group(
    space: Space, ref: str, services: ServicesDep, caller: OctopusCaller
) -> Any:
    return await _one(services, caller, "project_groups", shapes.project_group, ref, "group")


def _feeds(caller: Caller) -> list[dict[str, Any]]:
    if not perms.authorize(caller.principal, perms.Permission.FeedView).allowed:
        return []
    return [shapes.built_in_feed()]


@router.get("/api/{space}/feeds", summary="Package feeds: the built-in feed (the only one)")
async def feeds(
    space: Space,
    caller: OctopusCaller,
    q: LookupDep,
    feed_type: str | None = Query(default=None, alias="feedType"),
) -> dict[str, Any]:
    wanted = octopus.split_ids(q.ids)
    items = [
        f
        for f in _feeds(caller)
        if (not wanted or f["Id"] in wanted)
        and octopus.matches_partial(f["Name"], q.partial)
        and (not feed_type or feed_type.lower() == f["FeedType"].lower())
    ]
    return octopus.collection("Feed", items, q.skip, q.take, f"{shapes.PREFIX}/feeds")


@router.get("/api/{space}/feeds/{ref}", summary="The built-in feed")
async def feed(space: Space, ref: str, caller: OctopusCaller) -> dict[str, Any]:
    found = [f for f in _feeds(caller) if f["Id"].lower() == ref.lower()]
    if not found:
        raise NotFound(
            f"feed {ref} does not exist: the built-in feed is {octopus.BUILT_IN_FEED_ID}"
        )
    return found[0]
