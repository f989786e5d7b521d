"""Creating a release in the browser: the form suggests the next version and preselects the
highest package and child versions; posting creates it (and its automatic deployments) and
goes to the release page.

Registered before ``releases`` (web/__init__.py): ``/releases/new`` is not a release version.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.errors import Conflict, ValidationFailed
from conveyor.services import deployments
from conveyor.services.core import Caller
from conveyor.services.release_form import ReleaseForm, release_form
from conveyor.services.releases import parse_pairs
from conveyor.web.pages import (
    TEMPLATES,
    PageCaller,
    PageRoute,
    ServicesDep,
    form_list,
    form_text,
    redirect,
    render,
    sentence,
)
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission


def may_create_release(me: Caller | None, project: dict[str, Any]) -> bool:
    """For the pages that link to the form (project.html): the server refuses anyway."""
    if me is None:
        return False
    ref = perms.ProjectRef(project["name"], str(project["data"].get("group", "")))
    return perms.allows(me.principal, P.ReleaseCreate, project=ref) and not project["data"].get(
        "disabled"
    )


TEMPLATES.globals["may_create_release"] = may_create_release


def _page(
    request: Request,
    header: dict[str, Any],
    form: ReleaseForm,
    *,
    status: int = 200,
    given: dict[str, Any] | None = None,
    problems: list[str] | None = None,
) -> Response:
    return render(
        request,
        "release_new.html",
        status=status,
        title=f"New release of {header['name']}",
        project=header,
        form=form,
        given=given or {},
        problems=problems or [],
    )


@router.get("/projects/{slug}/releases/new")
async def new_release(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    form = await release_form(services, caller, slug)  # checks ReleaseCreate
    return _page(request, header, form)


@router.post("/projects/{slug}/releases/new")
async def create(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    form = await release_form(services, caller, slug)  # authorise before reading the form
    posted = await request.form()
    version = form_text(posted, "version").strip()
    notes = form_text(posted, "notes")
    channel = form_text(posted, "channel").strip()
    # An empty choice: the highest the channel allows (projects with channels).
    packages = [p for p in form_list(posted, "package") if p]
    children = [c for c in form_list(posted, "child") if c]
    given = {
        "version": version,
        "notes": notes,
        "package": packages,
        "child": children,
        "channel": channel,
    }
    try:
        release, _ = await deployments.create_release(
            services,
            caller,
            slug,
            version=version or None,
            packages=parse_pairs(packages, "package"),
            children=parse_pairs(children, "child release"),
            notes=notes,
            channel=channel or None,
        )
    except ValidationFailed as exc:
        said = [sentence(p.message) for p in exc.problems] or [sentence(exc.message)]
        return _page(request, header, form, status=422, given=given, problems=said)
    except Conflict as exc:
        return _page(
            request, header, form, status=409, given=given, problems=[sentence(exc.message)]
        )
    made = quote(release.version, safe="")
    return redirect(f"/projects/{header['slug']}/releases/{made}", done="created")
