"""A team's page: its members and its roles, each scoped to projects, project groups and
environments; editable by those with TeamEdit (each change is a change of the team's document,
refused and audited as through the API or ``apply``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from conveyor.domain import permissions as perms
from conveyor.domain.documents import ScopedRole, Team
from conveyor.domain.errors import ValidationFailed
from conveyor.domain.model import Model
from conveyor.services import documents, users
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_list,
    form_text,
    may,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
DONE = {
    "joined": "Added to the team.",
    "left": "Removed from the team.",
    "scope": "The role's scope was saved.",
    "role-added": "The role was added.",
    "role-removed": "The role was removed.",
}


def team_url(slug: str) -> str:
    return f"/people/teams/{quote(slug, safe='')}"


async def _names(services: ServicesDep, caller: PageCaller, kind: Any) -> list[str]:
    return [d.name for d in await documents.list_documents(services, caller, kind)]


@router.get("/people/teams/{ref}")
async def team(ref: str, request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    doc = await documents.get_document(services, caller, "teams", ref)
    people = (
        await documents.list_documents(services, caller, "users") if may(caller, P.UserView) else []
    )
    members = {m.lower() for m in doc.data.get("members", [])}
    done = request.query_params.get("done", "")
    return render(
        request,
        "team.html",
        title=f"Team {doc.name}",
        team=doc,
        edit=may(caller, P.TeamEdit),
        people={p.name: p.data for p in people},
        others=[
            p.name for p in people if p.name.lower() not in members and p.data.get("active", True)
        ],
        roles=await _names(services, caller, "user_roles"),
        projects=await _names(services, caller, "projects"),
        project_groups=await _names(services, caller, "project_groups"),
        environments=await _names(services, caller, "environments"),
        done_message=DONE.get(done, ""),
        who=request.query_params.get("who", ""),
    )


def _scoped(form: FormData, role: str) -> ScopedRole:
    if not role:
        raise ValidationFailed("choose a role")
    return ScopedRole(
        role=role,
        projects=tuple(form_list(form, "projects")),
        project_groups=tuple(form_list(form, "project_groups")),
        environments=tuple(form_list(form, "environments")),
    )


def _index(value: str) -> int:
    return int(value) if value.isdigit() else -1


async def _change(
    services: ServicesDep, caller: PageCaller, ref: str, change: Any, done: str
) -> Response:
    doc = await documents.get_document(services, caller, "teams", ref)
    await users.change_team(services, caller, doc.name, change)
    return redirect(team_url(doc.slug), done=done)


@router.post("/people/teams/{ref}/members")
async def membership(
    ref: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    username = form_text(form, "username")
    member = form_text(form, "member") == "1"

    def change(model: Model, found: Team) -> Team:
        return users.with_member(model, found, username, member)

    doc = await documents.get_document(services, caller, "teams", ref)
    await users.change_team(services, caller, doc.name, change)
    return redirect(team_url(doc.slug), done="joined" if member else "left", who=username)


@router.post("/people/teams/{ref}/roles")
async def add_role(
    ref: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()

    def change(model: Model, found: Team) -> Team:
        return users.with_role(model, found, None, _scoped(form, form_text(form, "role")))

    return await _change(services, caller, ref, change, "role-added")


@router.post("/people/teams/{ref}/roles/{index}")
async def save_scope(
    ref: str, index: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    role = form_text(form, "role")
    remove = form_text(form, "remove") == "1"

    def change(model: Model, found: Team) -> Team:
        scoped = None if remove else _scoped(form, role)
        return users.with_role(model, found, _index(index), scoped, was=role)

    return await _change(services, caller, ref, change, "role-removed" if remove else "scope")
