"""People and access: users, teams and roles; what one person may do, and why not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.documents import key
from conveyor.domain.errors import ConveyorError
from conveyor.domain.model import Kind
from conveyor.services import documents
from conveyor.services import permissions as access
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, page_number, render, sentence

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
    tab = request.query_params.get("tab", "users")
    kind = TABS.get(tab, "users")
    found = await documents.list_documents(services, caller, kind)
    page = page_number(request.query_params.get("page"))
    start = (page - 1) * PER_PAGE
    return render(
        request,
        "people.html",
        title="People and access",
        tab=tab if tab in TABS else "users",
        docs=found[start : start + PER_PAGE],
        page=page,
        more=len(found) > start + PER_PAGE,
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
    return render(
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
    )
