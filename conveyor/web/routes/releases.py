"""A release, and deploying it: the plan is shown before anyone confirms."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.api.errors import STATUS
from conveyor.domain.errors import Conflict, PolicyViolation, Problem, ValidationFailed
from conveyor.services import approvals, deployments, pins, progress, release_moves, releases
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    deploy_title,
    form_list,
    form_text,
    redirect,
    render,
    sentence,
    short_id,
)
from conveyor.web.routes import release_governance
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
router.include_router(release_governance.router)
GUIDED = {"default": None, "on": True, "off": False}


@router.get("/projects/{slug}/releases/{version}")
async def release(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    header = await project_header(services, caller, slug)
    found = await releases.get_release(services, caller, slug, version)  # checks ReleaseView
    where = await progress.release_progress(services, caller, slug, version)
    return render(
        request,
        "release.html",
        title=f"{header['name']} {found.version}",
        project=header,
        release=found.as_dict(),
        progress=where,
        deployable=[e for e in where["environments"] if e["can_deploy"]],
        # _release_controls.html: block and pin (routes/release_governance.py).
        controls=await pins.release_controls(services, caller, slug, found.id),
        approvals=await approvals.release_panel(services, caller, slug, found.version),
        done=request.query_params.get("done", ""),
        # _moves.html: promote, redeploy, retry, roll back (services/release_moves.py).
        moves=await release_moves.for_release(services, caller, slug, found.version),
    )


def start_time(text: str) -> datetime | None:
    """The deploy form's "start at": ISO 8601; without an offset it is UTC (the form says so:
    the server cannot know the browser's zone without scripts)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            Problem(("start_at",), f'"{text}" is not a time: use 2026-12-03T09:30+01:00')
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/projects/{slug}/releases/{version}/deploy")
async def deploy_form(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    query = request.query_params
    return await _deploy_page(
        request,
        services,
        caller,
        slug,
        version,
        environment=query.get("to", ""),
        skip=query.getlist("skip"),
        guided=query.get("guided_failure", "default"),
        start_at=query.get("start_at", ""),
    )


async def _deploy_page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    version: str,
    *,
    environment: str,
    skip: list[str],
    guided: str,
    start_at: str,
    status: int = 200,
    error: str = "",
) -> Response:
    header = await project_header(services, caller, slug)
    plan = await deployments.plan(services, caller, slug, version, environment, skip=skip)
    return render(
        request,
        "deploy.html",
        status=status,
        title=deploy_title(header["name"], plan["release"], plan["environment"]),
        project=header,
        plan=plan,
        skip=set(skip),
        guided=guided,
        start_at=start_at,
        error=error,
    )


@router.post("/projects/{slug}/releases/{version}/deploy")
async def deploy(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    environment = form_text(form, "environment")
    skip = form_list(form, "skip")
    guided = form_text(form, "guided_failure", "default")
    start_at = form_text(form, "start_at").strip()
    if form_text(form, "action") == "preview":
        return redirect(
            f"/projects/{slug}/releases/{version}/deploy",
            to=environment,
            skip=skip,
            guided_failure=guided,
            start_at=start_at,
        )
    try:
        queued = await deployments.deploy(
            services,
            caller,
            slug,
            version,
            environment,
            skip=skip,
            guided_failure=GUIDED.get(guided),
            start_at=start_time(start_at),
            freeze_override=form_text(form, "freeze_override").strip() or None,
        )
    except (ValidationFailed, Conflict, PolicyViolation) as exc:
        # The form again, with the plan and the person's choices, and what was wrong: at the
        # form's own address (the POST goes to the same path as the page).
        return await _deploy_page(
            request,
            services,
            caller,
            slug,
            version,
            environment=environment,
            skip=skip,
            guided=guided,
            start_at=start_at,
            status=STATUS.get(exc.code, 422),
            error=sentence(exc.message),
        )
    return redirect(f"/tasks/{short_id(queued.as_dict()['task'])}")
