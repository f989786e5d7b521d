"""The release page's controls: block and unblock the release, pin and unpin it per
environment. Each form posts here, calls the service (which checks the permission), and
returns to the release page with what happened."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.services import pins, release_blocks
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, form_text, redirect

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _back(slug: str, version: str, done: str, environment: str = "") -> Response:
    # What happened, as a word the page turns into its sentence (never text from the link).
    url = f"/projects/{slug}/releases/{quote(version, safe='')}"
    return redirect(url, done=done, environment=environment)


@router.post("/projects/{slug}/releases/{version}/block")
async def block(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    if form_text(form, "action") == "unblock":
        await release_blocks.unblock(services, caller, slug, version)
        return _back(slug, version, "unblocked")
    await release_blocks.block(services, caller, slug, version, form_text(form, "reason"))
    return _back(slug, version, "blocked")


@router.post("/projects/{slug}/releases/{version}/pin")
async def pin(
    slug: str, version: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    environment = form_text(form, "environment")
    if form_text(form, "action") == "unpin":
        was = await pins.unpin(services, caller, slug, environment)
        return _back(slug, version, "unpinned", was["environment"])
    done = await pins.pin(services, caller, slug, version, environment, form_text(form, "reason"))
    return _back(slug, version, "pinned", done["environment"])
