"""A release, and deploying it: the plan is shown before anyone confirms."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.services import deployments, progress, releases
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
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
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
    )


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
    )


@router.post("/projects/{slug}/releases/{version}/deploy")
async def deploy(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    environment = form_text(form, "environment")
    skip = form_list(form, "skip")
    guided = form_text(form, "guided_failure", "default")
    if form_text(form, "action") == "preview":
        return redirect(
            f"/projects/{slug}/releases/{version}/deploy",
            to=environment,
            skip=skip,
            guided_failure=guided,
        )
    queued = await deployments.deploy(
        services,
        caller,
        slug,
        version,
        environment,
        skip=skip,
        guided_failure=GUIDED.get(guided),
    )
    return redirect(f"/tasks/{short_id(queued.as_dict()['task'])}")
