"""People and access: users, teams and roles; what one person may do, and why not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.documents import key
from conveyor.domain.errors import ConveyorError
from conveyor.domain.model import Kind
from conveyor.services import documents, users
from conveyor.services import permissions as access
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    may,
    page_number,
    render,
    sentence,
)
from conveyor.web.routes import people_edit

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
PER_PAGE = 30
TABS: dict[str, Kind] = {"users": "users", "teams": "teams", "roles": "user_roles"}
# The questions people ask most, one column each in the per-project table.
PROJECT_COLUMNS = (P.ProjectView, P.ProcessEdit, P.VariableEdit, P.ReleaseCreate)
# Asked per project and environment; the first is shown unless another is chosen.
GRID_PERMISSIONS = (
    P.DeploymentCreate,
    P.DeploymentView,
    P.InterruptionSubmit,
    P.InterruptionViewSubmitResponsible,
    P.TaskCancel,
    P.EventView,
)


@router.get("/people")
async def people(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    return await people_page(request, services, caller)


async def people_page(
    request: Request,
    services: Services,
    caller: Caller,
    *,
    status: int = 200,
    given: dict[str, Any] | None = None,
    problems: list[str] | None = None,
) -> Response:
    """The list of users, teams or roles; with the form to add a person for whoever may."""
    tab = request.query_params.get("tab", "users")
    if request.method == "POST":
        tab = "users"  # a refused "Add a person" shows the users, with the form and why
    kind = TABS.get(tab, "users")
    found = await documents.list_documents(services, caller, kind)
    page = page_number(request.query_params.get("page"))
    start = (page - 1) * PER_PAGE
    return render(
        request,
        "people.html",
        status=status,
        title="People and access",
        tab=tab if tab in TABS else "users",
        docs=found[start : start + PER_PAGE],
        page=page,
        more=len(found) > start + PER_PAGE,
        may_add=may(caller, P.UserEdit),
        given=given or {"must_change": True},
        problems=problems or [],
    )


def _by_cell(cells: list[dict[str, Any]]) -> dict[tuple[str, str | None, str | None], Any]:
    return {(c["permission"], c["project"], c["environment"]): c for c in cells}


@router.get("/people/users/{username}")
async def person(
    username: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    query = request.query_params
    chosen = perms.parse_permission(query.get("grid", "")) or P.DeploymentCreate
    if key(username) == key(caller.username):
        # One's own permissions need no UserView.
        user: dict[str, Any] = {"name": caller.username, "data": {}}
    else:
        doc = await documents.get_document(services, caller, "users", username)
        user = {"name": doc.name, "data": doc.data}
    administer = await _administer(request, services, caller, user["name"])
    wanted = [*PROJECT_COLUMNS, chosen] + [
        p for p, info in perms.CATALOGUE.items() if not info.dimensions
    ]
    chart = await access.matrix(services, caller, user["name"], [str(p) for p in wanted])
    cells = _by_cell(chart["cells"])
    unscoped = [
        (p, cells[(str(p), None, None)])
        for p, info in perms.CATALOGUE.items()
        if not info.dimensions and (str(p), None, None) in cells
    ]
    answer: dict[str, Any] | None = None
    problem = ""
    if query.get("permission"):
        try:
            answer = await access.explain(
                services,
                caller,
                user["name"],
                query["permission"],
                project=query.get("project") or None,
                environment=query.get("environment") or None,
            )
        except ConveyorError as exc:
            problem = sentence(exc.message)
    response = render(
        request,
        "person.html",
        title=f"What {user['name']} may do",
        user=user,
        chart=chart,
        cells=cells,
        project_columns=[str(p) for p in PROJECT_COLUMNS],
        grid=str(chosen),
        grid_permissions=[str(p) for p in GRID_PERMISSIONS],
        unscoped=[(str(p), c) for p, c in unscoped if c["allowed"]],
        all_permissions=[str(p) for p in perms.Permission],
        asked={k: query.get(k, "") for k in ("permission", "project", "environment")},
        answer=answer,
        problem=problem,
        **administer,
    )
    people_edit.forget_shown(response, request)
    return response


DONE = {
    "created": "Created.",
    "password": "The password was set; their web sessions ended.",
    "key": "The API key was created.",
    "deactivated": "Deactivated: they are refused everything, and their web sessions ended.",
    "reactivated": "Reactivated: they may sign in again.",
    "joined": "Added to the team.",
    "left": "Removed from the team.",
}


async def _administer(
    request: Request, services: Services, caller: Caller, username: str
) -> dict[str, Any]:
    """What the account and team sections of a person's page need, for those who may see
    them: UserEdit changes the account, TeamEdit the teams."""
    manage = may(caller, P.UserEdit)
    team_view = may(caller, P.TeamView)
    if not manage and not team_view:
        return {"manage": False, "team_view": False}
    teams = await documents.list_documents(services, caller, "teams") if team_view else []
    done = request.query_params.get("done", "")
    account: dict[str, Any] = {}
    if manage:
        # Encoded documents leave defaults out.
        account = {"active": True, "service_account": False}
        account |= (await documents.get_document(services, caller, "users", username)).data
        account["password"] = await users.password_state(services, caller, username)
    return {
        "manage": manage,
        "team_view": team_view,
        "team_edit": may(caller, P.TeamEdit),
        "account": account,
        "shown": people_edit.take_shown(request, services, caller, username),
        "done_message": DONE.get(done, ""),
        "teams_in": [t for t in teams if _member(t.data, username)],
        "teams_out": [t for t in teams if not _member(t.data, username)],
    }


def _member(team: dict[str, Any], username: str) -> bool:
    return any(key(m) == key(username) for m in team.get("members", []))
