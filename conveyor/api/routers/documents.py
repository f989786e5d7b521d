"""CRUD for every configuration document kind, plus a project's process and variables."""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

from fastapi import APIRouter, Body, Response

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.domain.model import Kind
from conveyor.services import documents as docs

# URL segment -> document kind
ROUTES: dict[str, Kind] = {
    "environments": "environments",
    "lifecycles": "lifecycles",
    "project-groups": "project_groups",
    "projects": "projects",
    "subscriptions": "subscriptions",
    "targets": "targets",
    "teams": "teams",
    "user-roles": "user_roles",
    "users": "users",
}

router = APIRouter()

DocumentBody = Body(
    ...,
    description="The document, in the shape of config as code (see docs/config-as-code.md).",
    examples=[{"name": "Development", "description": "Where the build server deploys"}],
)


def _add_kind(segment: str, kind: Kind) -> None:
    label = segment.replace("-", " ")

    async def list_(services: ServicesDep, caller: CallerDep) -> list[dict[str, Any]]:
        return [d.as_dict() for d in await docs.list_documents(services, caller, kind)]

    async def get(ref: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
        return (await docs.get_document(services, caller, kind, ref)).as_dict()

    async def create(
        services: ServicesDep, caller: CallerDep, response: Response, data: Any = DocumentBody
    ) -> dict[str, Any]:
        view = await docs.create_document(services, caller, kind, data)
        response.status_code = 201
        response.headers["Location"] = f"/api/v1/{segment}/{view.slug}"
        return view.as_dict()

    async def update(
        ref: str, services: ServicesDep, caller: CallerDep, data: Any = DocumentBody
    ) -> dict[str, Any]:
        return (await docs.update_document(services, caller, kind, ref, data)).as_dict()

    async def delete(ref: str, services: ServicesDep, caller: CallerDep) -> Response:
        await docs.delete_document(services, caller, kind, ref)
        return Response(status_code=204)

    tag: list[str | Enum] = [label.capitalize()]
    router.add_api_route(f"/{segment}", list_, methods=["GET"], tags=tag, summary=f"List {label}")
    router.add_api_route(
        f"/{segment}",
        create,
        methods=["POST"],
        tags=tag,
        summary=f"Create one of the {label}",
        status_code=201,
    )
    router.add_api_route(
        f"/{segment}/{{ref}}",
        get,
        methods=["GET"],
        tags=tag,
        summary=f"Read one of the {label} by name, slug or id",
    )
    router.add_api_route(
        f"/{segment}/{{ref}}",
        update,
        methods=["PUT"],
        tags=tag,
        summary=f"Replace one of the {label} (a new name renames it)",
    )
    router.add_api_route(
        f"/{segment}/{{ref}}",
        delete,
        methods=["DELETE"],
        tags=tag,
        summary=f"Delete one of the {label}",
        status_code=204,
    )


for _segment, _kind in ROUTES.items():
    _add_kind(_segment, _kind)


@router.get("/projects/{ref}/process", tags=["Projects"], summary="A project's deployment process")
async def get_process(ref: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await docs.get_process(services, caller, ref)


@router.put(
    "/projects/{ref}/process",
    tags=["Projects"],
    summary="Replace a project's deployment process",
    description="Send the `version` you read: an edit made from a stale version is refused (409).",
)
async def put_process(
    ref: str, services: ServicesDep, caller: CallerDep, data: Any = Body(...)
) -> dict[str, Any]:
    return await docs.update_process(services, caller, ref, data)


@router.get("/projects/{ref}/variables", tags=["Projects"], summary="A project's variables")
async def get_variables(ref: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    return await docs.get_variables(services, caller, ref)


@router.put(
    "/projects/{ref}/variables",
    tags=["Projects"],
    summary="Replace a project's variables",
    description="A sensitive variable sent without `value` keeps its stored value.",
)
async def put_variables(
    ref: str, services: ServicesDep, caller: CallerDep, data: Any = Body(...)
) -> dict[str, Any]:
    return await docs.update_variables(services, caller, ref, cast(Any, data))
