"""The dashboard: projects by group against environments, each cell the current release.

The page fetches its board again every few seconds (``conveyor.js``); the board carries an ETag,
so an unchanged board costs a 304 and no rendering in the browser. A board has a cell per project
and environment (3,000 at 500 projects): links, labels and times are made here once per cell,
so the template only fills them in (macros and filters per cell cost more than the query).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.domain.documents import slugify
from conveyor.services import deployment_views
from conveyor.services.core import Caller, Services
from conveyor.web.pages import (
    TEMPLATES,
    FragmentCaller,
    PageCaller,
    PageRoute,
    ServicesDep,
    ago,
    render,
    short_id,
    state_label,
    when,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def board(services: Services, caller: Caller) -> dict[str, Any]:
    data = await deployment_views.dashboard(services, caller)
    cells = {(c["project"], c["environment"]): c for c in data["cells"]}
    slugs = {name: slugify(name) for names in data["groups"].values() for name in names}
    rows = [
        {
            "group": group,
            "projects": [
                {
                    "name": name,
                    "slug": slugs[name],
                    "cells": [
                        _shown(slugs[name], cells.get((name, env))) for env in data["environments"]
                    ],
                }
                for name in names
            ],
        }
        for group, names in data["groups"].items()
    ]
    return {"environments": data["environments"], "groups": rows}


@dataclass(frozen=True, slots=True)
class Cell:
    """A cell as the template shows it, every field already HTML-escaped: the template prints
    cells with autoescape off, since escaping 3,000 cells' fields one Markup at a time was the
    largest cost of the page. Attributes, not keys: Jinja tries an attribute first."""

    state: str
    label: str
    release: str
    release_href: str
    task_href: str
    completed: str | None
    completed_when: str
    completed_ago: str


def _shown(project_slug: str, cell: dict[str, Any] | None) -> Cell | None:
    if cell is None:
        return None
    completed = cell["completed"]
    moment = datetime.fromisoformat(completed) if completed else None  # parsed once, shown twice
    return Cell(
        state=escape(cell["state"] or "none"),
        label=escape(state_label(cell["state"])),
        release=escape(str(cell["release"])),
        release_href=escape(
            f"/projects/{project_slug}/releases/{quote(str(cell['release']), safe='')}"
        ),
        task_href=escape(f"/tasks/{short_id(cell['task'])}"),
        completed=escape(completed) if completed else None,
        completed_when=escape(when(moment)),
        completed_ago=escape(ago(moment)),
    )


@router.get("/")
async def dashboard(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    return render(request, "dashboard.html", title="Dashboard", board=await board(services, caller))


@router.get("/dashboard/board")
async def dashboard_board(
    request: Request, services: ServicesDep, caller: FragmentCaller
) -> Response:
    html = TEMPLATES.get_template("_board.html").render(board=await board(services, caller))
    etag = '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return HTMLResponse(html, headers=headers)
