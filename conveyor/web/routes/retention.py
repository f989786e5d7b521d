"""Retention (docs/retention.md): the policies in force, the last run, and what the policies
would delete now; administrators may apply them at once."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.engine.node import node_name
from conveyor.services import retention, retention_apply
from conveyor.web.pages import TEMPLATES, PageCaller, PageRoute, ServicesDep, may, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# The navigation shows the page to those who may read it (base.html asks this).
TEMPLATES.globals["may_read_retention"] = retention.may_read

# Rows shown per kind; the API and `conveyor retention plan --output json` list them all.
SHOWN = 200


@router.get("/retention")
async def retention_page(
    request: Request, services: ServicesDep, caller: PageCaller, done: str = ""
) -> Response:
    shown = await retention.show_plan(services, caller)  # refuses those who may not read it
    found = shown.as_dict()
    return render(
        request,
        "retention.html",
        title="Retention",
        plan=found,
        shown=SHOWN,
        may_apply=may(caller, retention.P.AdministerSystem),
        applied=done == "applied",
    )


@router.post("/retention/apply")
async def retention_apply_now(
    request: Request, services: ServicesDep, caller: PageCaller
) -> Response:
    node = getattr(request.app.state, "node", None)
    await retention_apply.apply_now(services, caller, node.name if node else node_name())
    return redirect("/retention", done="applied")
