"""A project's deployment process: read by whoever may view it, edited by those with ProcessEdit.

Every form sends the process version it was read at; the services refuse an edit made to a
version that has changed since, and the page says so and shows the process as it is now.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from conveyor.domain.errors import Conflict, NotFound, Problem, ValidationFailed
from conveyor.services import documents
from conveyor.services.core import Caller, Services
from conveyor.web import stepform
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    redirect,
    render,
    sentence,
)
from conveyor.web.routes.projects import project_header

router = APIRouter(route_class=PageRoute, include_in_schema=False)
DONE = {
    "saved": "The step was saved.",
    "removed": "The step was removed.",
    "moved": "The step was moved.",
    "added": "The step was added.",
    "reverted": "The process was reverted: its earlier steps are a new version.",
}


async def _page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    *,
    status: int = 200,
    error: str = "",
    editing: int | None = None,
) -> Response:
    header = await project_header(services, caller, slug)
    process = await documents.get_process(services, caller, slug)  # checks ProcessView
    steps = [
        {
            "index": i,
            "data": step,
            "fields": [(f, stepform.shown(step, f)) for f in stepform.fields_of(step["type"])],
            "locked": {f.name: stepform.locked(step, f) for f in stepform.fields_of(step["type"])},
            "facts": stepform.facts(step),
        }
        for i, step in enumerate(process["steps"])
    ]
    return render(
        request,
        "process.html",
        status=status,
        title=f"{header['name']}: process",
        project=header,
        tab="process",
        version=process["version"],
        steps=steps,
        error=error,
        editing=editing,
        done_message=DONE.get(request.query_params.get("done", ""), ""),
        step_types=stepform.STEP_TYPES,
    )


@router.get("/projects/{slug}/process")
async def process(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _page(request, services, caller, slug)


def _version(form: FormData) -> int | str:
    text = form_text(form, "version")
    return int(text) if text.isdigit() else text


async def _change(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    index: int,
    change: Any,
) -> Response:
    """Apply ``change(steps, form)`` to the process as read at the form's version."""
    # Authorise before reading the form: who may not edit is told so, not what is missing.
    await documents.authorise_edit(services, caller, "projects", slug, "process")
    form = await request.form()
    current = await documents.get_process(services, caller, slug)
    steps: list[dict[str, Any]] = list(current["steps"])
    try:
        if not 0 <= index < len(steps):
            raise NotFound(f"the process has no step {index + 1}: it changed since you read it")
        done = change(steps, index, form)
        await documents.update_process(
            services, caller, slug, {"version": _version(form), "steps": steps}
        )
    except (Conflict, ValidationFailed, NotFound) as exc:
        status = 422 if isinstance(exc, ValidationFailed) else 409
        editing = index if isinstance(exc, ValidationFailed) else None
        step_type = str(steps[index].get("type", "")) if 0 <= index < len(steps) else ""
        return await _page(
            request,
            services,
            caller,
            slug,
            status=status,
            error=sentence(stepform.refusal(exc, index, step_type)),
            editing=editing,
        )
    return redirect(f"/projects/{slug}/process", done=done)


def _edit(steps: list[dict[str, Any]], index: int, form: FormData) -> str:
    steps[index] = stepform.edited(steps[index], form)
    return "saved"


def _remove(steps: list[dict[str, Any]], index: int, form: FormData) -> str:
    del steps[index]
    return "removed"


def _move(steps: list[dict[str, Any]], index: int, form: FormData) -> str:
    other = index - 1 if form_text(form, "direction") == "up" else index + 1
    if 0 <= other < len(steps):
        steps[index], steps[other] = steps[other], steps[index]
    return "moved"


CHANGES = {"save": _edit, "remove": _remove, "move": _move}


@router.post("/projects/{slug}/process")
async def change_step(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """The step forms post to the process page's own address (``step`` and ``op`` say which
    change), so that a refused edit is shown again at /projects/…/process."""
    form = await request.form()
    step, op = form_text(form, "step"), form_text(form, "op", "save")
    index = int(step) if step.isdigit() and len(step) < 6 else -1
    return await _change(request, services, caller, slug, index, CHANGES.get(op, _edit))


@router.post("/projects/{slug}/process/steps/{index}")
async def edit_step(
    slug: str, index: int, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _change(request, services, caller, slug, index, _edit)


@router.post("/projects/{slug}/process/steps/{index}/remove")
async def remove_step(
    slug: str, index: int, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _change(request, services, caller, slug, index, _remove)


@router.post("/projects/{slug}/process/steps/{index}/move")
async def move_step(
    slug: str, index: int, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    return await _change(request, services, caller, slug, index, _move)


# ---------------------------------------------------------------- adding a step
#
# Two plain forms, no script: the process page asks for the type and the position (a GET), and
# the step form of that type posts to its own address, where a refusal shows it again as typed.


def _position(text: str, count: int) -> int:
    """Where the new step goes (0 = first); anything else: at the end."""
    return int(text) if text.isdigit() and int(text) <= count else count


async def _new_page(
    request: Request,
    services: Services,
    caller: Caller,
    slug: str,
    step: dict[str, Any],
    at: str,
    *,
    status: int = 200,
    error: str = "",
    version: int | None = None,
) -> Response:
    header = await project_header(services, caller, slug)
    process = await documents.get_process(services, caller, slug)
    fields = stepform.fields_of(step["type"])
    steps = process["steps"]
    return render(
        request,
        "process_step_new.html",
        status=status,
        title=f"{header['name']}: add a step",
        project=header,
        tab="process",
        version=process["version"] if version is None else version,
        step_type=step["type"],
        type_label=stepform.STEP_TYPES[step["type"]],
        fields=[(f, stepform.shown(step, f)) for f in fields],
        locked={f.name: stepform.locked(step, f) for f in fields},
        at=_position(at, len(steps)),
        positions=stepform.positions(steps),
        error=error,
    )


def _new_type(text: str) -> str:
    if text not in stepform.STEP_TYPES:
        raise ValidationFailed(
            Problem(("type",), "choose the type of the new step: " + ", ".join(stepform.STEP_TYPES))
        )
    return text


@router.get("/projects/{slug}/process/new")
async def new_step(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    await documents.authorise_edit(services, caller, "projects", slug, "process")
    step_type = _new_type(request.query_params.get("type", ""))
    step = stepform.blank(step_type)
    return await _new_page(
        request, services, caller, slug, step, request.query_params.get("at", "")
    )


@router.post("/projects/{slug}/process/new")
async def add_step(
    slug: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    # Authorise before reading the form: who may not edit is told so, not what is missing.
    await documents.authorise_edit(services, caller, "projects", slug, "process")
    form = await request.form()
    step = stepform.edited(stepform.blank(_new_type(form_text(form, "type"))), form)
    at = form_text(form, "at")
    current = await documents.get_process(services, caller, slug)
    steps: list[dict[str, Any]] = list(current["steps"])
    position = _position(at, len(steps))
    steps.insert(position, step)
    try:
        await documents.update_process(
            services, caller, slug, {"version": _version(form), "steps": steps}
        )
    except (Conflict, ValidationFailed) as exc:
        status = 422 if isinstance(exc, ValidationFailed) else 409
        return await _new_page(
            request,
            services,
            caller,
            slug,
            step,
            at,
            status=status,
            error=sentence(stepform.refusal(exc, position, step["type"])),
            version=None if isinstance(exc, Conflict) else _int(form_text(form, "version")),
        )
    return redirect(f"/projects/{slug}/process", done="added")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 10 else None
