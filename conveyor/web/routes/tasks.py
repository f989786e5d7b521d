"""Tasks: recent deployments, and one task with its steps, log, children and interruptions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.errors import ConveyorError
from conveyor.domain.ids import parse_number
from conveyor.services import (
    deployment_views,
    documents,
    interruptions,
    progress,
    release_moves,
    tasks,
)
from conveyor.services.core import Caller, Services
from conveyor.services.deployments import TERMINAL
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    may,
    redirect,
    render,
    short_id,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission
PER_PAGE = 40
# Lines rendered with the page; the live log streams the rest.
FIRST_LINES = 2000


def signature(task: dict[str, Any], asked: list[dict[str, Any]]) -> str:
    """What, when it changes, the task page must be rendered again for (step states and log
    lines are updated in place)."""
    facts = [
        task["state"],
        [(c["id"], c["state"]) for c in task["children"]],
        [(i["id"], i["state"], i["taken_by"], len(i["answers"])) for i in asked],
    ]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


async def may_cancel(services: Services, caller: Caller, task: dict[str, Any]) -> bool:
    if task["state"] in TERMINAL or not task["project"]:
        return False
    try:
        doc = await documents.get_document(services, caller, "projects", task["project"])
    except ConveyorError:
        return False
    ref = perms.ProjectRef(doc.name, str(doc.data.get("group", "")))
    return may(caller, P.TaskCancel, project=ref, environment=task["environment"])


LIST_FILTERS = ("project", "environment", "state", "who")


@router.get("/tasks")
async def task_list(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    """The deployments, newest first, filtered by the GET query (project, environment, state,
    who queued them); paged by keyset, the filters carried along."""
    before_text = request.query_params.get("before", "")
    before = parse_number(before_text)  # None for junk, and for a number no row can have
    chosen = {name: request.query_params.get(name, "").strip() for name in LIST_FILTERS}
    rows = await deployment_views.list_deployments(
        services,
        caller,
        project=chosen["project"] or None,
        environment=chosen["environment"] or None,
        state=chosen["state"] or None,
        created_by=chosen["who"] or None,
        limit=PER_PAGE + 1,
        before=before,
    )
    shown = rows[:PER_PAGE]
    older = short_id(shown[-1]["id"]) if len(rows) > PER_PAGE and shown else None
    query = {k: v for k, v in chosen.items() if v}
    return render(
        request,
        "tasks.html",
        title="Deployments",
        rows=shown,
        older=older,
        first=before is None,
        chosen=chosen,
        query=query,
        projects=[d.name for d in await documents.list_documents(services, caller, "projects")],
        environments=[
            d.name for d in await documents.list_documents(services, caller, "environments")
        ],
        states=deployment_views.STATES,
    )


@router.get("/tasks/{task}")
async def task_page(
    task: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await render_task(request, services, caller, task)


async def render_task(
    request: Request,
    services: Services,
    caller: Caller,
    task: str,
    *,
    status: int = 200,
    refused: dict[str, Any] | None = None,
) -> Response:
    """The task page; ``refused``: an answer to one of its interruptions that was refused (the
    form is shown again with the problems next to it: web/routes/interruptions.py)."""
    found = await tasks.get_task(services, caller, task)
    log = await tasks.task_log(services, caller, task, limit=FIRST_LINES)
    asked = await interruptions.list_interruptions(services, caller, task=found["id"])
    lines: dict[int | None, list[dict[str, Any]]] = {}
    for line in log["lines"]:
        lines.setdefault(line["step"], []).append(line)
    version = None
    if found["deployment"]:
        version = await progress.release_of_deployment(services, caller, found["deployment"])
    children = {c["id"]: c for c in found["children"]}
    return render(
        request,
        "task.html",
        status=status,
        refused=refused,
        title=found["description"],
        task=found,
        version=version,
        lines=lines,
        next_offset=log["next"],
        more_lines=len(log["lines"]) >= FIRST_LINES,
        asked=asked,
        pending=[i for i in asked if i["state"] == "pending"],
        answered=[i for i in asked if i["state"] != "pending"],
        children=children,
        can_cancel=await may_cancel(services, caller, found),
        # _moves.html: retry, promote, redeploy, roll back (services/release_moves.py).
        moves=(
            await release_moves.for_deployment(services, caller, found["deployment"])
            if found["deployment"] and found["state"] in TERMINAL
            else []
        ),
        signature=signature(found, asked),
        finished=found["state"] in TERMINAL,
        cancel_unconfirmed=request.query_params.get("cancel") == "unconfirmed",
    )


@router.post("/tasks/{task}/cancel")
async def cancel(
    task: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """Cancelling needs "I am sure" ticked (the browser asks for it; a script confirms on top):
    without it, back to the task page, which says so, and nothing is canceled."""
    form = await request.form()
    if form_text(form, "sure") != "yes":
        return redirect(f"/tasks/{short_id(task)}", cancel="unconfirmed")
    await tasks.cancel_task(services, caller, task)
    return redirect(f"/tasks/{short_id(task)}")
