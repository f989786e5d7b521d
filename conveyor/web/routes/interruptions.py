"""Waiting for me, and answering: take responsibility, proceed or abort with notes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.services import interruptions
from conveyor.web.pages import (
    PageCaller,
    PageRoute,
    ServicesDep,
    form_text,
    page_number,
    redirect,
    render,
    short_id,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PER_PAGE = 25


@router.get("/interruptions")
async def waiting(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    pending = await interruptions.list_interruptions(services, caller, pending_only=True)
    mine = [i for i in pending if i.get("can_answer")]
    others = [i for i in pending if not i.get("can_answer")]
    page = page_number(request.query_params.get("page"))
    start = (page - 1) * PER_PAGE
    return render(
        request,
        "interruptions.html",
        title="Waiting for me",
        mine=mine[start : start + PER_PAGE],
        others=others[:PER_PAGE],
        more_others=len(others) > PER_PAGE,
        page=page,
        more=len(mine) > start + PER_PAGE,
    )


@router.post("/interruptions/{ident}/take")
async def take(ident: str, services: ServicesDep, caller: PageCaller) -> Response:
    taken = await interruptions.take(services, caller, ident)
    return redirect(f"/tasks/{short_id(taken['task'])}#interruption-{short_id(taken['id'])}")


@router.post("/interruptions/{ident}/submit")
async def submit(
    ident: str, request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    form = await request.form()
    answered = await interruptions.submit(
        services, caller, ident, form_text(form, "result"), form_text(form, "notes").strip()
    )
    return redirect(f"/tasks/{short_id(answered['task'])}")
