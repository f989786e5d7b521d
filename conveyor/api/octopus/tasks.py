"""Server tasks: by ids (what ServerTaskWaiter polls), one, its details and raw log, cancel."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from conveyor.api.deps import ServicesDep
from conveyor.api.octopus import shapes
from conveyor.api.octopus.routing import OctopusCaller, OctopusRoute, Space
from conveyor.domain import octopus
from conveyor.domain.errors import Conflict
from conveyor.services import octopus_reads, tasks
from conveyor.services.core import Caller, Services

router = APIRouter(route_class=OctopusRoute, tags=["Octopus API"])

LOG_LINES = 5000
# Conveyor's log levels -> Octopus's log categories.
CATEGORIES = {"error": "Error", "warning": "Warning", "warn": "Warning", "debug": "Verbose"}
STEP_STATUS = {
    "pending": "Pending",
    "running": "Running",
    "waiting": "Running",
    "success": "Success",
    "failed": "Failed",
    "skipped": "Skipped",
    "canceled": "Canceled",
    "timed_out": "Failed",
}


async def _list(
    services: Services,
    caller: Caller,
    ids: list[str],
    state: str | None,
    skip: int,
    take: int | None,
    path: str,
) -> dict[str, Any]:
    wanted = octopus.split_ids(ids)
    states = octopus.state_filter(state) if state else ()
    found = await octopus_reads.tasks(services, caller, wanted, states=states)
    items = [shapes.task(f) for f in found]
    if wanted:
        # Every task asked for, whatever skip says: ServerTaskWaiter sends the ids of its
        # second batch of 300 with skip=300.
        skip, take = 0, octopus.TAKE_ALL
    return octopus.collection("ServerTask", items, skip, take, path)


@router.get("/api/{space}/tasks", summary="Tasks by ids (unknown ids are left out), or the newest")
async def space_tasks(
    space: Space,
    services: ServicesDep,
    caller: OctopusCaller,
    ids: list[str] = Query(default=[]),
    state: str | None = Query(default=None),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    return await _list(services, caller, ids, state, skip, take, f"{shapes.PREFIX}/tasks")


@router.get("/api/tasks", summary="Tasks by ids, or the newest (any space)")
async def all_tasks(
    services: ServicesDep,
    caller: OctopusCaller,
    ids: list[str] = Query(default=[]),
    state: str | None = Query(default=None),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    return await _list(services, caller, ids, state, skip, take, "/api/tasks")


@router.get("/api/{space}/tasks/{ref}", summary="One task")
async def space_task(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return shapes.task(await octopus_reads.task(services, caller, ref))


@router.get("/api/tasks/{ref}", summary="One task (any space)")
async def task(ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return shapes.task(await octopus_reads.task(services, caller, ref))


async def _cancel(services: Services, caller: Caller, ref: str) -> dict[str, Any]:
    facts = await octopus_reads.task(services, caller, ref)
    # It ended meanwhile: nothing left to cancel, as when Octopus is asked the same.
    with contextlib.suppress(Conflict):
        await tasks.cancel_task(services, caller, facts.public_id)
    return shapes.task(await octopus_reads.task(services, caller, ref))


@router.post("/api/tasks/{ref}/cancel", summary="Cancel a task and its children (TaskCancel)")
async def cancel(ref: str, services: ServicesDep, caller: OctopusCaller) -> dict[str, Any]:
    return await _cancel(services, caller, ref)


@router.post("/api/{space}/tasks/{ref}/cancel", summary="Cancel a task (space-scoped)")
async def space_cancel(
    space: Space, ref: str, services: ServicesDep, caller: OctopusCaller
) -> dict[str, Any]:
    return await _cancel(services, caller, ref)


async def _log(services: Services, caller: Caller, ref: str) -> list[dict[str, Any]]:
    facts = await octopus_reads.task(services, caller, ref)
    log = await tasks.task_log(services, caller, facts.public_id, limit=LOG_LINES)
    lines: list[dict[str, Any]] = log["lines"]
    return lines


@router.get("/api/{space}/tasks/{ref}/details", summary="A task, its steps and their log")
async def details(
    space: Space, ref: str, services: ServicesDep, caller: OctopusCaller
) -> dict[str, Any]:
    facts = await octopus_reads.task(services, caller, ref)
    view = await tasks.get_task(services, caller, facts.public_id)
    lines = await _log(services, caller, ref)
    children = []
    for step in view["steps"]:
        elements = [
            {
                "Category": CATEGORIES.get(str(line["level"]).lower(), "Info"),
                "OccurredAt": line["at"],
                "MessageText": line["line"],
                "Detail": None,
            }
            for line in lines
            if line["step"] == step["index"]
        ]
        children.append(
            {
                "Id": f"{facts.public_id}-step-{step['index']}",
                "Name": step["name"],
                "Started": step["started"],
                "Ended": step["completed"],
                "Status": STEP_STATUS.get(step["state"], "Pending"),
                "ShowAtSummaryLevel": True,
                "ProgressPercentage": 100 if step["completed"] else 0,
                "ProgressMessage": step["reason"] or "",
                "LogElements": elements,
                "Children": [],
            }
        )
    done = sum(1 for s in view["steps"] if s["completed"])
    total = len(view["steps"]) or 1
    task_shape = shapes.task(facts)
    root = {
        "Id": facts.public_id,
        "Name": facts.description,
        "Started": task_shape["StartTime"],
        "Ended": task_shape["CompletedTime"],
        "Status": STEP_STATUS.get(facts.state, "Pending"),
        "ShowAtSummaryLevel": True,
        "ProgressPercentage": 100 if facts.completed_at else done * 100 // total,
        "ProgressMessage": "",
        "LogElements": [],
        "Children": children,
    }
    return {
        "Task": task_shape,
        "Progress": {
            "ProgressPercentage": root["ProgressPercentage"],
            "EstimatedTimeRemaining": "",
        },
        "PhysicalLogSize": sum(len(str(line["line"])) + 1 for line in lines),
        "ActivityLogs": [root],
    }


@router.get(
    "/api/{space}/tasks/{ref}/raw",
    summary="The task's log as plain text",
    response_class=PlainTextResponse,
)
async def raw(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> str:
    facts = await octopus_reads.task(services, caller, ref)
    steps = {
        s["index"]: s["name"]
        for s in (await tasks.get_task(services, caller, facts.public_id))["steps"]
    }
    lines = await _log(services, caller, ref)
    out = []
    for line in lines:
        category = CATEGORIES.get(str(line["level"]).lower(), "Info")
        where = f"{steps[line['step']]}: " if line["step"] in steps else ""
        out.append(f"{line['at']}  {category:<8} | {where}{line['line']}")
    return "\n".join(out) + ("\n" if out else "")
