"""Projects: the list, and one project's releases against its environments (its variables:
routes/variables.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.errors import PermissionDenied
from conveyor.services import documents, progress
from conveyor.services.core import Caller, Services
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, may, page_number, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
PROJECTS_PER_PAGE = 50
RELEASES_PER_PAGE = 15


async def project_header(services: Services, caller: Caller, slug: str) -> dict[str, Any]:
    """The project as read (checks ProjectView), with what the tabs may show."""
    doc = await documents.get_document(services, caller, "projects", slug)
    ref = perms.ProjectRef(doc.name, str(doc.data.get("group", "")))
    return {
        "name": doc.name,
        "slug": doc.slug,
        "id": doc.id,
        "data": doc.data,
        "may_process": may(caller, P.ProcessView, project=ref),
        "may_variables": may(caller, P.VariableView, project=ref),
        "may_edit_process": may(caller, P.ProcessEdit, project=ref),
        "may_edit_variables": may(caller, P.VariableEdit, project=ref),
    }


@router.get("/projects")
async def project_list(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    found = await documents.list_documents(services, caller, "projects")
    page = page_number(request.query_params.get("page"))
    start = (page - 1) * PROJECTS_PER_PAGE
    shown = found[start : start + PROJECTS_PER_PAGE]
    groups: dict[str, list[Any]] = {}
    for doc in shown:
        groups.setdefault(str(doc.data.get("group", "")), []).append(doc)
    return render(
        request,
        "projects.html",
        title="Projects",
        groups=groups,
        page=page,
        more=len(found) > start + PROJECTS_PER_PAGE,
        total=len(found),
    )


@router.get("/projects/{slug}")
async def project(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    page = page_number(request.query_params.get("page"))
    try:
        board = await progress.project_progress(
            services,
            caller,
            slug,
            offset=(page - 1) * RELEASES_PER_PAGE,
            limit=RELEASES_PER_PAGE,
        )
    except PermissionDenied as exc:
        board = None
        hidden = exc.message
    else:
        hidden = ""
    return render(
        request,
        "project.html",
        title=header["name"],
        project=header,
        tab="overview",
        board=board,
        hidden=hidden,
        page=page,
    )
