"""A project's settings: name, group, lifecycle, description, watch paths, guided failure and
whether it is disabled; read by those who may view it, changed by those with ProjectEdit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.documents import GuidedFailureMode
from conveyor.domain.errors import Conflict, ValidationFailed
from conveyor.services import documents
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    may,
    redirect,
    render,
    sentence,
)
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
GUIDED = {
    GuidedFailureMode.ENVIRONMENT_DEFAULT.value: "As the environment says",
    GuidedFailureMode.ON.value: "On: a failed step asks a person to retry, ignore or abort",
    GuidedFailureMode.OFF.value: "Off: a failed step fails the deployment",
}


@router.get("/projects/{slug}/settings")
async def settings_page(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _page(request, services, caller, slug)


async def _page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    *,
    typed: dict[str, Any] | None = None,
    error: str = "",
    status: int = 200,
) -> Response:
    """The settings as stored, or as typed in a refused form (with the reason)."""
    header = await project_header(services, caller, slug)
    ref = perms.ProjectRef(header["name"], str(header["data"].get("group", "")))
    groups = await documents.list_documents(services, caller, "project_groups")
    lifecycles = await documents.list_documents(services, caller, "lifecycles")
    data = header["data"]
    settings = {
        "name": header["name"],
        "group": data.get("group", ""),
        "lifecycle": data.get("lifecycle", ""),
        "description": data.get("description", ""),
        "watch_paths": "\n".join(data.get("watch_paths", [])),
        "guided_failure": data.get("guided_failure") or "environment_default",
        "disabled": bool(data.get("disabled")),
    }
    if typed is not None:
        settings = {**typed, "watch_paths": "\n".join(typed["watch_paths"])}
    return render(
        request,
        "project_settings.html",
        status=status,
        title=f"Settings: {header['name']}",
        project=header,
        settings=settings,
        error=error,
        # The current choice is offered even to someone who may not view its document.
        groups=sorted({g.name for g in groups} | {str(data.get("group", ""))}),
        lifecycles=sorted({lc.name for lc in lifecycles} | {str(data.get("lifecycle", ""))}),
        guided=GUIDED,
        may_edit=may(caller, P.ProjectEdit, project=ref),
        saved=request.query_params.get("done") == "saved",
    )


@router.post("/projects/{slug}/settings")
async def save_settings(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    paths = [line.strip() for line in form_text(form, "watch_paths").splitlines()]
    data = {
        "name": form_text(form, "name").strip(),
        "group": form_text(form, "group").strip(),
        "lifecycle": form_text(form, "lifecycle").strip(),
        "description": form_text(form, "description").strip(),
        "watch_paths": [p for p in paths if p],
        "guided_failure": form_text(form, "guided_failure") or "environment_default",
        "disabled": form_text(form, "disabled") == "yes",
    }
    # The service authorises (ProjectEdit) before it looks at what was sent; a refusal of what
    # was sent shows the form again, as typed, with the reason.
    try:
        saved = await documents.update_document(services, caller, "projects", slug, data)
    except (ValidationFailed, Conflict) as exc:
        status = 422 if isinstance(exc, ValidationFailed) else 409
        error = sentence(exc.message)
        return await _page(request, services, caller, slug, typed=data, error=error, status=status)
    return redirect(f"/projects/{saved.slug}/settings", done="saved")
