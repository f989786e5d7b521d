"""The approval page: what approving a release for an environment covers, before the form."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.errors import ValidationFailed
from conveyor.services import approval_preview, approvals
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, render
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/projects/{slug}/releases/{version}/approve")
async def approve(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    environment = request.query_params.get("to", "").strip()
    if not environment:
        raise ValidationFailed("say which environment the approval is for: ?to=ENVIRONMENT")
    preview = await approval_preview.preview(services, caller, slug, version, environment)
    return render(
        request,
        "approve.html",
        title=f"Approve {header['name']} {preview['release']['version']} "
        f"for {preview['environment']}",
        project=header,
        preview=preview,
        approval=await approvals.form(services, caller, slug, version, environment),
        given=request.query_params.get("given") == "1",
    )
