"""The dashboard: projects by group against environments, each cell the current release.

The page fetches its board again every few seconds (``conveyor.js``); the board carries an ETag,
so an unchanged board costs a 304 and no rendering in the browser.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.services import tasks
from conveyor.services.core import Caller, Services
from conveyor.web.pages import TEMPLATES, FragmentCaller, PageCaller, PageRoute, ServicesDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def board(services: Services, caller: Caller) -> dict[str, Any]:
    data = await tasks.dashboard(services, caller)
    cells = {(c["project"], c["environment"]): c for c in data["cells"]}
    rows = [
        {
            "group": group,
            "projects": [
                {
                    "name": name,
                    "cells": [cells.get((name, env)) for env in data["environments"]],
                }
                for name in names
            ],
        }
        for group, names in data["groups"].items()
    ]
    return {"environments": data["environments"], "groups": rows}


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
