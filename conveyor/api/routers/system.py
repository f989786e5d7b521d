"""The API root, config as code, permissions, users' own keys, and the audit log (basic)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from conveyor import __version__
from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.api.errors import problem
from conveyor.services import nodes, users
from conveyor.services import permissions as perm_service
from conveyor.services.sessions import token_hash
from conveyor.services.throttle import SignInThrottled

router = APIRouter()


@router.get("", tags=["System"], summary="Server version and links")
async def root() -> dict[str, Any]:
    return {
        "application": "Conveyor",
        "version": __version__,
        "api": "/api/v1",
        "openapi": "/api/v1/openapi.json",
        "docs": "/api/v1/docs",
    }


class ApplyRequest(BaseModel):
    text: str = Field(description="The YAML file's content")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Values of the ${env:NAME} references, read by the client from its environment",
    )
    dry_run: bool = False
    prune: bool = False
    source: str = Field(default="", description="The file name, for the audit log")


@router.post("/config/apply", tags=["Config as code"], summary="Apply a configuration file")
async def apply_config(
    body: ApplyRequest, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    from conveyor.services import configfile

    result = await configfile.apply_text(
        services,
        caller,
        body.text,
        secrets=body.secrets,
        dry_run=body.dry_run,
        prune=body.prune,
        source=body.source,
    )
    return {
        "dry_run": result.dry_run,
        "changed": result.changed,
        "changes": [c.as_dict() for c in result.changes],
    }


@router.get("/config/export", tags=["Config as code"], summary="Everything you may view, as YAML")
async def export_config(services: ServicesDep, caller: CallerDep) -> Response:
    from conveyor.services import configfile

    text = await configfile.export_text(services, caller)
    return Response(text, media_type="application/yaml")


@router.get("/permissions", tags=["Permissions"], summary="The permission catalogue")
async def permission_catalogue() -> list[dict[str, Any]]:
    return perm_service.catalogue()


@router.get("/permissions/roles", tags=["Permissions"], summary="The built-in roles")
async def built_in_roles() -> list[dict[str, Any]]:
    return perm_service.roles()


@router.get(
    "/permissions/explain",
    tags=["Permissions"],
    summary="May this user do this? And through which team and role, or what is missing",
)
async def explain(
    services: ServicesDep,
    caller: CallerDep,
    user: str,
    permission: str,
    project: str | None = None,
    environment: str | None = None,
) -> dict[str, Any]:
    return await perm_service.explain(
        services, caller, user, permission, project=project, environment=environment
    )


@router.get(
    "/permissions/matrix",
    tags=["Permissions"],
    summary="Every permission of a user by project and environment",
)
async def matrix(
    services: ServicesDep,
    caller: CallerDep,
    user: str,
    permission: list[str] | None = Query(default=None),
) -> dict[str, Any]:
    return await perm_service.matrix(services, caller, user, permission)


@router.get("/me", tags=["Users"], summary="Who am I")
async def me(caller: CallerDep) -> dict[str, Any]:
    return {
        "username": caller.username,
        "teams": sorted({g.team for g in caller.principal.grants}),
        "roles": sorted({g.role for g in caller.principal.grants}),
    }


class NewApiKey(BaseModel):
    name: str = Field(default="API key", max_length=200)


@router.get("/users/{username}/api-keys", tags=["Users"], summary="A user's API keys (no secrets)")
async def list_keys(
    username: str, services: ServicesDep, caller: CallerDep
) -> list[dict[str, Any]]:
    return [k.as_dict() for k in await users.list_api_keys(services, caller, username)]


@router.post(
    "/users/{username}/api-keys",
    tags=["Users"],
    summary="Create an API key; it is shown once",
    status_code=201,
)
async def create_key(
    username: str, body: NewApiKey, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    api_key = await users.create_api_key(services, caller, username, body.name)
    return {"user": username, "name": body.name, "api_key": api_key}


@router.delete(
    "/users/{username}/api-keys/{key_id}",
    tags=["Users"],
    summary="Revoke an API key",
    status_code=204,
)
async def revoke_key(
    username: str, key_id: str, services: ServicesDep, caller: CallerDep
) -> Response:
    await users.revoke_api_key(services, caller, username, key_id)
    return Response(status_code=204)


class NewPassword(BaseModel):
    password: str
    current_password: str | None = Field(
        default=None, description="Needed to set one's own password; not to set another's"
    )


@router.put(
    "/users/{username}/password",
    tags=["Users"],
    summary="Set a password",
    description="Your own needs `current_password`; someone else's needs UserEdit. The user's "
    "web sessions end (yours, when you change your own from the web UI, goes on).",
    status_code=204,
    responses={429: {"description": "Too many wrong current passwords: wait Retry-After"}},
)
async def set_password(
    username: str, body: NewPassword, request: Request, services: ServicesDep, caller: CallerDep
) -> Response:
    session = getattr(request.state, "web_session", None)
    try:
        await users.set_password(
            services,
            caller,
            username,
            body.password,
            current=body.current_password,
            keep_session=token_hash(session.token) if session is not None else None,
        )
    except SignInThrottled as exc:
        refused = problem(429, "throttled", exc.message, retry_after=exc.retry_after)
        refused.headers["Retry-After"] = str(exc.retry_after)
        return refused
    return Response(status_code=204)


@router.get(
    "/nodes",
    tags=["System"],
    summary="The server nodes: heartbeat, slots and the tasks each runs",
    description="Needs AdministerSystem. A node whose heartbeat is older than 30 s has "
    "`alive: false`; its tasks are taken over by the others.",
)
async def list_nodes(services: ServicesDep, caller: CallerDep) -> list[dict[str, Any]]:
    return await nodes.list_nodes(services, caller)
