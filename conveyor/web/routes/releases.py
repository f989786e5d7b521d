"""A release, and deploying it: the plan is shown before anyone confirms."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.services import approvals, deployments, pins, progress, releases
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_list,
    form_text,
    redirect,
    render,
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
    header = await project_header(services, caller, slug)
    environment = request.query_params.get("to", "")
    skip = request.query_params.getlist("skip")
    plan = await deployments.plan(services, caller, slug, version, environment, skip=skip)
    return render(
        request,
        "deploy.html",
        title=f"Deploy {header['name']} {plan['release']} to {plan['environment']}",
        project=header,
        plan=plan,
        skip=set(skip),
        guided=request.query_params.get("guided_failure", "default"),
        start_at=request.query_params.get("start_at", ""),
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
    return redirect(f"/tasks/{short_id(queued.as_dict()['task'])}")
