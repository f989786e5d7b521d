"""Approving a release for an environment ahead of time, and revoking an approval.

The page itself (what the approval covers, then this form) is
``conveyor.web.routes.approval_preview``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.documents import slugify
from conveyor.domain.errors import ValidationFailed
from conveyor.services import approval_preview, approvals
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    render,
)
from conveyor.web.routes.interruptions import FIELD, refused_answer
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.post("/projects/{slug}/releases/{version}/approve")
async def approve(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    environment = form_text(form, "environment")
    given = {
        name.removeprefix(FIELD): value.strip()
        for name, value in form.multi_items()
        if name.startswith(FIELD) and isinstance(value, str)
    }
    notes = form_text(form, "notes").strip()
    try:
        await approvals.give(
            services, caller, slug, version, environment, notes=notes, fields=given
        )
    except ValidationFailed as exc:
        # The page again, the answers as typed and each problem next to its question.
        header = await project_header(services, caller, slug)
        preview = await approval_preview.preview(services, caller, slug, version, environment)
        return render(
            request,
            "approve.html",
            status=422,
            title=f"Approve {header['name']} {version} for {environment}",
            project=header,
            preview=preview,
            approval=await approvals.form(services, caller, slug, version, environment),
            refused=refused_answer("approval", exc, given, notes),
        )
    return redirect(f"/projects/{slug}/releases/{version}/approve", to=environment, given="1")


@router.post("/approvals/{ident}/revoke")
async def revoke(
    ident: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    revoked = await approvals.revoke(services, caller, ident)
    form = await request.form()
    back = form_text(form, "back")
    if back.startswith("/") and not back.startswith("//"):
        return redirect(back)
    return redirect(
        f"/projects/{slugify(revoked['project'])}/releases/{revoked['version']}/approve",
        to=revoked["environment"],
    )
