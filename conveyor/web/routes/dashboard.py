"""The dashboard: projects by group against environments, each cell the current release.

The page fetches its board again every few seconds (``conveyor.js``); the board carries an ETag,
so an unchanged board costs a 304 and no rendering in the browser. A board has a cell per project
and environment (3,000 at 500 projects): links, labels and times are made here once per cell,
so the template only fills them in (macros and filters per cell cost more than the query).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from conveyor.domain.documents import slugify
from conveyor.domain.holds import Pin
from conveyor.domain.release_moves import Move
from conveyor.services import channels, deployment_views, pins, release_moves
from conveyor.services.core import Caller, Services
from conveyor.services.deployment_views import BoardCell
from conveyor.web.pages import (
    TEMPLATES,
    FragmentCaller,
    PageCaller,
    PageRoute,
    ServicesDep,
    ago,
    render,
    state_label,
    when,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


async def board(services: Services, caller: Caller) -> dict[str, Any]:
    found = await deployment_views.board(services, caller)
    pinned = await pins.pinned_cells(services)
    moves = await release_moves.for_board(services, caller, found)
    # Projects with several channels get a release line per channel under their row.
    by_project: dict[str, list[channels.ChannelLine]] = {}
    all_lines = await channels.lines(services, found)
    for line in all_lines:
        by_project.setdefault(line.project, []).append(line)
    # A channel line's moves follow that channel's lifecycle.
    line_moves = await release_moves.for_lines(services, caller, all_lines) if all_lines else {}
    now = datetime.now(UTC)
    rows = []
    for group, names in found.groups.items():
        projects = []
        for name in names:
            slug = slugify(name)
            cells = "".join(
                _cell_html(
                    slug,
                    found.cells.get((name, env)),
                    now,
                    pinned.get((name, env)),
                    moves.get((name, env), ()),
                )
                for env in found.environments
            )
            lines = [
                {
                    "channel": line.channel,
                    "cells": "".join(
                        _cell_html(
                            slug,
                            line.cells.get(env),
                            now,
                            moves=line_moves.get((name, line.channel, env), ()),
                        )
                        for env in found.environments
                    ),
                }
                for line in by_project.get(name, [])
            ]
            projects.append({"name": name, "slug": slug, "cells": cells, "channels": lines})
        rows.append({"group": group, "projects": projects})
    return {"environments": found.environments, "groups": rows}


EMPTY = '<td class="cell cell-empty"><span class="sr-only">Not deployed</span></td>'


@cache
def _badge(state: str) -> tuple[str, str]:
    """A state's escaped class name and label: a handful of states, thousands of cells."""
    return escape(state or "none"), escape(state_label(state))


def _cell_html(
    project_slug: str,
    cell: BoardCell | None,
    now: datetime,
    pin: Pin | None = None,
    moves: Sequence[Move] = (),
) -> str:
    """One cell, escaped field by field and made in one string: per-cell template work (macros,
    attribute lookups, escaping one Markup at a time) was the page's largest cost at 3,000
    cells. The template prints the row's cells as they are."""
    if cell is None:
        return EMPTY
    state, label = _badge(cell.state)
    release = escape(cell.release)
    href = escape(f"/projects/{project_slug}/releases/{quote(cell.release, safe='')}")
    task = f"/tasks/{cell.task_id}" if cell.task_id else "/tasks/"
    when_html = ""
    if (moment := cell.completed_at) is not None:
        when_html = (
            f'<time datetime="{moment.isoformat()}" title="{when(moment)}">'
            f"{ago(moment, now)}</time>"
        )
    pin_mark = ""
    if pin is not None:
        said = escape(f"Pinned by {pin.by}: {pin.reason}")
        pin_mark = f' <span class="tag pin" title="{said}">pinned</span>'
    return (
        f'<td class="cell cell-{state}">'
        f'<span class="version"><a href="{href}">{release}</a>{pin_mark}</span> '
        f'<a class="state" href="{task}"><span class="badge badge-{state}">{label}</span></a> '
        f'<span class="when">{when_html}</span>{_moves_html(project_slug, moves)}</td>'
    )


def _q(text: str) -> str:
    return escape(quote(text, safe=""))


def _moves_html(project_slug: str, moves: Sequence[Move]) -> str:
    """A cell's moves (promote, retry): links to the plan page, as _moves.html makes them."""
    links = "".join(
        f' <a class="move" data-move="{move.kind}" href="/projects/{project_slug}/releases/'
        f'{_q(move.version)}/deploy?to={_q(move.environment)}">{escape(move.label)}</a>'
        for move in moves
    )
    return f'<span class="moves block">{links}</span>' if links else ""


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
