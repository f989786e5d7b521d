"""Waiting for me, and answering: take responsibility, proceed or abort with notes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain.errors import ValidationFailed
from conveyor.services import approvals, interruptions
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    page_number,
    redirect,
    render,
    sentence,
    short_id,
)
from conveyor.web.routes.tasks import render_task

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PER_PAGE = 25


@router.get("/interruptions")
async def waiting(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    pending = await interruptions.list_interruptions(services, caller, pending_only=True)
    # Deployments held by their environment's checks until someone like the caller approves.
    wanted = await approvals.wanted(services, caller)
    mine = [i for i in pending if i.get("can_answer")]
    others = [i for i in pending if not i.get("can_answer")]
    page = page_number(request.query_params.get("page"))
    start = (page - 1) * PER_PAGE
    return render(
        request,
        "interruptions.html",
        title="Waiting for me",
        mine=mine[start : start + PER_PAGE],
        wanted=wanted,
        others=others[:PER_PAGE],
        more_others=len(others) > PER_PAGE,
        page=page,
        more=len(mine) > start + PER_PAGE,
    )


@router.post("/interruptions/{ident}/take")
async def take(ident: str, services: ServicesDep, caller: PageCaller) -> Response:
    taken = await interruptions.take(services, caller, ident)
    return redirect(f"/tasks/{short_id(taken['task'])}#interruption-{short_id(taken['id'])}")


# Each question's input is named "field.<Name>" (the same names as --field NAME=VALUE).
FIELD = "field."


@router.post("/tasks/{task}")
async def submit_on_task_page(
    task: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    """The answer form posts to the task page's own address, so that an answer refused is
    shown again at /tasks/N (not at a form's address a reload would post to again)."""
    form = await request.form()
    ident = form_text(form, "interruption")
    if not ident:
        return redirect(f"/tasks/{short_id(task)}")
    return await submit(ident, request, services, caller)


@router.post("/interruptions/{ident}/submit")
async def submit(
    ident: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    given = {
        name.removeprefix(FIELD): value.strip()
        for name, value in form.multi_items()
        if name.startswith(FIELD) and isinstance(value, str)
    }
    notes = form_text(form, "notes").strip()
    if form_text(form, "result") == "abort" and form_text(form, "sure") != "yes":
        # Aborting ends the deployment: it needs "I am sure" ticked (a script may tick it after
        # asking). Who may answer is told to tick it; anyone else hears the services' refusal.
        found = await interruptions.get_interruption(services, caller, ident)
        if found.get("can_answer"):
            unsure = {"message": "tick “I am sure” to abort: aborting ends the deployment."}
            return await render_task(
                request,
                services,
                caller,
                found["task"],
                status=422,
                refused={"id": found["id"], "fields": {}, "other": [], "given": given}
                | unsure
                | {"notes": notes},
            )
    try:
        answered = await interruptions.submit(
            services, caller, ident, form_text(form, "result"), notes, given
        )
    except ValidationFailed as exc:
        # The task page again, the answer as typed and each problem next to its question.
        found = await interruptions.get_interruption(services, caller, ident)
        return await render_task(
            request,
            services,
            caller,
            found["task"],
            status=422,
            refused=refused_answer(found["id"], exc, given, notes),
        )
    return redirect(f"/tasks/{short_id(answered['task'])}")


def refused_answer(
    ident: str, exc: ValidationFailed, given: dict[str, str], notes: str
) -> dict[str, Any]:
    """What the form shows after a refused answer: per question its problem, the rest above."""
    by_field: dict[str, str] = {}
    other: list[str] = []
    for problem in exc.problems:
        if len(problem.path) == 2 and problem.path[0] == "fields":
            by_field[str(problem.path[1])] = problem.message
        else:
            other.append(str(problem))
    return {
        "id": ident,
        # Problems of questions are shown next to them; the rest (the result, …) above.
        "message": sentence(exc.message) if other else "check the answers marked below.",
        "fields": by_field,
        "other": other,
        "given": given,
        "notes": notes,
    }
