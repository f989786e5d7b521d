"""A project's process history: its versions (who, when), the difference between two of them,
and reverting to an earlier one (for those who may edit the process)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.errors import Conflict, NotFound, ValidationFailed
from conveyor.services import documents, process_history
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    render,
    sentence,
)
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and len(text) < 10 else None


async def _page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    *,
    status: int = 200,
    error: str = "",
) -> Response:
    header = await project_header(services, caller, slug)
    found = await process_history.history(services, caller, slug)  # checks ProcessView
    kept = [v.version for v in found.versions if v.kept]
    older = _number(request.query_params.get("from"))
    newer = _number(request.query_params.get("to"))
    compared = None
    if older is not None and newer is not None:
        a, b = found.find(older), found.find(newer)
        compared = {
            "from": older,
            "to": newer,
            "steps": process_history.compare(a.steps or [], b.steps or []),
        }
    return render(
        request,
        "process_history.html",
        status=status,
        title=f"{header['name']}: process history",
        project=header,
        tab="process",
        history=found,
        kept=kept,
        compared=compared,
        error=error,
        default_from=kept[1] if len(kept) > 1 else None,
        default_to=kept[0] if kept else None,
    )


@router.get("/projects/{slug}/process/history")
async def history(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _page(request, services, caller, slug)


@router.post("/projects/{slug}/process/history")
async def revert(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """Revert to the version the form names, made from the version the page was read at."""
    # Authorise before reading the form: who may not edit is told so, not what is missing.
    await documents.authorise_edit(services, caller, "projects", slug, "process")
    form = await request.form()
    version, read_at = _number(form_text(form, "revert")), _number(form_text(form, "version"))
    try:
        if version is None or read_at is None:
            raise NotFound("choose a version the history lists to revert to")
        await process_history.revert(services, caller, slug, version, read_at)
    except (Conflict, NotFound, ValidationFailed) as exc:
        status = 422 if isinstance(exc, ValidationFailed) else 409
        return await _page(
            request, services, caller, slug, status=status, error=sentence(exc.message)
        )
    return redirect(f"/projects/{slug}/process", done="reverted")
