"""The task log, live, as server-sent events.

Events: ``line`` (one log line; its id is the line's offset, so a browser that reconnects with
``Last-Event-ID`` resumes where it was), ``status`` (the task's and its steps' states, and the
page's signature: when that changes the page renders itself again), and ``end`` once the task
has ended and every line was sent. A stream lasts at most ``MAX_STREAM`` seconds and the
browser reconnects: a server stopping for an upgrade then waits for no one for long.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from conveyor.domain.errors import ConveyorError
from conveyor.domain.ids import MAX_ROW_ID, parse_number
from conveyor.services import interruptions, tasks
from conveyor.services.core import Caller, Services
from conveyor.web.pages import FragmentCaller, PageRoute, ServicesDep, step_look
from conveyor.web.routes.tasks import signature

router = APIRouter(route_class=PageRoute, include_in_schema=False)
POLL = 0.5
STATUS_EVERY = 1.0
MAX_STREAM = 30.0
BATCH = 500


def _event(kind: str, data: Any, ident: int | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _status(services: Services, caller: Caller, task: str) -> dict[str, Any]:
    found = await tasks.get_task(services, caller, task)
    asked = await interruptions.list_interruptions(services, caller, task=found["id"])
    return {
        "state": found["state"],
        "steps": {
            str(s["index"]): {"state": look[0], "label": look[1]}
            for s in found["steps"]
            for look in [step_look(s)]
        },
        "signature": signature(found, asked),
    }


async def _stream(
    request: Request, services: Services, caller: Caller, task: str, offset: int
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    deadline = time.monotonic() + MAX_STREAM
    last_status: dict[str, Any] | None = None
    status_at = 0.0
    while True:
        try:
            log = await tasks.task_log(services, caller, task, after=offset, limit=BATCH)
            for line in log["lines"]:
                yield _event("line", line, line["offset"])
            offset = log["next"]
            if time.monotonic() >= status_at or log["finished"]:
                status = await _status(services, caller, task)
                status_at = time.monotonic() + STATUS_EVERY
                if status != last_status:
                    yield _event("status", status)
                    last_status = status
        except ConveyorError as exc:
            yield _event("problem", {"message": exc.message})
            return
        if log["finished"] and not log["lines"]:
            yield _event("end", {"state": log["state"]})
            return
        if time.monotonic() > deadline or await request.is_disconnected():
            return
        if len(log["lines"]) < BATCH:
            await asyncio.sleep(POLL)


@router.get("/tasks/{task}/events")
async def task_events(
    task: str, request: Request, services: ServicesDep, caller: FragmentCaller, after: int = 0
) -> Response:
    resumed = request.headers.get("last-event-id", "")
    offset = parse_number(resumed) or min(max(after, 0), MAX_ROW_ID)
    # Checked now, so that a refusal is an answer and not a broken stream.
    await tasks.get_task(services, caller, task)
    return StreamingResponse(
        _stream(request, services, caller, task, offset),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
